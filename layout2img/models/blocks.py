"""The generators' building blocks: pix2pixHD's conv / upsampling / residual blocks and their SPADE
and layout-skip variants (the architecture part of SPADE's split by role)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .normalization import SPADE, FiLM, conv2d, norm_layer


def downsample_layout(x: torch.Tensor) -> torch.Tensor:
    """Halve the resolution as pix2pixHD does: 3x3 average pooling, stride 2, padding not counted."""
    return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)


def conv_block(in_ch: int, out_ch: int, kernel_size: int, stride: int, norm: str, padding: str) -> nn.Sequential:
    """conv -> norm -> ReLU."""
    return nn.Sequential(
        conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding),
        norm_layer(norm, out_ch),
        nn.ReLU(inplace=True),
    )


def upsample_block(in_ch: int, out_ch: int, norm: str, padding: str, mode: str) -> nn.Sequential:
    """x2 upsampling -> norm -> ReLU, by nearest + 3x3 conv (default) or a transposed conv."""
    if mode == "nearest":
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), conv2d(in_ch, out_ch, 3, padding=padding)]
    elif mode == "transpose":
        layers = [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)]
    else:
        raise ConfigError(f"unknown upsample {mode!r}; expected 'nearest' or 'transpose'")
    return nn.Sequential(*layers, norm_layer(norm, out_ch), nn.ReLU(inplace=True))


class LayoutSkipUpsample(nn.Module):
    """x2 upsampling whose conv also sees the layout at the new resolution (sg2im's CRN idea).

    pix2pixHD's global net has no skip connections, so object shapes must survive an 8x8
    bottleneck; feeding the layout again at every decoder scale keeps edges where the masks say.
    """

    def __init__(self, in_ch: int, layout_ch: int, out_ch: int, norm: str, padding: str):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = conv2d(in_ch + layout_ch, out_ch, 3, padding=padding)
        self.norm = norm_layer(norm, out_ch)

    def forward(self, h: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(torch.cat([self.up(h), layout], 1))))


def rgb_head(in_ch: int, out_ch: int, padding: str) -> nn.Sequential:
    """7x7 conv -> tanh."""
    return nn.Sequential(conv2d(in_ch, out_ch, 7, padding=padding), nn.Tanh())


class ResnetBlock(nn.Module):
    """pad-conv-norm-[FiLM]-ReLU-pad-conv-norm, plus the input.

    With ``layout_channels > 0`` both norms are :class:`~.normalization.SPADE` on the layout.
    """

    def __init__(self, dim: int, norm: str = "instance", padding: str = "reflect", text_dim: int = 0,
                 layout_channels: int = 0, spade_hidden: int = 32):
        super().__init__()
        self.conv1 = conv2d(dim, dim, 3, padding=padding)
        self.spade = layout_channels > 0
        self.norm1 = SPADE(dim, layout_channels, spade_hidden, norm) if self.spade else norm_layer(norm, dim)
        self.film = FiLM(dim, text_dim) if text_dim > 0 else None
        self.conv2 = conv2d(dim, dim, 3, padding=padding)
        self.norm2 = SPADE(dim, layout_channels, spade_hidden, norm) if self.spade else norm_layer(norm, dim)

    def forward(self, x: torch.Tensor, text_emb: torch.Tensor | None = None,
                layout: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv1(x)
        h = self.norm1(c, layout) if self.spade else self.norm1(c)
        if self.film is not None:
            h = self.film(h, text_emb)
        c = self.conv2(F.relu(h))
        return x + (self.norm2(c, layout) if self.spade else self.norm2(c))


class SpadeUpsample(nn.Module):
    """x2 nearest upsampling -> 3x3 conv -> SPADE(layout, per-object style) -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, layout_channels: int, norm: str, padding: str, hidden: int,
                 style_channels: int = 0):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = conv2d(in_ch, out_ch, 3, padding=padding)
        self.norm = SPADE(out_ch, layout_channels, hidden, norm, style_channels=style_channels)

    def forward(self, h: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(self.up(h)), layout))
