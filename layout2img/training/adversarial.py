"""The discriminators' side of a GAN step: the image D (pix2pixHD's multiscale D, Projected GAN's
D on a frozen segmenter, or OASIS's segmentation D, with DiffAugment, feature matching and LabelMix)
and the object D (LostGAN's per-object real/fake with an auxiliary classifier)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.batch import Batch
from ..errors import ConfigError
from ..models.discriminator import MultiscaleDiscriminator, ProjectedDiscriminator, SegmentationDiscriminator
from ..models.losses import (GANLoss, aux_class_loss, feature_matching_loss, labelmix_inputs, labelmix_loss,
                             segmentation_fake_loss, segmentation_real_loss)
from ..models.segmenter import SceneSegmenter
from .diffaugment import diff_augment, parse_policy

DISCRIMINATOR_KINDS = ("multiscale", "projected", "segmentation")


def build_image_discriminator(dcfg: dict[str, Any], num_classes: int, layout_channels: int,
                              text_dim: int) -> nn.Module:
    """The image discriminator a config's ``discriminator`` section names (``kind``); a projected D's
    encoder is built untrained (the trainer trains it before the first step: ``training.segmenter``)."""
    kind = dcfg.get("kind", "multiscale")
    if kind in ("segmentation", "projected") and text_dim:
        raise ConfigError(f"discriminator.kind={kind} takes no text; use kind=multiscale for text models")
    if kind == "segmentation":
        return SegmentationDiscriminator(num_classes, **dcfg["segmentation"])
    if kind == "projected":
        p = dcfg["projected"]
        return ProjectedDiscriminator(SceneSegmenter(num_classes, p["encoder_widths"]), layout_channels,
                                      ndf=p["ndf"], mix_channels=p["mix_channels"])
    if kind == "multiscale":
        return MultiscaleDiscriminator(in_channels=layout_channels + 3, text_dim=text_dim, **dcfg["image"])
    raise ConfigError(f"discriminator.kind: unknown {kind!r} (expected {' or '.join(DISCRIMINATOR_KINDS)})")


class ImageAdversary:
    """Losses of the generator and of the image discriminator for one step.

    The multiscale and projected Ds see the layout's class map and edges beside the image and give
    patch logits plus features (feature matching); the segmentation D sees the image alone and labels
    each pixel with its class or "fake" (OASIS), with LabelMix. With a DiffAugment policy the
    real and fake copy of a scene get the same transform, so feature matching and LabelMix still
    compare like with like; draws come from ``noise`` (the trainer's seeded generator).
    """

    def __init__(self, kind: str, gan: GANLoss, lambda_feat: float, lambda_labelmix: float, diffaugment: str,
                 noise: torch.Generator):
        if kind not in DISCRIMINATOR_KINDS:
            raise ConfigError(f"discriminator.kind: unknown {kind!r} (expected {' or '.join(DISCRIMINATOR_KINDS)})")
        if lambda_labelmix > 0 and kind != "segmentation":
            raise ConfigError("loss.lambda_labelmix needs discriminator.kind=segmentation")
        self.kind, self.gan = kind, gan
        self.lambda_feat, self.lambda_labelmix = lambda_feat, lambda_labelmix
        self.policy = parse_policy(diffaugment)
        self.noise = noise

    def _augment(self, pair: torch.Tensor, labels: torch.Tensor | None = None, image_channels: slice = slice(None)):
        """A stacked (real; fake) pair and its scenes' (B, H, W) labels -> the augmented pair and
        (2B, H, W) labels (the identity without a policy)."""
        pair_labels = labels.repeat(2, 1, 1) if labels is not None else None
        if not self.policy:
            return pair, pair_labels
        return diff_augment(pair, self.policy, image_channels, pair_labels, generator=self.noise, groups=2)

    def generator_losses(self, d_image: nn.Module, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                         labels: torch.Tensor, text_emb: torch.Tensor | None, texture: torch.Tensor | None = None,
                         texture_pool: int = 1) -> dict[str, torch.Tensor]:
        """``d_image`` unwrapped and frozen (so G's backward neither fills its grads nor syncs DDP).
        ``texture`` (B, 1, H, W): where feature matching compares ``texture_pool``-pixel block means."""
        b = fake.shape[0]
        if self.kind == "segmentation":
            if self.policy:
                pair, pair_labels = self._augment(torch.cat([real, fake], 0), labels)
                fake, labels = pair[b:], pair_labels[b:]
            return {"g_gan": segmentation_real_loss(d_image(fake), labels)}
        real_in, fake_in = torch.cat([cond, real], 1), torch.cat([cond, fake], 1)
        if self.policy:  # the texture mask moves with the pair (as labels: it is 0 or 1)
            moving = texture[:, 0].long() if texture is not None else None
            pair, moved = self._augment(torch.cat([real_in, fake_in], 0), moving, slice(cond.shape[1], None))
            real_in, fake_in = pair[:b], pair[b:]
            texture = moved[:b, None].to(fake.dtype) if texture is not None else None
        d_fake = d_image(fake_in, text_emb=text_emb)
        losses = {"g_gan": self.gan.g_loss(d_fake)}
        if self.lambda_feat > 0:
            with torch.no_grad():
                d_real = d_image(real_in.detach(), text_emb=text_emb)
            losses["g_feat"] = feature_matching_loss(d_real, d_fake, lambda_feat=self.lambda_feat, texture=texture,
                                                     texture_pool=texture_pool)
        return losses

    def discriminator_losses(self, d_image: nn.Module, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                             labels: torch.Tensor, text_emb: torch.Tensor | None, r1: bool):
        """One forward of ``d_image`` (possibly DDP-wrapped) over real and detached fake images.
        Returns ``(losses, real outputs, real input)``; the real input requires grad when ``r1``."""
        b = real.shape[0]
        real, fake = real.detach(), fake.detach()
        if self.kind == "segmentation":
            pair, pair_labels = self._augment(torch.cat([real, fake], 0), labels)
            real_in = pair[:b].clone().requires_grad_(r1)
            inputs = [real_in, pair[b:]]
            if self.lambda_labelmix > 0:
                mixed, mix_mask = labelmix_inputs(pair[:b], pair[b:], pair_labels[:b], generator=self.noise)
                inputs.append(mixed)
            out = d_image(torch.cat(inputs, 0))
            d_real, d_fake = out[:b], out[b:2 * b]
            losses = {"d_real": segmentation_real_loss(d_real, pair_labels[:b]),
                      "d_fake": segmentation_fake_loss(d_fake, pair_labels[b:])}
            if self.lambda_labelmix > 0:
                losses["d_labelmix"] = self.lambda_labelmix * labelmix_loss(out[2 * b:], d_real, d_fake, mix_mask)
            return losses, [[d_real]], real_in
        pair = torch.cat([torch.cat([cond, real], 1), torch.cat([cond, fake], 1)], 0)
        pair, _ = self._augment(pair, image_channels=slice(cond.shape[1], None))
        real_in = pair[:b].clone().requires_grad_(r1)
        both = d_image(torch.cat([real_in, pair[b:]], 0),
                       text_emb=text_emb.repeat(2, 1) if text_emb is not None else None)
        d_real = [[f[:b] for f in scale] for scale in both]
        d_fake = [[f[b:] for f in scale] for scale in both]
        return {"d_gan": self.gan.d_loss(d_real, d_fake)}, d_real, real_in


class ObjectAdversary:
    """Losses of the generator and of the object discriminator, which judges each object's crop
    (real or fake) and classifies it (``lambda_obj`` and ``lambda_aux``); ``__image__`` is no object."""

    def __init__(self, gan: GANLoss, lambda_obj: float, lambda_aux: float):
        self.gan, self.lambda_obj, self.lambda_aux = gan, lambda_obj, lambda_aux

    @staticmethod
    def _objects(batch: Batch):
        keep = batch.objs != 0
        return batch.boxes[keep], batch.obj_to_img[keep], batch.objs[keep]

    def generator_losses(self, d_object: nn.Module, fake: torch.Tensor, batch: Batch,
                         text_emb: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``d_object`` unwrapped and frozen, as the image D's in :meth:`ImageAdversary.generator_losses`."""
        boxes, obj_to_img, objs = self._objects(batch)
        if boxes.shape[0] == 0:
            return {}
        score, cls = d_object(fake, boxes, obj_to_img, text_emb=text_emb)
        return {"g_obj": self.lambda_obj * self.gan.g_loss(score),
                "g_obj_aux": self.lambda_aux * aux_class_loss(cls, objs)}

    def discriminator_losses(self, d_object: nn.Module, real: torch.Tensor, fake: torch.Tensor, batch: Batch,
                             text_emb: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One forward of ``d_object`` (possibly DDP-wrapped) over the real and detached fake crops."""
        boxes, obj_to_img, objs = self._objects(batch)
        n, b = boxes.shape[0], real.shape[0]
        if n == 0:
            return {}
        score, cls = d_object(torch.cat([real, fake.detach()], 0), boxes.repeat(2, 1),
                              torch.cat([obj_to_img, obj_to_img + b]),
                              text_emb=text_emb.repeat(2, 1) if text_emb is not None else None)
        return {"d_obj": self.lambda_obj * self.gan.d_loss(score[:n], score[n:]),
                "d_obj_aux": self.lambda_aux * aux_class_loss(cls[:n], objs)}
