"""Where each pixel is: Fourier features of the pixel's coordinates for the decoder's SPADE layers."""
from __future__ import annotations

import math

import torch


def position_features(frequencies: int, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """(1, 4 * frequencies, H, W): sin and cos of x and of y at ``frequencies`` log-spaced frequencies,
    from one cycle per image side to a period of 4 pixels (Fourier features, Tancik et al. 2020).

    A fixed-phase map of where each pixel is: convolutions are translation-equivariant and a
    class map is flat inside a region, so without it a generator has only padding to place a 2D
    pattern (a wall's bricks) by (Xu et al., CVPR 2021, "Positional Encoding as Spatial Inductive
    Bias in GANs").
    """
    if frequencies <= 0:
        return torch.zeros(1, 0, height, width, device=device, dtype=dtype)
    top = max(min(height, width) / 4.0, 1.0)  # cycles per image side at a 4-pixel period
    cycles = torch.logspace(0.0, math.log10(top), frequencies, device=device)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    ay = 2 * torch.pi * cycles[:, None, None] * ys[None, :, None].expand(-1, -1, width)
    ax = 2 * torch.pi * cycles[:, None, None] * xs[None, None, :].expand(-1, height, -1)
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], 0)[None].to(dtype)


def with_position(layout: torch.Tensor, shape_channels: int, frequencies: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape ⊕ position, shape ⊕ position ⊕ style): what a decoder SPADE reads, without and with
    the style channels (the layout's channels after ``shape_channels``)."""
    shape = layout[:, :shape_channels]
    if frequencies <= 0:
        return shape, layout
    pe = position_features(frequencies, *layout.shape[-2:], device=layout.device, dtype=layout.dtype)
    shape = torch.cat([shape, pe.expand(layout.shape[0], -1, -1, -1)], 1)
    return shape, torch.cat([shape, layout[:, shape_channels:]], 1)


def coordinates_in_boxes(boxes: torch.Tensor, weights: torch.Tensor, obj_to_img: torch.Tensor,
                         num_images: int) -> torch.Tensor:
    """(B, 2, H, W): each pixel's place inside the box of the object it shows, x then y in [-1, 1]
    across the box (the centre 0), weighted by the objects' visible shares ``weights`` (O, H, W).

    Where a thing is lit, where its highlight and its rim fall, is a function of this place; the
    class map and the style code are flat inside the object, so convolutions would have to
    rebuild it from the mask's edges (a box-level CoordConv, Liu et al. 2018).
    """
    H, W = weights.shape[-2:]
    boxes = boxes.detach().to(weights.dtype)
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp_min(0.5 / max(H, W))
    xs = (torch.arange(W, device=weights.device, dtype=weights.dtype) + 0.5) / W
    ys = (torch.arange(H, device=weights.device, dtype=weights.dtype) + 0.5) / H
    u = ((xs[None] - centre[:, :1]) / half[:, :1]).clamp(-1.5, 1.5)  # (O, W)
    v = ((ys[None] - centre[:, 1:]) / half[:, 1:]).clamp(-1.5, 1.5)  # (O, H)
    per_object = torch.stack([weights * u[:, None, :], weights * v[:, :, None]], 1)  # (O, 2, H, W)
    out = weights.new_zeros(num_images, 2, H, W)
    return out.index_add_(0, obj_to_img, per_object)
