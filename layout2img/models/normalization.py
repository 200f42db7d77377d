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
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
