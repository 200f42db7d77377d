"""The GAN training loop: alternating G and D steps, EMA, AMP, checkpoints, logging, DDP.

One step (:meth:`Trainer.train_step`): the generator runs once on a batch (ground-truth layout,
styles encoded from the real image); :class:`~.objective.GANObjective` turns that into the
generator's loss terms and the discriminators' (each term beside what it judges), and each side
steps its own optimiser. With a text encoder (``model.text_encoder``) each step encodes the batch's
captions and descriptions, dropping each with probability ``train.text_dropout`` (drawn from the
trainer's seeded generator, so a resumed run drops exactly what the uninterrupted one would).
``train.init_from`` starts the weights from a model checkpoint (e.g. a text-free run; the text
layers keep their identity initialisation).
"""
from __future__ import annotations

import ast
import math
import random
import time
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import LossConfig, RunConfig, TrainConfig, to_container, validate_config
from ..data.augment import BatchAugment
from ..data.batch import Batch, collate
from ..data.build import build_dataset
from ..devices import resolve_device
from ..errors import ConfigError, Layout2ImgError, WriteError
from ..io import atomic_write_text
from ..models.discriminator import ObjectDiscriminator, ProjectedDiscriminator
from ..models.losses import GANLoss, PerceptualLoss, label_map, resolve_perceptual
from ..pipeline import ModelOutput, SceneGraphToImage, TextInputs
from ..pipeline.checkpoint import with_later_tensors
from ..vocab import Vocab
from . import checkpoint as ckpt
from .adversarial import ImageAdversary, ObjectAdversary, build_image_discriminator
from .distributed import (DistInfo, ResumableSampler, barrier, broadcast_flag, cleanup, infinite_batches,
                          init_distributed)
from .ema import make_ema, update_ema
from .logging import RunLogger
from .objective import GANObjective, StepTensors, frozen, unwrap
from .schedule import Schedule, shrink
from .segmenter import gt_label_map, train_segmenter
from .styles import fit_style_clusters


class TrainingDiverged(Layout2ImgError):
    """A loss became NaN or Inf; the run stopped and the last good checkpoint is kept."""


AMP_MODES = ("auto", "bf16", "fp32")


class Trainer:
    """Build everything a config describes and train it: ``Trainer(cfg).fit()``.

    ``cfg``: a :class:`~layout2img.config.RunConfig` from :func:`~layout2img.config.load_config`
    (any other mapping is checked against the schema first).
    """

    def __init__(self, cfg):
        if not (isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is RunConfig):
            cfg = validate_config(cfg)
        self.cfg = cfg
        # typed copies of the sections each step reads (plain dataclasses: cheap attribute access)
        self.train_opts: TrainConfig = OmegaConf.to_object(cfg.train)
        self.loss_weights: LossConfig = OmegaConf.to_object(cfg.loss)
        tr = self.train_opts
        if tr.amp not in AMP_MODES:
            raise ConfigError(f"train.amp: expected {', '.join(AMP_MODES)}, got {tr.amp!r}")
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
        self.val_set = build_dataset(data_cfg, "val", seed=seed) if cfg.data.val is not None else None
        self.vocab: Vocab = self.train_set.vocab
        self.sampler = ResumableSampler(len(self.train_set), seed, self.dist.rank, self.dist.world_size)
        per_rank_batch = int(cfg.batch_size) // self.dist.world_size
        if per_rank_batch < 1:
            raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the number of processes")
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            self.train_set, batch_size=per_rank_batch, sampler=self.sampler, collate_fn=collate,
            num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        self.augment = BatchAugment(self.vocab, hflip=cfg.data.hflip).to(self.device)

        # -- models ----------------------------------------------------------------------------
        model_cfg = to_container(cfg.model)
        model_cfg["vocab"] = self.vocab.to_dict()
        self.model = SceneGraphToImage(**model_cfg).to(self.device)
        self.text_dropout = tr.text_dropout
        if not 0.0 <= self.text_dropout <= 1.0:
            raise ConfigError(f"train.text_dropout: expected a probability in [0, 1], got {self.text_dropout}")
        # the discriminators see text only when the model can encode the batches' texts
        text_dim = self.model.text_dim if self.model.text_encoder is not None else 0
        if tr.init_from:
            ckpt.init_model_from(self.model, Path(tr.init_from))
        # channels_last: tensor cores on GPUs; on the AMD CPU oneDNN gained nothing from it (BENCHMARKS)
        self.channels_last = tr.channels_last
        if self.channels_last:
            self.model.generator.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.model, tr.ema_decay)
        dcfg = to_container(cfg.discriminator)
        self.d_image = build_image_discriminator(dcfg, self.vocab.num_objects, self.model.discriminator_layout_channels,
                                                 text_dim).to(self.device)
        self.d_object = (ObjectDiscriminator(num_classes=self.vocab.num_objects, text_dim=text_dim,
                                             **dcfg["object"]).to(self.device)
                         if dcfg["object"] is not None else None)
        if self.channels_last:
            self.d_image.to(memory_format=torch.channels_last)
        lw = self.loss_weights
        if lw.l1_pool < 1:
            raise ConfigError(f"loss.l1_pool: expected a block size >= 1 pixel, got {lw.l1_pool}")
        if lw.texture_pool < 0 or (lw.texture_pool > 1 and lw.l1_pool > 1):
            raise ConfigError(f"loss.texture_pool: expected a block size >= 0 pixels with loss.l1_pool 1, got "
                              f"{lw.texture_pool} with l1_pool {lw.l1_pool}")
        backbone = resolve_perceptual(lw.perceptual)
        perceptual = (PerceptualLoss(backbone).to(self.device)
                      if backbone != "none" and lw.lambda_perceptual > 0 else None)

        d_params = [p for d in (self.d_image, self.d_object) if d is not None for p in d.parameters()
                    if p.requires_grad]  # a projected D's encoder and mixing convolutions never train
        betas = tuple(tr.betas)
        # not fused: the fused CPU kernel broke bit-exact resume and gained nothing measurable here
        # (docs/BENCHMARKS.md, "Model size and speed")
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=tr.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(d_params, lr=tr.lr_d, betas=betas)
        self.schedule = Schedule.from_config(cfg, self.model.image_size, self.model.generator.size_multiple)
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

        use_bf16 = tr.amp == "bf16" or (tr.amp == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
        self.noise = torch.Generator(device="cpu").manual_seed(seed * 7919 + self.dist.rank)
        gan = GANLoss(lw.gan_mode)
        self.objective = GANObjective(
            lw, self.model, ImageAdversary(dcfg["kind"], gan, lw.lambda_feat, lw.lambda_labelmix, tr.diffaugment,
                                           self.noise), self.d_image,
            ObjectAdversary(gan, lw.lambda_obj, lw.lambda_aux) if self.d_object is not None else None, self.d_object,
            perceptual, tr.r1_gamma, tr.r1_every)
        self.last_output: ModelOutput | None = None  # the last step's, for the sample grid
        self.step, self.epoch, self.position = 0, 0, 0
        self.logger = RunLogger(self.out_dir, enabled=self.dist.is_main, vocab=self.vocab)
        if lw.perceptual == "auto" and lw.lambda_perceptual > 0:
            self.logger.info(f"perceptual loss: {backbone}" + (" (no VGG19 weights in the torch hub cache; see README)"
                                                              if backbone == "none" else ""))

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        d_image, d_object = unwrap(self.d_image), unwrap(self.d_object)
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
        d_image, d_object = unwrap(self.d_image), unwrap(self.d_object)
        # a run started before a buffer was added resumes with the value that buffer then meant
        self.model.load_state_dict(with_later_tensors(state["model"], self.model.state_dict()))
        self.ema.load_state_dict(with_later_tensors(state["ema"], self.ema.state_dict()))
        d_image.load_state_dict(state["d_image"])
        if d_object is not None and state.get("d_object") is not None:
            d_object.load_state_dict(state["d_object"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(ast.literal_eval(state["rng"]["python"]))
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {"training_step": self.step, "config_path": str(self.cfg.config_path or "")}
        return ckpt.save_checkpoint(
            self.ckpt_root, self.step,
            lambda folder: self.ema.module.save_pretrained(folder, metadata=meta),
            self.state(), keep_last=self.cfg.keep_last,
        )

    def save_on_every_rank(self) -> Path | None:
        """:meth:`save` on rank 0, then a barrier; a failed write (disk full) stops every rank with
        the one line rank 0 has, instead of leaving the others waiting at the barrier."""
        failed = None
        try:
            folder = self.save()
        except WriteError as e:
            folder, failed = None, e
        if broadcast_flag(failed is not None, self.dist, self.device):
            raise failed or WriteError(f"step {self.step}: rank 0 could not write the checkpoint (its log says why)",
                                       path=str(self.ckpt_root), reason="rank 0 failed")
        barrier(self.dist)
        return folder

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
    def _set_learning_rates(self) -> float:
        factor = self.schedule.lr_factor(self.step)
        for opt, base in ((self.opt_g, self.train_opts.lr_g), (self.opt_d, self.train_opts.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor
        return factor

    def encode_texts(self, batch: Batch) -> TextInputs | None:
        """The batch's captions and descriptions, each dropped with ``train.text_dropout`` (drawn
        from the trainer's seeded generator), or None for a text-free model."""
        if self.model.text_encoder is None:
            return None
        return self.model.encode_texts(batch, drop_prob=self.text_dropout, generator=self.noise, cache=False)

    def forward(self, batch: Batch, texts: TextInputs | None) -> StepTensors:
        """The generator's pass (ground-truth layout, styles encoded from the real images) and what
        the loss terms compare it with, at the resolution of this step's stage."""
        size = self.schedule.size(self.step)
        if batch.images.shape[-1] != size:  # a low-resolution step: the real images shrink with the layout
            batch = replace(batch, images=shrink(batch.images, (size, size)))
        out = self.g_model(batch, layout_source="gt", style_source="encode", stage=self.schedule.stage(self.step),
                           generator=self.noise, image_size=size, **(texts.as_kwargs() if texts is not None else {}))
        fake, real, size = out.images, batch.images, out.images.shape[-2:]
        if real.shape[-1] != fake.shape[-1]:  # the global stage trains at reduced resolution
            real = shrink(real, size)
        cond = out.layout.for_discriminator().detach()
        if cond.shape[-1] != fake.shape[-1]:
            cond = F.interpolate(cond, size=size, mode="nearest")
        labels = label_map(out.layout.instances, batch.objs)  # per-pixel classes (segmentation D)
        if labels.shape[-1] != fake.shape[-1]:
            labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        return StepTensors(batch, out, real, fake, cond, labels, texts)

    def backward(self, optimizer: torch.optim.Optimizer, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Gradients of the summed ``losses`` for ``optimizer``'s parameters (clipped with
        ``train.grad_clip``); returns the sum."""
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.train_opts.grad_clip > 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.train_opts.grad_clip)
        return total

    def loss_values(self, g_losses: dict, g_total: torch.Tensor, d_losses: dict, d_total: torch.Tensor):
        """The step's losses as floats; TrainingDiverged (on every rank) when one is not finite."""
        values = {k: float(v.detach()) for k, v in {**g_losses, **d_losses}.items()}
        values["g_total"], values["d_total"] = float(g_total.detach()), float(d_total.detach())
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if broadcast_flag(bool(bad), self.dist, self.device):
            raise TrainingDiverged(
                f"step {self.step + 1}: loss {', '.join(bad) or '(on another rank)'} is not finite; "
                f"stopped before the update — last good checkpoint: "
                f"{ckpt.latest_checkpoint(self.ckpt_root) or 'none yet'}")
        return values

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One generator and one discriminator update on ``batch``; returns the losses as floats."""
        self.model.freeze_global_generator(self.schedule.global_frozen(self.step))
        texts = self.encode_texts(batch)
        with self.autocast():
            step = self.forward(batch, texts)
            with frozen(self.objective.discriminators()):
                g_losses = self.objective.generator_losses(step)
        g_total = self.backward(self.opt_g, g_losses)
        with self.autocast():
            d_losses = self.objective.discriminator_losses(step, r1=self.objective.r1_due(self.step))
        d_total = self.backward(self.opt_d, d_losses)
        values = self.loss_values(g_losses, g_total, d_losses, d_total)
        self.opt_g.step()
        self.opt_d.step()
        update_ema(self.ema, self.model)
        self.last_output = step.out
        return values

    def fit_styles(self) -> dict:
        """Fit the per-class style clusters on the EMA model's codes of the train split (the
        weights that are published) and copy them into the raw model too, so the next EMA update
        keeps them. Returns the fit's summary."""
        summary = fit_style_clusters(self.ema.module, self.train_set, max_images=self.train_opts.fit_styles,
                                     seed=int(self.cfg.seed), progress=self.dist.is_main)
        if self.model.style_clusters is not None:
            self.model.style_clusters.load_state_dict(self.ema.module.style_clusters.state_dict())
        self.logger.info(f"style clusters fitted on {summary['objects']} objects of {summary['images']} train "
                         f"images ({summary['classes']} classes)")
        return summary

    def train_projection_encoder(self) -> None:
        """The projected D's segmenter, trained on real train images before the first GAN step."""
        p, encoder = self.cfg.discriminator.projected, unwrap(self.d_image).encoder
        low = self.model.image_size // 2 if self.schedule.low_res_steps > 0 else None
        summary = train_segmenter(encoder, self.train_set, partial(gt_label_map, self.model), int(p.encoder_steps),
                                  int(p.encoder_batch), float(p.encoder_lr), int(self.cfg.seed),
                                  self.model.image_size, low_res=low, device=self.device)
        self.logger.info(f"projected discriminator: segmenter trained for {p.encoder_steps} steps in "
                         f"{summary['seconds']:.0f} s, pixel accuracy {summary['pixel_accuracy']:.3f} (last batches)")

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Train to ``max_steps``; returns the last checkpoint folder (rank 0)."""
        self.maybe_resume()
        if self.step == 0 and isinstance(unwrap(self.d_image), ProjectedDiscriminator):
            self.train_projection_encoder()
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))
        max_steps, every = self.cfg.max_steps, self.cfg.checkpoint_every
        log_every, sample_every = self.cfg.log_every, self.cfg.sample_every
        data = infinite_batches(self.loader, self.sampler, self.epoch, self.position)
        bar = tqdm(total=max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main)
        last = None
        t0, images_seen = time.perf_counter(), 0
        self.model.train()
        try:
            while self.step < max_steps:
                epoch, position, batch = next(data)
                batch = self.augment(batch.to(self.device, non_blocking=True), generator=self.noise)
                lr_factor = self._set_learning_rates()
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
                                                        "speed/img_per_s": rate, "lr/factor": lr_factor})
                    if self.step == max_steps and self.train_opts.fit_styles > 0:
                        self.fit_styles()
                    if self.step % sample_every == 0 or self.step == max_steps:
                        self.logger.samples(self.step, self.ema.module, batch, self.last_output, self.val_set)
                if self.step % every == 0 or self.step == max_steps:
                    last = self.save_on_every_rank() or last
        finally:
            bar.close()
            self.logger.close()
        if self.dist.is_main and last is not None:
            self.logger.info(f"done: {self.step} steps; checkpoint {last}")
        return last

    def close(self) -> None:
        cleanup(self.dist)
