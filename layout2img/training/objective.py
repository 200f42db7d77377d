"""The losses of a GAN step, each term beside what it judges.

A step's generator forward gives a :class:`StepTensors`; :class:`GANObjective` turns it into the
generator's terms (:data:`GENERATOR_TERMS`, in order) and the discriminators' terms. A term is a
function ``term(objective, step) -> {name: weighted loss}`` that reads its weight from
``objective.weights`` (the ``loss`` config section) and returns ``{}`` when that weight is 0, so
adding a loss is one function here, its name in :data:`GENERATOR_TERMS`, and one ``loss.lambda_*``
key in :class:`~layout2img.config.LossConfig`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LossConfig
from ..data.batch import Batch
from ..models.losses import PerceptualLoss, kl_loss, r1_penalty, texture_mask, texture_pooled_l1
from ..pipeline import ModelOutput, SceneGraphToImage, TextInputs
from .adversarial import ImageAdversary, ObjectAdversary
from .text_losses import text_losses


@dataclass
class StepTensors:
    """What one step's loss terms read, at the resolution the generator trained at this step."""

    batch: Batch
    out: ModelOutput
    real: torch.Tensor  # (B, 3, H, W) the batch's images
    fake: torch.Tensor  # (B, 3, H, W) the generator's
    cond: torch.Tensor  # (B, C, H, W) the layout channels the image discriminator sees (detached)
    labels: torch.Tensor  # (B, H, W) per-pixel classes (the segmentation discriminator's targets)
    texts: TextInputs | None  # the batch's encoded texts (after text dropout), if the model reads text

    @property
    def keep(self) -> torch.Tensor:
        """(O,) bool: the objects that are drawn (``__image__`` is not judged nor regressed)."""
        return self.batch.objs != 0

    @property
    def d_text(self) -> torch.Tensor | None:
        """The image discriminators' text: zero rows (a learned "no text" term) where absent."""
        return self.texts.text_emb if self.texts is not None else None

    @property
    def d_obj_text(self) -> torch.Tensor | None:
        return self.texts.obj_text_emb[self.keep] if self.texts is not None else None


Term = Callable[["GANObjective", StepTensors], "dict[str, torch.Tensor]"]

#: ``loss.texture_pool``: pixels within this many (at full size) of a thing are the thing's - its
#: rim and drop shadow are fixed by its mask, so they keep the per-pixel terms.
TEXTURE_MARGIN = 3


def image_adversarial(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    """The image discriminator's verdict on the fake (and feature matching for the multiscale D)."""
    texture, pool = obj.texture(step)
    return obj.image.generator_losses(obj.d_image_frozen, step.cond, step.real, step.fake, step.labels, step.d_text,
                                      texture, pool)


def pixel_l1(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    """L1 to the real image (weighted ``loss.lambda_l1_full_size`` in full-size steps, when set), per pixel
    or (``loss.l1_pool`` k > 1) between the k x k block means; with
    ``loss.texture_pool`` only the stuff textures' pixels are compared through block means."""
    w, k = obj.weights.lambda_l1, obj.weights.l1_pool
    if obj.weights.lambda_l1_full_size is not None and step.fake.shape[-1] == obj.model.image_size:
        w = obj.weights.lambda_l1_full_size
    if w <= 0:
        return {}
    diff = step.fake.float() - step.real.float()
    texture, pool = obj.texture(step)
    if texture is not None:
        return {"g_l1": w * texture_pooled_l1(diff, texture, pool)}
    if k > 1:
        diff = F.avg_pool2d(diff, k, ceil_mode=True)
    return {"g_l1": w * diff.abs().mean()}


def perceptual(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    if obj.perceptual is None:
        return {}
    return {"g_perceptual": obj.weights.lambda_perceptual * obj.perceptual(step.fake, step.real)}


def object_adversarial(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    if obj.objects is None:
        return {}
    return obj.objects.generator_losses(obj.d_object_frozen, step.fake, step.batch, step.d_obj_text)


def layout_regression(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    """Boxes and masks (and the layout sampler's KL and relation terms): the layout stage's own losses."""
    return obj.model.layout_stage.losses(step.out, step.batch, obj.weights)


def style_kl(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    out, w = step.out, obj.weights.lambda_kl
    return {"kl": w * kl_loss(out.style_mu, out.style_logvar)} if out.style_mu is not None and w > 0 else {}


def text_terms(obj: "GANObjective", step: StepTensors) -> dict[str, torch.Tensor]:
    if step.texts is None:
        return {}
    return text_losses(obj.model.text_encoder, step.out, step.fake, step.batch, step.texts, step.keep, obj.weights)


#: The generator's terms, in the order they are summed (the order is part of bit-exact resume).
GENERATOR_TERMS: tuple[Term, ...] = (image_adversarial, pixel_l1, perceptual, object_adversarial, layout_regression,
                                     style_kl, text_terms)


class GANObjective:
    """Every loss of a GAN step: ``generator_losses(step)`` and ``discriminator_losses(step, r1)``.

    ``d_image`` / ``d_object``: the discriminators as the optimiser steps them (possibly
    DDP-wrapped; each gets one forward over real and fake per step); the generator's terms use
    them unwrapped (``*_frozen``), which the trainer freezes around the generator's losses, so
    the generator's backward neither fills their grads nor triggers DDP reductions.
    """

    def __init__(self, weights: LossConfig, model: SceneGraphToImage, image: ImageAdversary,
                 d_image: nn.Module, objects: ObjectAdversary | None = None, d_object: nn.Module | None = None,
                 perceptual_loss: PerceptualLoss | None = None, r1_gamma: float = 0.0, r1_every: int = 1):
        self.weights, self.model = weights, model
        self.image, self.objects = image, objects
        self.d_image, self.d_object = d_image, d_object
        self.perceptual = perceptual_loss
        self.r1_gamma, self.r1_every = r1_gamma, r1_every

    @property
    def d_image_frozen(self) -> nn.Module:
        return unwrap(self.d_image)

    @property
    def d_object_frozen(self) -> nn.Module | None:
        return unwrap(self.d_object)

    def discriminators(self) -> list[nn.Module]:
        return [m for m in (self.d_image_frozen, self.d_object_frozen) if m is not None]

    def texture(self, step: StepTensors) -> tuple[torch.Tensor | None, int]:
        """``loss.texture_pool``'s mask of stuff texture (:func:`texture_mask`, (B, 1, H, W)) and its
        block size, both scaled to this step's resolution; ``(None, 1)`` when off (or no stuff)."""
        full = self.weights.texture_pool
        if full <= 1 or self.model.stuff_classes is None:
            return None, 1
        scale = step.fake.shape[-1] / self.model.image_size  # < 1 in low-resolution steps
        margin = max(1, round(TEXTURE_MARGIN * scale))
        return texture_mask(step.labels, self.model.stuff_classes, margin), max(1, round(full * scale))

    def r1_due(self, step: int) -> bool:
        return self.r1_gamma > 0 and step % self.r1_every == 0

    def generator_losses(self, step: StepTensors) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        for term in GENERATOR_TERMS:
            losses.update(term(self, step))
        return losses

    def discriminator_losses(self, step: StepTensors, r1: bool) -> dict[str, torch.Tensor]:
        """One forward per discriminator over the real and the detached fake images."""
        losses, d_real, real_in = self.image.discriminator_losses(self.d_image, step.cond, step.real, step.fake,
                                                                  step.labels, step.d_text, r1)
        if self.objects is not None:
            losses.update(self.objects.discriminator_losses(self.d_object, step.real, step.fake, step.batch,
                                                            step.d_obj_text))
        if r1:
            losses["d_r1"] = self.r1_gamma * self.r1_every * r1_penalty(d_real, real_in)
        return losses


@contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """``modules`` with ``requires_grad`` off inside the block (each parameter as it was after it:
    a projected D's frozen encoder stays frozen)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def unwrap(module: nn.Module | None) -> nn.Module | None:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
