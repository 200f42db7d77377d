"""Small layer builders shared by the generator, encoder and discriminators.

* :func:`norm_layer` - the feature normalisation by name (pix2pixHD uses instance norm without
  affine parameters: the FiLM text conditioning supplies the scale and shift instead).
* :func:`conv2d` - a convolution with "same" padding of a chosen mode (reflect / replicate / zero),
  optionally spectrally normalised (discriminators).
* :class:`FiLM` - feature-wise linear modulation ``x * (1 + gamma) + beta`` from a condition vector;
  exactly the identity when no condition is given, and initialised to the identity otherwise.
* :func:`init_weights` - pix2pixHD's N(0, 0.02) convolution initialisation.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

NORMS = ("instance", "batch", "none")
PADDINGS = {"reflect": "reflect", "replicate": "replicate", "zero": "zeros", "zeros": "zeros"}


def norm_layer(name: str, channels: int) -> nn.Module:
    """``'instance'`` (no affine, as pix2pixHD), ``'batch'`` or ``'none'``."""
    if name == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {name!r}; expected one of {', '.join(NORMS)}")


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: str = "zero",
    pad: int | None = None,
    spectral: bool = False,
    bias: bool = True,
) -> nn.Module:
    """Conv2d padded by ``kernel_size // 2`` (or ``pad``) with the given padding mode."""
    if padding not in PADDINGS:
        raise ConfigError(f"unknown padding {padding!r}; expected one of reflect, replicate, zero")
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride,
        padding=kernel_size // 2 if pad is None else pad,
        padding_mode=PADDINGS[padding], bias=bias,
    )
    if spectral:
        conv = nn.utils.parametrizations.spectral_norm(conv)
    return conv


class FiLM(nn.Module):
    """Feature-wise linear modulation of a (B, C, H, W) map by a (B, cond_dim) vector.

    ``gamma, beta = Linear(cond)``; ``x * (1 + gamma) + beta``. The linear map starts at zero so a
    freshly added condition changes nothing, and ``cond=None`` returns ``x`` itself.
    """

    def __init__(self, num_features: int, cond_dim: int):
        super().__init__()
        self.num_features = num_features
        self.cond_dim = cond_dim
        self.proj = nn.Linear(cond_dim, 2 * num_features)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            return x
        gamma, beta = self.proj(cond).to(x.dtype).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pixHD / SPADE 'normal' init: conv weights N(0, std), conv biases 0, BatchNorm N(1, std).

    FiLM projections are left alone (they must start at zero).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # spectral_norm keeps the raw weight under parametrizations.weight.original
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al., 2019) with per-object style modulation
    (ISLA-Norm, Sun & Wu 2020; SEAN, Zhu et al. 2020).

    ``x_hat * (1 + gamma) + beta``: ``x_hat`` a parameter-free norm of ``x``; ``gamma, beta`` two
    3x3 convs on a shared 3x3 conv + ReLU of the layout's shape channels (class map and edges),
    plus - when the layout has ``style_channels`` (its last channels: each object's style code
    spread inside its own mask) - a 1x1 conv of the style map. The 1x1 term is exactly a per-object
    scale and shift inside each object's mask, so an object's code modulates only its own pixels.
    The layout is resized to the features by area averaging (soft masks stay soft); gamma and beta
    start near zero. ``norm='batch'`` (SPADE's choice) is per-pixel at inference, so a change of
    one object's code then changes only the pixels its modulation reaches.
    """

    def __init__(self, num_features: int, layout_channels: int, hidden: int = 32, norm: str = "instance",
                 padding: str = "zero", style_channels: int = 0):
        super().__init__()
        if not 0 <= style_channels < layout_channels:
            raise ConfigError(f"SPADE: style_channels={style_channels} must lie in [0, {layout_channels})")
        # param-free: the affine part is what the layout predicts
        self.norm = nn.BatchNorm2d(num_features, affine=False) if norm == "batch" else norm_layer(norm, num_features)
        self.style_channels = style_channels
        shape_channels = layout_channels - style_channels
        self.shared = nn.Sequential(conv2d(shape_channels, hidden, 3, padding=padding), nn.ReLU(inplace=True))
        self.gamma = conv2d(hidden, num_features, 3, padding=padding)
        self.beta = conv2d(hidden, num_features, 3, padding=padding)
        # no bias: where no object is drawn the style map is zero, and so is its modulation
        self.style = conv2d(style_channels, 2 * num_features, 1, bias=False) if style_channels else None

    def forward(self, x: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        if layout.shape[-2:] != x.shape[-2:]:
            layout = nn.functional.adaptive_avg_pool2d(layout, x.shape[-2:])
        layout = layout.to(x.dtype)
        shape = layout[:, :layout.shape[1] - self.style_channels]
        h = self.shared(shape)
        gamma, beta = self.gamma(h), self.beta(h)
        if self.style is not None:
            g, b = self.style(layout[:, shape.shape[1]:]).chunk(2, dim=1)
            gamma, beta = gamma + g, beta + b
        return self.norm(x) * (1 + gamma) + beta
