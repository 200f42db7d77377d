"""The GAN training loop: alternating G and D steps, EMA, AMP, checkpoints, logging, DDP.

One step: the generator runs once on a batch (ground-truth layout, styles encoded from the real
image); the discriminators score real and fake; the generator's loss (GAN + feature matching +
pixel + perceptual + object + box/mask regression + style KL) and the discriminators' loss
(GAN + object auxiliary classification + optional R1) are stepped with their own optimisers.

With a text encoder (``model.text_encoder``) each step encodes the batch's captions and object
descriptions, dropping each with probability ``train.text_dropout`` (drawn from the trainer's
seeded generator, so a resumed run drops exactly what the uninterrupted one would); the
discriminators get a projection term for the text; the text style prior is fitted to the
encoder's codes (``loss.lambda_prior``); and ``loss.lambda_clip`` > 0 adds a CLIP loss,
``1 - cos`` between the fake image and its caption and between object crops and their
descriptions. ``train.init_from`` starts the weights from a model checkpoint (e.g. a text-free
run; the text layers keep their identity initialisation).
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import to_container
from ..data.augment import BatchAugment
from ..data.batch import Batch, collate
from ..data.build import build_dataset
from ..errors import ConfigError, Layout2ImgError
from ..io import atomic_write_text
from ..losses import (GANLoss, PerceptualLoss, aux_class_loss, box_loss, feature_matching_loss, kl_loss,
                      mask_loss, r1_penalty)
from ..models.discriminator import MultiscaleDiscriminator, ObjectDiscriminator
from ..models.layout import crop_boxes
from ..models.pipeline import SceneGraphToImage
from ..models.text import CROP_MARGIN
from ..vocab import Vocab
from . import checkpoint as ckpt
from .distributed import DistInfo, ResumableSampler, barrier, broadcast_flag, cleanup, init_distributed
from .ema import make_ema, update_ema
from .logging import RunLogger


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over dimensions, averaged over rows."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return kl.sum(dim=1).mean()


class TrainingDiverged(Layout2ImgError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available (use device=cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"device={name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


def _infinite_loader(loader: DataLoader, sampler: ResumableSampler, epoch: int, position: int):
    """Yields (epoch, index_in_epoch_after_this_batch, batch) forever, resuming at a position."""
    while True:
        sampler.set_position(epoch, position * loader.batch_size)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        for batch in loader:
            position += 1
            yield epoch, position, batch
        epoch, position = epoch + 1, 0


class Trainer:
    """Build everything a config describes and train it: ``Trainer(cfg).fit()``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.train_cfg = cfg.get("train", {})
        self.device = resolve_device(str(cfg.device))
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        seed = int(cfg.seed)
        torch.manual_seed(seed + self.dist.rank)
        random.seed(seed)

        # -- data ------------------------------------------------------------------------------
        data_cfg = to_container(cfg.data)
        if self.dist.is_main:
            self.train_set = build_dataset(data_cfg, "train", seed=seed)
        barrier(self.dist)  # rank 0 prepares (e.g. writes Shapes) before the others read
        if not self.dist.is_main:
            self.train_set = build_dataset(data_cfg, "train", seed=seed)
        self.val_set = build_dataset(data_cfg, "val", seed=seed) if data_cfg.get("val") is not None else None
        self.vocab: Vocab = self.train_set.vocab
        self.sampler = ResumableSampler(len(self.train_set), seed, self.dist.rank, self.dist.world_size)
        per_rank_batch = int(cfg.batch_size) // self.dist.world_size
        if per_rank_batch < 1:
            raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the number of processes")
        workers = int(data_cfg.get("num_workers", 0))
        self.loader = DataLoader(
            self.train_set, batch_size=per_rank_batch, sampler=self.sampler, collate_fn=collate,
            num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        self.augment = BatchAugment(self.vocab, hflip=float(data_cfg.get("hflip", 0.5))).to(self.device)

        # -- models ----------------------------------------------------------------------------
        model_cfg = to_container(cfg.model)
        model_cfg["vocab"] = self.vocab.to_dict()
        self.model = SceneGraphToImage(**model_cfg).to(self.device)
        self.text_dropout = float(self.train_cfg.get("text_dropout", 0.0) or 0.0)
        if not 0.0 <= self.text_dropout <= 1.0:
            raise ConfigError(f"train.text_dropout: expected a probability in [0, 1], got {self.text_dropout}")
        # the discriminators see text only when the model can encode the batches' texts
        text_dim = self.model.text_dim if self.model.text_encoder is not None else 0
        init_from = self.train_cfg.get("init_from")
        if init_from:
            self._init_weights_from(Path(str(init_from)))
        # channels_last: faster convolutions with oneDNN on CPUs and tensor cores on GPUs
        self.channels_last = bool(self.train_cfg.get("channels_last", True))
        if self.channels_last:
            self.model.generator.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.model, float(self.train_cfg.get("ema_decay", 0.999)))
        dcfg = to_container(cfg.get("discriminator", {})) or {}
        image_d_cfg = dict(dcfg.get("image", {}))
        self.d_image = MultiscaleDiscriminator(
            in_channels=self.model.discriminator_layout_channels + 3, text_dim=text_dim, **image_d_cfg).to(self.device)
        obj_cfg = dcfg.get("object")
        self.d_object = (ObjectDiscriminator(num_classes=self.vocab.num_objects, text_dim=text_dim,
                                             **obj_cfg).to(self.device)
                         if obj_cfg else None)
        if self.channels_last:
            self.d_image.to(memory_format=torch.channels_last)
        lcfg = to_container(cfg.get("loss", {})) or {}
        self.lcfg = lcfg
        self.gan = GANLoss(lcfg.get("gan_mode", "hinge"))
        backbone = lcfg.get("perceptual", "none")
        self.perceptual = (PerceptualLoss(backbone).to(self.device)
                           if backbone != "none" and float(lcfg.get("lambda_perceptual", 0)) > 0 else None)

        d_params = list(self.d_image.parameters()) + (list(self.d_object.parameters()) if self.d_object else [])
        betas = tuple(self.train_cfg.get("betas", (0.0, 0.99)))
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=float(self.train_cfg.get("lr_g", 2e-4)), betas=betas)
        self.opt_d = torch.optim.Adam(d_params, lr=float(self.train_cfg.get("lr_d", 2e-4)), betas=betas)
        self.g_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Only the coarse-to-fine generator leaves parameters unused in some steps (the
            # enhancer during the global stage, the global net's RGB head afterwards).
            # ... and text: FiLM and the text prior sit out steps in which no image has text.
            unused = self.model.generator.n_local_enhancers > 0 or self.model.text_encoder is not None
            self.g_model = DDP(self.model, device_ids=ids, find_unused_parameters=unused)
            self.d_image = DDP(self.d_image, device_ids=ids)
            if self.d_object:
                self.d_object = DDP(self.d_object, device_ids=ids)

        amp = str(self.train_cfg.get("amp", "auto"))
        use_bf16 = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
        self.noise = torch.Generator(device="cpu").manual_seed(seed * 7919 + self.dist.rank)
        self.step, self.epoch, self.position = 0, 0, 0
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, vocab=self.vocab)

    def _init_weights_from(self, folder: Path) -> None:
        """Copy a checkpoint's model weights into the new model; tensors the checkpoint lacks (the
        text layers of a model first trained without text) keep their initialisation."""
        from ..errors import CheckpointError
        from ..io import check_state, load_weights

        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"train.init_from={str(folder)!r}: no model.safetensors there (a checkpoint folder, "
                              "e.g. runs/shapes_64/checkpoints/latest)")
        state = load_weights(weights)
        try:
            check_state(weights, self.model.state_dict(), state, allow_missing=True, against="this config's model")
        except CheckpointError as e:
            raise ConfigError(f"train.init_from={str(folder)!r}: {e}") from None
        self.model.load_state_dict(state, strict=False)

    # -- schedule ------------------------------------------------------------------------------
    def stage(self) -> str:
        """'global' while the global generator trains alone at reduced resolution, else 'full'."""
        return "global" if self.step < int(self.train_cfg.get("global_steps", 0)) else "full"

    def _set_generator_trainable(self) -> None:
        g = self.model.generator
        if not hasattr(g, "local_parameters"):
            return
        start = int(self.train_cfg.get("global_steps", 0))
        frozen = self.stage() == "full" and self.step < start + int(self.train_cfg.get("fix_global_steps", 0))
        for p in g.global_parameters():
            p.requires_grad_(not frozen)

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        d_image = self.d_image.module if isinstance(self.d_image, DDP) else self.d_image
        d_object = self.d_object.module if isinstance(self.d_object, DDP) else self.d_object
        return {
            "step": self.step, "epoch": self.epoch, "position": self.position,
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "d_image": d_image.state_dict(), "d_object": d_object.state_dict() if d_object else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "rng": {"noise": self.noise.get_state(), "torch": torch.get_rng_state(),
                    "python": repr(random.getstate())},
            "config": to_container(self.cfg),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        d_image = self.d_image.module if isinstance(self.d_image, DDP) else self.d_image
        d_object = self.d_object.module if isinstance(self.d_object, DDP) else self.d_object
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        d_image.load_state_dict(state["d_image"])
        if d_object is not None and state.get("d_object") is not None:
            d_object.load_state_dict(state["d_object"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        import ast

        random.setstate(ast.literal_eval(state["rng"]["python"]))
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {"training_step": self.step, "config_path": str(self.cfg.get("config_path", ""))}
        return ckpt.save_checkpoint(
            self.ckpt_root, self.step,
            lambda folder: self.ema.module.save_pretrained(folder, metadata=meta),
            self.state(), keep_last=int(self.cfg.get("keep_last", 3)),
        )

    def maybe_resume(self) -> None:
        mode = str(self.cfg.resume)
        if mode == "never":
            return
        if self.dist.is_main:
            ckpt.remove_stale_temporaries(self.ckpt_root)
        barrier(self.dist)
        if mode == "auto":
            folder = ckpt.latest_checkpoint(self.ckpt_root)
            if folder is None:
                return
        else:
            folder = Path(mode)
            if not folder.exists():
                raise ConfigError(f"resume={mode!r}: no such checkpoint folder")
        state = ckpt.load_training_state(folder)
        self.load_state(state)
        if self.dist.is_main:
            self.logger.info(f"resuming from {folder} (step {self.step})")

    # -- one step --------------------------------------------------------------------------------
    def _unwrapped(self, m):
        return m.module if isinstance(m, DDP) else m

    def train_step(self, batch: Batch) -> dict[str, float]:
        lc, stage = self.lcfg, self.stage()
        self._set_generator_trainable()
        d_image, d_object = self._unwrapped(self.d_image), self._unwrapped(self.d_object)
        keep = batch.objs != 0  # __image__ is not an object to discriminate or regress
        boxes, obj_to_img, objs = batch.boxes[keep], batch.obj_to_img[keep], batch.objs[keep]
        texts = None
        if self.model.text_encoder is not None:
            texts = self.model.encode_texts(batch, drop_prob=self.text_dropout, generator=self.noise, cache=False)
        text_kwargs = texts.as_kwargs() if texts is not None else {}
        # the discriminators' text: zero rows (a learned "no text" term) where a text is absent
        d_text = texts.text_emb if texts is not None else None
        d_obj_text = texts.obj_text_emb[keep] if texts is not None else None
        with self.autocast():
            out = self.g_model(batch, layout_source="gt", style_source="encode", stage=stage, generator=self.noise,
                               **text_kwargs)
            fake = out.images
            real = batch.images
            if real.shape[-1] != fake.shape[-1]:  # the global stage trains at reduced resolution
                real = F.interpolate(real, size=fake.shape[-2:], mode="bilinear", align_corners=False,
                                     antialias=True)
            cond = out.layout.for_discriminator().detach()
            if cond.shape[-1] != fake.shape[-1]:
                cond = F.interpolate(cond, size=fake.shape[-2:], mode="nearest")

            # Generator losses. The discriminators are used unwrapped and frozen here, so the
            # generator's backward neither fills their grads nor triggers DDP reductions.
            d_image.requires_grad_(False)
            if d_object is not None:
                d_object.requires_grad_(False)
            d_fake_g = d_image(torch.cat([cond, fake], 1), text_emb=d_text)
            losses: dict[str, torch.Tensor] = {"g_gan": self.gan.g_loss(d_fake_g)}
            lam = float(lc.get("lambda_feat", 10))
            if lam > 0:
                with torch.no_grad():
                    d_real_feats = d_image(torch.cat([cond, real], 1), text_emb=d_text)
                losses["g_feat"] = feature_matching_loss(d_real_feats, d_fake_g, lambda_feat=lam)
            if float(lc.get("lambda_l1", 0)) > 0:
                losses["g_l1"] = float(lc["lambda_l1"]) * (fake.float() - real.float()).abs().mean()
            if self.perceptual is not None:
                losses["g_perceptual"] = float(lc["lambda_perceptual"]) * self.perceptual(fake, real)
            if d_object is not None and keep.any():
                score_f, cls_f = d_object(fake, boxes, obj_to_img, text_emb=d_obj_text)
                losses["g_obj"] = float(lc.get("lambda_obj", 1.0)) * self.gan.g_loss(score_f)
                losses["g_obj_aux"] = float(lc.get("lambda_aux", 1.0)) * aux_class_loss(cls_f, objs)
            if float(lc.get("lambda_box", 1.0)) > 0:
                losses["box"] = float(lc.get("lambda_box", 1.0)) * box_loss(out.boxes_pred[keep], boxes)
            if batch.masks is not None and float(lc.get("lambda_mask", 1.0)) > 0:
                losses["mask"] = float(lc.get("lambda_mask", 1.0)) * mask_loss(out.mask_logits[keep], batch.masks[keep])
            if out.style_mu is not None and float(lc.get("lambda_kl", 0.01)) > 0:
                losses["kl"] = float(lc.get("lambda_kl", 0.01)) * kl_loss(out.style_mu, out.style_logvar)
            if texts is not None:
                losses.update(self._text_losses(out, fake, batch, texts, keep))
            g_total = sum(losses.values())
        d_image.requires_grad_(True)
        if d_object is not None:
            d_object.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        clip = float(self.train_cfg.get("grad_clip", 0) or 0)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)

        # Discriminator losses: one forward over real and (detached) fake together per
        # discriminator, so DDP sees exactly one forward and one backward.
        r1_gamma = float(self.train_cfg.get("r1_gamma", 0) or 0)
        r1_every = int(self.train_cfg.get("r1_every", 16))
        do_r1 = r1_gamma > 0 and self.step % r1_every == 0
        b = real.shape[0]
        with self.autocast():
            real_in = torch.cat([cond, real.detach()], 1).requires_grad_(do_r1)
            both = self.d_image(torch.cat([real_in, torch.cat([cond, fake.detach()], 1)], 0),
                                text_emb=d_text.repeat(2, 1) if d_text is not None else None)
            d_real = [[f[:b] for f in scale] for scale in both]
            d_fake = [[f[b:] for f in scale] for scale in both]
            d_losses = {"d_gan": self.gan.d_loss(d_real, d_fake)}
            if self.d_object is not None and keep.any():
                n = boxes.shape[0]
                score, cls = self.d_object(torch.cat([real, fake.detach()], 0), boxes.repeat(2, 1),
                                           torch.cat([obj_to_img, obj_to_img + b]),
                                           text_emb=d_obj_text.repeat(2, 1) if d_obj_text is not None else None)
                d_losses["d_obj"] = float(lc.get("lambda_obj", 1.0)) * self.gan.d_loss(score[:n], score[n:])
                d_losses["d_obj_aux"] = float(lc.get("lambda_aux", 1.0)) * aux_class_loss(cls[:n], objs)
            if do_r1:
                d_losses["d_r1"] = r1_gamma * r1_every * r1_penalty(d_real, real_in)
            d_total = sum(d_losses.values())
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.opt_d.param_groups for p in g["params"]], clip)

        values = {k: float(v.detach()) for k, v in {**losses, **d_losses}.items()}
        values["g_total"], values["d_total"] = float(g_total.detach()), float(d_total.detach())
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if broadcast_flag(bool(bad), self.dist, self.device):
            raise TrainingDiverged(
                f"step {self.step + 1}: loss {', '.join(bad) or '(on another rank)'} is not finite; "
                f"stopped before the update — last good checkpoint: "
                f"{ckpt.latest_checkpoint(self.ckpt_root) or 'none yet'}")
        self.opt_g.step()
        self.opt_d.step()
        update_ema(self.ema, self.model)
        self._last_out = out
        return values

    def _text_losses(self, out, fake: torch.Tensor, batch: Batch, texts, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text style prior's fit and the optional CLIP loss (both 0-weight switchable)."""
        lc, losses = self.lcfg, {}
        lam_prior = float(lc.get("lambda_prior", 1.0))
        if lam_prior > 0 and out.prior_mu is not None and out.style_mu is not None and bool(out.prior_mask.any()):
            rows = out.prior_mask
            losses["prior"] = lam_prior * gaussian_kl(out.style_mu[rows].detach().float(),
                                                      out.style_logvar[rows].detach().float(),
                                                      out.prior_mu[rows], out.prior_logvar[rows])
        lam_clip = float(lc.get("lambda_clip", 0.0) or 0.0)
        if lam_clip > 0:
            enc = self.model.text_encoder
            terms = []
            if bool(texts.text_mask.any()):
                rows = texts.text_mask.nonzero().flatten()
                sim = (enc.encode_image(fake[rows].float()) * texts.text_emb[rows]).sum(dim=1)
                terms.append(1 - sim)
            obj_rows = (texts.obj_text_mask & keep).nonzero().flatten()
            if obj_rows.numel() > 0:
                crops = crop_boxes(fake.float(), batch.boxes[obj_rows], batch.obj_to_img[obj_rows], enc.image_size,
                                   margin=CROP_MARGIN)
                sim = (enc.encode_image(crops) * texts.obj_text_emb[obj_rows]).sum(dim=1)
                terms.append(1 - sim)
            if terms:
                losses["clip"] = lam_clip * torch.cat(terms).mean()
        return losses

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Train to ``max_steps``; returns the last checkpoint folder (rank 0)."""
        self.maybe_resume()
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))
        max_steps = int(self.cfg.max_steps)
        every = int(self.cfg.checkpoint_every)
        log_every = int(self.cfg.get("log_every", 10))
        sample_every = int(self.cfg.get("sample_every", every))
        data = _infinite_loader(self.loader, self.sampler, self.epoch, self.position)
        bar = tqdm(total=max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main)
        last = None
        t0, images_seen = time.perf_counter(), 0
        self.model.train()
        try:
            while self.step < max_steps:
                epoch, position, batch = next(data)
                batch = self.augment(batch.to(self.device, non_blocking=True), generator=self.noise)
                values = self.train_step(batch)
                self.step += 1
                self.epoch, self.position = epoch, position
                images_seen += batch.num_images * self.dist.world_size
                if self.dist.is_main:
                    rate = images_seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1)
                    bar.set_postfix(g=f"{values['g_total']:.3f}", d=f"{values['d_total']:.3f}",
                                    img_s=f"{rate:.1f}", refresh=False)
                    if self.step % log_every == 0 or self.step == max_steps:
                        self.logger.scalars(self.step, {**{f"loss/{k}": v for k, v in values.items()},
                                                        "speed/img_per_s": rate})
                    if self.step % sample_every == 0 or self.step == max_steps:
                        self.logger.samples(self.step, self.ema.module, batch, self._last_out, self.val_set)
                if self.step % every == 0 or self.step == max_steps:
                    last = self.save() or last
                    barrier(self.dist)
        finally:
            bar.close()
            self.logger.close()
        if self.dist.is_main and last is not None:
            self.logger.info(f"done: {self.step} steps; checkpoint {last}")
        return last

    def close(self) -> None:
        cleanup(self.dist)
