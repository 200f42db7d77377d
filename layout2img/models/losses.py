"""Training losses, tensors in and out: adversarial, feature matching, perceptual, layout and appearance terms.

Discriminator outputs may be a tensor of logits, a list of logits (one per scale) or a list of
lists of feature maps with the logits last (``MultiscaleDiscriminator``); adversarial terms are
averaged over each logit map and *summed* over scales, as pix2pixHD does.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

GAN_MODES = ("hinge", "lsgan", "bce")
PERCEPTUAL_BACKBONES = ("vgg19", "patch_mmd", "none")
KL_REDUCTIONS = ("mean", "sum", "none")
#: pix2pixHD's VGG loss layer weights, shallow to deep
PERCEPTUAL_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _logits(output) -> list[torch.Tensor]:
    """Logit maps of a discriminator output, one per scale."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [o[-1] if isinstance(o, (list, tuple)) else o for o in output]


class GANLoss:
    """Adversarial losses for D and G.

    ``hinge``: D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))], G = -E[D(G(z))].
    ``lsgan``: D = E[(D(x) - 1)^2] + E[D(G(z))^2], G = E[(D(G(z)) - 1)^2] (pix2pixHD halves the D loss
    in its model; here that factor is the caller's weight).
    ``bce``: non-saturating, D = E[softplus(-D(x))] + E[softplus(D(G(z)))], G = E[softplus(-D(G(z)))].
    """

    def __init__(self, mode: str = "hinge"):
        if mode not in GAN_MODES:
            raise ConfigError(f"unknown GAN loss {mode!r}; expected one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "hinge":
            return F.relu(1 - x).mean()
        if self.mode == "lsgan":
            return (x - 1).pow(2).mean()
        return F.softplus(-x).mean()

    def _fake(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "hinge":
            return F.relu(1 + x).mean()
        if self.mode == "lsgan":
            return x.pow(2).mean()
        return F.softplus(x).mean()

    def d_loss(self, real_out, fake_out) -> torch.Tensor:
        return sum(self._real(r) for r in _logits(real_out)) + sum(self._fake(f) for f in _logits(fake_out))

    def g_loss(self, fake_out) -> torch.Tensor:
        if self.mode == "hinge":
            return sum(-f.float().mean() for f in _logits(fake_out))
        return sum(self._real(f) for f in _logits(fake_out))


def texture_mask(labels: torch.Tensor, stuff_classes: torch.Tensor, margin: int) -> torch.Tensor:
    """(B, H, W) per-pixel classes -> (B, 1, H, W) float: 1 on stuff pixels farther than ``margin``
    pixels from every thing (textures whose phase the layout does not fix: bricks, waves, grass),
    0 on things, on the band round them (rims, drop shadows) and on unlabelled pixels."""
    is_stuff = stuff_classes.to(labels.device)[labels]
    labelled = labels != 0
    thing = (labelled & ~is_stuff)[:, None].float()
    near_thing = F.max_pool2d(thing, 2 * margin + 1, stride=1, padding=margin) if margin > 0 else thing
    return (labelled & is_stuff)[:, None].float() * (1 - near_thing)


def texture_pooled_l1(diff: torch.Tensor, texture: torch.Tensor, pool: int) -> torch.Tensor:
    """A (B, C, H, W) difference judged per pixel off ``texture`` (B, 1, H, W) and through its
    ``pool`` x ``pool`` block means on it: the mean of |diff| there plus the mean |block mean|.
    ``pool`` 1 (or no texture) is the plain mean |diff|."""
    per_pixel = (diff.abs() * (1 - texture)).mean()
    return per_pixel + F.avg_pool2d(diff * texture, pool, ceil_mode=True).abs().mean()


def feature_matching_loss(real_feats: Sequence[Sequence[torch.Tensor]], fake_feats: Sequence[Sequence[torch.Tensor]],
                          num_D: int | None = None, n_layers: int | None = None, lambda_feat: float = 10.0,
                          texture: torch.Tensor | None = None, texture_pool: int = 1) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching.

    ``sum_{scales} sum_{features but the logits} (1 / num_D) * (4 / (n_layers + 1)) * lambda_feat *
    L1(fake, real.detach())``. ``num_D`` and ``n_layers`` default to what the lists show
    (``n_layers + 2`` maps per scale). With ``texture`` ((B, 1, H, W) in image pixels, see
    :func:`texture_mask`) the feature cells wholly on it are compared through block means
    ``texture_pool`` image pixels wide (:func:`texture_pooled_l1`), the others cell by cell.
    """
    if len(real_feats) != len(fake_feats) or any(len(r) != len(f) for r, f in zip(real_feats, fake_feats)):
        raise ConfigError("feature_matching_loss: real and fake discriminator outputs differ in structure")
    num_D = len(fake_feats) if num_D is None else num_D
    n_layers = len(fake_feats[0]) - 2 if n_layers is None else n_layers
    weight = lambda_feat * (1.0 / num_D) * (4.0 / (n_layers + 1))
    loss = fake_feats[0][0].new_zeros((), dtype=torch.float32)
    for real_scale, fake_scale in zip(real_feats, fake_feats):
        for real, fake in zip(real_scale[:-1], fake_scale[:-1]):
            if texture is None:
                loss = loss + weight * F.l1_loss(fake.float(), real.detach().float())
                continue
            cells = 1 - F.adaptive_max_pool2d(1 - texture.float(), fake.shape[-2:])  # wholly on the texture
            pool = max(1, round(texture_pool * fake.shape[-1] / texture.shape[-1]))
            loss = loss + weight * texture_pooled_l1(fake.float() - real.detach().float(), cells, pool)
    return loss


def check_perceptual_backbone(backbone: str) -> str:
    """``backbone`` if :class:`PerceptualLoss` takes it, else a one-line :class:`ConfigError` naming
    ``loss.perceptual`` and the choices. ``inception`` gets its own reason: the FID network is the
    metric's, and training on it would game the metric (it was an option until removed)."""
    choices = f"expected one of {', '.join(PERCEPTUAL_BACKBONES)} (or auto)"
    if backbone == "inception":
        raise ConfigError(f"loss.perceptual: 'inception' is the FID network, which is never a training loss "
                          f"(it would game the metric); {choices}")
    if backbone not in PERCEPTUAL_BACKBONES:
        raise ConfigError(f"loss.perceptual: unknown perceptual backbone {backbone!r}; {choices}")
    return backbone


def resolve_perceptual(backbone: str) -> str:
    """A ``loss.perceptual`` setting to a backbone: ``auto`` is ``vgg19`` when torchvision's VGG19
    weights are already in the torch hub cache and ``none`` otherwise (never a download). Any other
    name must be one :class:`PerceptualLoss` takes, whatever the loss's weight."""
    from .perceptual import default_vgg19_path

    if backbone == "auto":
        return "vgg19" if default_vgg19_path().is_file() else "none"
    return check_perceptual_backbone(backbone)


class PerceptualLoss(nn.Module):
    """``sum_i w_i * L1(phi_i(fake), phi_i(real).detach())`` over a frozen backbone's layers.

    ``backbone``: ``'vgg19'`` (torchvision VGG19; ``weights`` = path of its state dict, default
    ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``; never downloaded), ``'patch_mmd'`` (no
    weights: the MMD of local patch distributions, :class:`~.patch_mmd.LocalPatchMMD`, whose value
    the loss is; ``weights`` and ``layer_weights`` unused) or ``'none'`` (always 0); any other name is
    refused by :func:`check_perceptual_backbone`. The FID Inception is never a backbone here: a
    training loss on the metric's own network would game the metric.
    ``layer_weights`` default to pix2pixHD's ``1/32, 1/16, 1/8, 1/4, 1``. Computed in float32.
    """

    def __init__(self, backbone: str = "vgg19", weights: str | os.PathLike | None = None,
                 layer_weights: Sequence[float] | None = None):
        super().__init__()
        from .patch_mmd import LocalPatchMMD
        from .perceptual import VGG19Features

        check_perceptual_backbone(backbone)
        self.backbone_name = backbone
        if backbone == "vgg19":
            self.backbone = VGG19Features(weights)
        elif backbone == "patch_mmd":
            self.backbone = LocalPatchMMD()
        else:
            self.backbone = None
        self.layer_weights = tuple(PERCEPTUAL_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        if backbone == "vgg19" and len(self.layer_weights) != 5:
            raise ConfigError(f"perceptual loss: expected 5 layer weights, got {len(self.layer_weights)}")

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.backbone is None:
            return fake.new_zeros((), dtype=torch.float32)
        if self.backbone_name == "patch_mmd":
            return self.backbone(fake, real)
        with torch.autocast(fake.device.type, enabled=False):
            fake_feats = self.backbone(fake.float())
            with torch.no_grad():
                real_feats = self.backbone(real.float())
            loss = fake.new_zeros((), dtype=torch.float32)
            for w, f, r in zip(self.layer_weights, fake_feats, real_feats):
                loss = loss + w * F.l1_loss(f, r)
        return loss


def _masked_mean(per_object: torch.Tensor, objs: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (O,) values over the kept objects (not ``__image__``, and ``mask`` if given); 0 if none."""
    keep = torch.ones_like(per_object, dtype=torch.bool)
    if objs is not None:
        keep = keep & (objs != 0)
    if mask is not None:
        keep = keep & mask.bool()
    w = keep.to(per_object.dtype)
    return (per_object * w).sum() / w.sum().clamp_min(1)


def box_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor, objs: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, kind: str = "smooth_l1", beta: float = 1 / 9) -> torch.Tensor:
    """Regression of normalised boxes (O, 4), averaged over coordinates and the kept objects.

    ``objs`` (O,) drops ``__image__`` (index 0, its box is fixed); ``mask`` (O,) bool keeps a subset
    (e.g. ``boxes_known``). ``kind``: ``'smooth_l1'`` (``beta`` = L1/L2 switch), ``'l1'`` or ``'mse'``.
    """
    if kind == "smooth_l1":
        per = F.smooth_l1_loss(pred_boxes.float(), target_boxes.float(), reduction="none", beta=beta)
    elif kind == "l1":
        per = F.l1_loss(pred_boxes.float(), target_boxes.float(), reduction="none")
    elif kind == "mse":
        per = F.mse_loss(pred_boxes.float(), target_boxes.float(), reduction="none")
    else:
        raise ConfigError(f"unknown box loss {kind!r}; expected 'smooth_l1', 'l1' or 'mse'")
    return _masked_mean(per.mean(dim=1), objs, mask)


def mask_loss(mask_logits: torch.Tensor, target_masks: torch.Tensor, objs: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross entropy (with logits) of box-relative masks (O, M, M), averaged as :func:`box_loss`."""
    per = F.binary_cross_entropy_with_logits(mask_logits.float(), target_masks.float(), reduction="none")
    return _masked_mean(per.flatten(1).mean(dim=1), objs, mask)


def aux_class_loss(class_logits: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the object discriminator's classifier (O, num_classes) against labels (O,)."""
    if class_logits.shape[0] == 0:
        return class_logits.float().sum()
    return F.cross_entropy(class_logits.float(), objs.long())


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over code dimensions, averaged over objects."""
    if mu.shape[0] == 0:
        return mu.float().sum()
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def r1_penalty(real_out, real_images: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x D(x)||^2`` on real images (Mescheder et al., 2018); multiply by gamma / 2.

    ``real_images`` must have ``requires_grad=True`` before the discriminator ran; all scales'
    logits are summed. The result keeps the graph (``create_graph=True``) so D can train on it.
    """
    if not real_images.requires_grad:
        raise ConfigError("r1_penalty: real_images must require grad (call real_images.requires_grad_() before D)")
    total = sum(o.float().sum() for o in _logits(real_out))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()


def label_map(instances: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
    """(B, H, W) instance ids (0 = none, else 1 + packed object index) -> (B, H, W) class ids
    (0 where no object is drawn: such pixels are ignored by the segmentation losses)."""
    table = torch.cat([objs.new_zeros(1), objs])
    return table[instances]


def _class_balance(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel weights inversely proportional to each class's pixel count in the batch (OASIS),
    normalised so the present classes share the weight equally; 0 for unlabelled pixels."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes).float()
    counts[0] = 0
    present = (counts > 0).sum().clamp(min=1)
    weights = torch.where(counts > 0, labels.numel() / (counts.clamp(min=1) * present), counts.new_zeros(()))
    return weights[labels]


def segmentation_real_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OASIS: class-balanced cross-entropy of the per-pixel logits (channel 0 = fake) against the
    layout's classes: what D wants for real images, and what G wants for its fakes."""
    weights = _class_balance(labels, logits.shape[1])
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * weights).sum() / weights.gt(0).sum().clamp(min=1)


def segmentation_fake_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OASIS: every labelled pixel of a generated image should be classified as "fake" (channel 0)."""
    ce = F.cross_entropy(logits.float(), torch.zeros_like(labels), reduction="none")
    keep = labels.gt(0)
    return (ce * keep).sum() / keep.sum().clamp(min=1)


def labelmix_inputs(real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """OASIS's LabelMix: real and fake images mixed by a random binary choice per class.
    Returns ``(mixed (B, 3, H, W), mask (B, 1, H, W))`` (mask 1 = the real image's pixel)."""
    rng_device = generator.device if generator is not None else labels.device
    choice = torch.randint(0, 2, (int(labels.max()) + 1,), generator=generator, device=rng_device).to(labels.device)
    mask = choice[labels][:, None].to(real.dtype)
    return mask * real + (1 - mask) * fake, mask


def labelmix_loss(out_mixed: torch.Tensor, out_real: torch.Tensor, out_fake: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The LabelMix consistency: D's output on the mix should be the same mix of its outputs,
    ``mean |D(mix) - (mask * D(real) + (1 - mask) * D(fake))|^2``."""
    target = mask * out_real.float() + (1 - mask) * out_fake.float()
    return (out_mixed.float() - target).pow(2).mean()


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) of diagonal Gaussians (rows, dims), summed over
    the dimensions; ``reduction``: ``'mean'`` over the rows (a scalar), ``'sum'``, or ``'none'`` (one
    value per row)."""
    if reduction not in KL_REDUCTIONS:
        raise ConfigError(f"gaussian_kl: reduction must be one of {', '.join(KL_REDUCTIONS)}, got {reduction!r}")
    kl = (0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)).sum(dim=1)
    if reduction == "none":
        return kl
    return kl.mean() if reduction == "mean" else kl.sum()
