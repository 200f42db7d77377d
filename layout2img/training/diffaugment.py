"""DiffAugment (Zhao et al., 2020): differentiable augmentations of everything a discriminator sees.

Real and generated images are augmented the same way before the discriminator, and the
generator's gradient flows through the augmentation, so the discriminator cannot memorise a small
training set while the generator never learns to produce augmented-looking images. A policy is a
comma-separated subset of ``color`` (brightness, saturation, contrast of the image channels),
``translation`` (an integer shift of up to 1/8 of the side, zero-padded) and ``cutout`` (a square of
half the side set to zero). Spatial transforms move the layout channels and the pixel labels with
the image; labels shifted in from outside or cut out become 0 ("unlabelled", ignored by the losses).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' or None -> () (off)."""
    parts = tuple(p.strip() for p in str(policy or "").split(",") if p.strip())
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ConfigError(f"train.diffaugment: unknown augmentation {bad[0]!r} (known: {', '.join(POLICIES)})")
    return parts


def _rand(shape, generator, device, groups: int = 1) -> torch.Tensor:
    """Uniform draws for ``shape[0] // groups`` samples, repeated ``groups`` times along dim 0."""
    rng_device = generator.device if generator is not None else device
    first = (shape[0] // groups, *shape[1:])
    draws = torch.rand(first, generator=generator, device=rng_device).to(device)
    return draws.repeat(groups, *([1] * (len(shape) - 1)))


def _shift_grid(dx: torch.Tensor, dy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A sampling grid that moves each image by (dx, dy) whole pixels."""
    ys = (torch.arange(h, device=dx.device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=dx.device, dtype=torch.float32) + 0.5) / w * 2 - 1
    gy = ys[None, :, None] - (dy.float() * 2 / h)[:, None, None]
    gx = xs[None, None, :] - (dx.float() * 2 / w)[:, None, None]
    return torch.stack([gx.expand(-1, h, w), gy.expand(-1, h, w)], dim=-1)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], image_channels: slice = slice(None),
                 labels: torch.Tensor | None = None, generator: torch.Generator | None = None, groups: int = 1):
    """Augment a (B, C, H, W) batch (``image_channels`` get the colour changes; every channel the
    spatial ones) and its (B, H, W) pixel labels alike. Returns ``(x, labels)``.

    ``groups`` > 1: the batch is ``groups`` stacked copies of the same scenes (e.g. real images
    then fakes), and each scene gets the same transform in every copy - so feature matching and
    LabelMix still compare like with like.
    """
    if x.shape[0] % groups:
        raise ConfigError(f"diff_augment: batch of {x.shape[0]} is not {groups} equal groups")
    if not policy:
        return x, labels
    b, _, h, w = x.shape
    device, dtype = x.device, x.dtype
    if "color" in policy:
        img = x[:, image_channels].float()
        img = img + (_rand((b, 1, 1, 1), generator, device, groups) - 0.5)
        mean = img.mean(dim=1, keepdim=True)
        img = (img - mean) * (_rand((b, 1, 1, 1), generator, device, groups) * 2) + mean
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * (_rand((b, 1, 1, 1), generator, device, groups) + 0.5) + mean
        x = x.clone()
        x[:, image_channels] = img.to(dtype)
    if "translation" in policy:
        sx, sy = max(1, w // 8), max(1, h // 8)
        dx = (_rand((b,), generator, device, groups) * (2 * sx + 1)).floor() - sx
        dy = (_rand((b,), generator, device, groups) * (2 * sy + 1)).floor() - sy
        grid = _shift_grid(dx, dy, h, w).to(dtype)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        if labels is not None:
            labels = F.grid_sample(labels[:, None].to(dtype), grid, mode="nearest", padding_mode="zeros",
                                   align_corners=False)[:, 0].round().long()
    if "cutout" in policy:
        ch, cw = h // 2, w // 2
        cy = (_rand((b,), generator, device, groups) * (h - ch + 1)).floor().long()
        cx = (_rand((b,), generator, device, groups) * (w - cw + 1)).floor().long()
        ys = torch.arange(h, device=device)[None, :, None]
        xs = torch.arange(w, device=device)[None, None, :]
        inside = ((ys >= cy[:, None, None]) & (ys < (cy + ch)[:, None, None])
                  & (xs >= cx[:, None, None]) & (xs < (cx + cw)[:, None, None]))
        x = x * (~inside)[:, None].to(dtype)
        if labels is not None:
            labels = labels.masked_fill(inside, 0)
    return x, labels
