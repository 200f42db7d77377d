"""Domain CLIP training: an open_clip model trained contrastively on a dataset's images and captions.

No pretrained CLIP weights can be had offline, so the project trains a small one on its own
data (``layout2img train-clip``, ``configs/clip/shapes.yaml``). Each step has two contrastive
halves, scored by open_clip's ``ClipLoss`` with the model's learned temperature:

* whole images with one of their captions (a random one of the image's captions each time);
* object crops (the object's box cut from its image, resized to the model's input) with short
  texts ("a red circle"); the crops of a step have distinct texts, so no crop's text is
  another crop's false negative.

Texts reach the model as token ids: the captions' and crop texts' from the encoder's cache
(:meth:`TextEncoder.tokenize`), the hard negatives' spliced from them
(:class:`~layout2img.training.clip_data.SwappedTokens`), the same ids the tokenizer gives.

The data are :class:`~layout2img.training.clip_data.ClipPairs`. The validation number is caption
retrieval (:func:`layout2img.metrics.retrieval.caption_retrieval_accuracy`): for each validation
image, its first caption ranked against ``num_candidates - 1`` captions of other images. The
trained model is saved as a folder that :meth:`TextEncoder.from_pretrained` loads.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..devices import resolve_device
from ..errors import CheckpointError, ConfigError
from ..io import check_state
from ..metrics.retrieval import (caption_retrieval_accuracy, crop_own_images, object_description_accuracy,
                                 to_float_images)
from ..models.text import TextEncoder
from .clip_data import ClipPairs, SwappedTokens, load_clip_pairs, swap_word

__all__ = ["ClipBatchSampler", "ClipTrainResult", "clip_loss_with_negatives", "load_clip_config", "swap_word",
           "train_clip"]

DEFAULT_CLIP_CONFIG = "clip/shapes.yaml"


# -- configuration ---------------------------------------------------------------------------------
def load_clip_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> DictConfig:
    """``configs/clip/shapes.yaml`` (or ``path``) with ``key=value`` overrides, checked against
    :class:`~layout2img.config.ClipRunConfig` (its defaults filled in; unknown keys are errors)."""
    from ..config import CONFIG_DIR, ClipRunConfig, load_config

    return load_config(CONFIG_DIR / DEFAULT_CLIP_CONFIG if path is None else path, overrides, schema=ClipRunConfig)


def clip_loss_with_negatives(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                             negative_features: torch.Tensor | None = None) -> torch.Tensor:
    """open_clip's ClipLoss (symmetric InfoNCE over the batch), with extra texts that every
    image must also rank below its own: hard negatives join the image->text softmax only."""
    texts = text_features if negative_features is None else torch.cat([text_features, negative_features])
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    logits_per_image = logit_scale * image_features @ texts.T
    logits_per_text = logit_scale * text_features @ image_features.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


# -- training ------------------------------------------------------------------------------------
def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, embeddings' scale and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
                or "positional_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _cosine_with_warmup(warmup: int, total: int, floor: float = 0.0):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


@dataclass
class ClipTrainResult:
    """What :func:`train_clip` returns: the trained encoder (frozen), where it was saved, the record."""

    encoder: TextEncoder
    out_dir: Path | None
    losses: list[float]
    history: list[dict]  # evaluations: step, top1, top5, seconds
    seconds: float


class ClipBatchSampler:
    """Epoch-wise shuffled image indices, a random caption each, and crops with distinct texts."""

    def __init__(self, pairs: ClipPairs, seed: int):
        self.pairs = pairs
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.by_text: dict[str, list[int]] = {}
        for m, t in enumerate(pairs.obj_texts):
            self.by_text.setdefault(t, []).append(m)
        self.texts = sorted(self.by_text)

    def images(self, n: int, captions_per_image: int = 1) -> tuple[list[int], list[list[str]]]:
        """``n`` image indices and ``captions_per_image`` lists of one caption per image (an
        image's captions in random order, distinct while it has enough)."""
        idx = []
        while len(idx) < n:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            idx.append(self.order.pop())
        drawn = []
        for i in idx:
            caps = list(self.pairs.captions[i])
            self.rng.shuffle(caps)
            drawn.append([caps[k % len(caps)] for k in range(captions_per_image)])
        return idx, [[d[k] for d in drawn] for k in range(captions_per_image)]

    def crops(self, n: int) -> tuple[list[int], list[str]]:
        texts = self.rng.sample(self.texts, min(n, len(self.texts)))
        return [self.rng.choice(self.by_text[t]) for t in texts], texts


def train_clip(cfg: Mapping[str, Any] | DictConfig, progress: bool = True, save: bool = True,
               pairs: tuple[ClipPairs, ClipPairs] | None = None) -> ClipTrainResult:
    """Train a domain CLIP as ``cfg`` (a :class:`~layout2img.config.ClipRunConfig`, see
    ``configs/clip/shapes.yaml``) says; save it to ``out_dir``."""
    from open_clip.loss import ClipLoss
    from tqdm.auto import tqdm

    from ..config import ClipRunConfig, validate_config

    cfg = validate_config(cfg, ClipRunConfig, "train-clip config")  # every default from the schema
    tr = cfg.train
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    device = resolve_device(cfg.device)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    encoder = TextEncoder.from_config(model_cfg, frozen=False)
    init_from = tr.init_from
    if init_from:  # continue from a trained domain CLIP of the same configuration (new schedule)
        start = TextEncoder.from_pretrained(Path(str(init_from))).model.state_dict()
        try:
            check_state(Path(str(init_from)), encoder.model.state_dict(), start, against="this config's model")
        except CheckpointError as e:
            raise ConfigError(f"train.init_from={init_from}: {e}") from None
        encoder.model.load_state_dict(start)
    encoder = encoder.to(device)
    encoder.train()
    size = encoder.image_size[0]
    steps, batch_size = int(tr.steps), int(tr.batch_size)
    if steps < 1 or batch_size < 2:
        raise ConfigError(f"train: need steps >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    crops_per_step, crop_weight = int(tr.crops_per_step), float(tr.crop_weight)
    eval_every, log_every = int(tr.eval_every), int(tr.log_every)
    num_candidates, eval_seed = int(tr.num_candidates), int(tr.eval_seed)
    max_seconds = float(tr.max_minutes or 0) * 60.0
    hard_negatives = int(tr.hard_negatives or 0)
    captions_per_image = max(1, int(tr.captions_per_image or 1))
    swap_groups = [list(g) for g in (tr.swap_words or [])]
    if hard_negatives > 0 and not swap_groups:
        raise ConfigError("train.hard_negatives needs train.swap_words (groups of interchangeable words)")

    t0 = time.time()
    if pairs is None:
        train_pairs = load_clip_pairs(cfg.data, "train", size, progress)
        val_pairs = load_clip_pairs(cfg.data, "val", size, progress)
    else:
        train_pairs, val_pairs = pairs
    val_captions = [c[0] for c in val_pairs.captions]
    n_cand = min(num_candidates, len(set(val_captions)))
    load_seconds = time.time() - t0
    if progress:
        print(f"train-clip: {len(train_pairs)} train images ({len(train_pairs.obj_texts)} objects), "
              f"{len(val_pairs)} val images, loaded in {load_seconds:.0f} s; device {device}", flush=True)

    sampler = ClipBatchSampler(train_pairs, seed)
    negatives = SwappedTokens(encoder.tokenizer, swap_groups, encoder.context_length)
    model = encoder.model
    from open_clip.modified_resnet import ModifiedResNet

    conv_tower = isinstance(model.visual, ModifiedResNet)
    memory_format = torch.channels_last if conv_tower and device.type == "cpu" else torch.contiguous_format
    model.visual.to(memory_format=memory_format)  # a ResNet on a CPU: ~25% faster channels-last
    opt_args = dict(lr=float(tr.lr), betas=tuple(tr.betas), eps=1e-6)
    try:  # the fused kernel: ~10x faster than the default loop on a CPU (the token table is big)
        opt = torch.optim.AdamW(_param_groups(model, float(tr.weight_decay)), fused=True, **opt_args)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(_param_groups(model, float(tr.weight_decay)), **opt_args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(int(tr.warmup), steps))
    loss_fn = ClipLoss()
    writer = None
    if cfg.log_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(cfg.log_dir))

    def evaluate(step: int) -> dict:
        r = caption_retrieval_accuracy(encoder, val_pairs.images, val_captions, n_cand, eval_seed)
        r = {"step": step, "top1": r["top1"], "top5": r["top5"], "num_candidates": n_cand}
        if val_pairs.obj_texts:
            r["object_top1"] = object_description_accuracy(encoder, val_pairs, seed=eval_seed)["top1"]
        r["seconds"] = round(time.time() - t0, 1)
        if writer is not None:
            for k in ("top1", "top5", "object_top1"):
                if k in r:
                    writer.add_scalar(f"val/caption_{k}" if k != "object_top1" else "val/object_top1", r[k], step)
        return r

    losses: list[float] = []
    history: list[dict] = []
    bar = tqdm(range(steps), desc="train-clip", unit="step", disable=not progress or None)
    done = steps
    for step in bar:
        idx, caption_sets = sampler.images(batch_size, captions_per_image)
        images = to_float_images(train_pairs.images[idx]).to(device)
        obj_texts: list[str] = []
        if crops_per_step > 0 and train_pairs.obj_texts:
            obj, obj_texts = sampler.crops(crops_per_step)
            src = to_float_images(train_pairs.images[train_pairs.obj_image[obj]]).to(device)
            images = torch.cat([images, crop_own_images(src, train_pairs.obj_boxes[obj], size)])
        negative_sets = [[n for c in caps for _ in range(hard_negatives)
                          for n in [negatives.swap(c, sampler.rng)] if n is not None]
                         for caps in caption_sets]
        # token ids: the captions' and crops' from the encoder's cache, the negatives' spliced
        tokens = encoder.tokenize([t for caps in caption_sets for t in caps] + obj_texts)
        if any(negative_sets):
            tokens = torch.cat([tokens, torch.tensor([n for negs in negative_sets for n in negs], dtype=torch.long)])
        img_f = encoder.encode_image(images.contiguous(memory_format=memory_format))
        txt_f = encoder.encode_tokens(tokens)
        scale = model.logit_scale.exp()
        # one contrastive loss per caption set, all on the same image features
        losses_img, start = [], 0
        neg_start = len(caption_sets) * batch_size + len(obj_texts)
        for negs in negative_sets:
            cap_f = txt_f[start : start + batch_size]
            neg_f = txt_f[neg_start : neg_start + len(negs)]
            start, neg_start = start + batch_size, neg_start + len(negs)
            losses_img.append(clip_loss_with_negatives(img_f[:batch_size], cap_f, scale, neg_f) if negs
                              else loss_fn(img_f[:batch_size], cap_f, scale))
        loss_img = torch.stack(losses_img).mean()
        loss = loss_img
        loss_crop = None
        if len(obj_texts) > 1:
            loss_crop = loss_fn(img_f[batch_size:], txt_f[start : start + len(obj_texts)], scale)
            loss = loss + crop_weight * loss_crop
        if not torch.isfinite(loss):
            raise ConfigError(f"train-clip: the loss became {loss.item()} at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if float(tr.grad_clip or 0) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(tr.grad_clip))
        opt.step()
        sched.step()
        with torch.no_grad():  # as open_clip: the temperature never goes below 1/100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.item()))
        if writer is not None:
            writer.add_scalar("train/loss", losses[-1], step)
            writer.add_scalar("train/loss_captions", float(loss_img.item()), step)
            if loss_crop is not None:
                writer.add_scalar("train/loss_crops", float(loss_crop.item()), step)
            writer.add_scalar("train/logit_scale", float(scale.item()), step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", T=f"{scale.item():.0f}")
        if log_every > 0 and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            bar.write(f"step {step + 1}/{steps}: loss {sum(recent) / len(recent):.3f}, logit scale "
                      f"{scale.item():.1f}, {(time.time() - t0 - load_seconds) / (step + 1):.2f} s/step")
        if eval_every > 0 and (step + 1) % eval_every == 0 and step + 1 < steps:
            history.append(evaluate(step + 1))
            h = history[-1]
            bar.write(f"step {step + 1}: caption top-1 {h['top1']:.3f}, top-5 {h['top5']:.3f} (among {n_cand})"
                      + (f"; object naming top-1 {h['object_top1']:.3f}" if "object_top1" in h else ""))
        if max_seconds > 0 and step + 1 < steps and time.time() - t0 - load_seconds > max_seconds:
            done = step + 1
            bar.write(f"train-clip: train.max_minutes={max_seconds / 60:g} reached at step {done}/{steps}; "
                      "evaluating and saving")
            break
    bar.close()
    train_seconds = time.time() - t0 - load_seconds
    history.append(evaluate(done))
    encoder.freeze()
    seconds = time.time() - t0
    final = history[-1]
    encoder.metadata = {
        "step": done, "steps_planned": steps, "val_caption_top1": final["top1"], "val_caption_top5": final["top5"],
        "val_object_top1": final.get("object_top1"),
        "num_candidates": n_cand, "num_val_images": len(val_pairs), "num_train_images": len(train_pairs),
        "load_seconds": round(load_seconds, 1), "train_seconds": round(train_seconds, 1),
        "total_seconds": round(seconds, 1), "device": str(device), "torch_threads": torch.get_num_threads(),
        "history": history, "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out_dir = None
    if save:
        out_dir = encoder.save_pretrained(Path(cfg.out_dir), encoder.metadata)
    if writer is not None:
        writer.close()
    return ClipTrainResult(encoder, out_dir, losses, history, seconds)
