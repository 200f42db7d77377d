"""pix2pixHD-style generator: a global network, optional local enhancers, FiLM text conditioning.

The generator eats the layout tensor ``models/layout.py`` builds - class channels, an instance-edge
channel and the per-object style-code channels, (B, C, H, W) - and returns an image in [-1, 1].
The style channels are the noise input: the appearance encoder's codes in training, codes from
N(0, I) or per-class clusters (``encoder.py``) at inference, so one object can be restyled.

Architecture (Wang et al., 2018, "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs"):

* Global network G1: 7x7 conv, ``n_downsample`` stride-2 convs doubling the width, ``n_blocks``
  residual blocks, as many 2x upsamplings halving it, 7x7 conv + tanh.
* Local enhancer G2 (``n_local_enhancers`` of them, each doubling the resolution): a 7x7 conv and
  one stride-2 conv on the full-resolution layout, *added* to G1's last feature map, then
  ``n_blocks_local`` residual blocks, one upsampling and (for the last one) the 7x7 + tanh head.
  ``ngf`` is the width of the finest enhancer; G1 runs ``ngf * 2**n_local_enhancers`` wide on the
  layout average-pooled ``2**n_local_enhancers`` times, as in pix2pixHD.
* Coarse-to-fine schedule: ``stage='global'`` runs G1 alone (its own RGB head) on the downsampled
  layout, for training it first at the lower resolution; ``stage='full'`` runs everything (G1's RGB
  head is then unused). The trainer freezes the global net (:meth:`Generator.freeze_global`) for
  ``fix_global_steps`` after switching to ``'full'``.

Differences from pix2pixHD, on purpose:

* Upsampling is nearest-neighbour x2 followed by a 3x3 conv instead of a transposed convolution,
  which avoids checkerboard artefacts (Odena et al., 2016, "Deconvolution and Checkerboard
  Artifacts"); ``upsample='transpose'`` restores the original.
* ``layout_skips=True`` feeds the layout again at every decoder scale of G1 (as sg2im's cascaded
  refinement network does), so shapes need not survive the bottleneck; off by default (pix2pixHD).
* Every residual block carries a :class:`~.normalization.FiLM` after its first normalisation,
  driven by a text embedding; without text the block is exactly pix2pixHD's.

The forward pass has no data-dependent Python control flow, so ``torch.compile(fullgraph=True)``
traces it whole, with or without text; it works in ``channels_last`` and under bf16 autocast.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .blocks import (LayoutSkipUpsample, ResnetBlock, SpadeUpsample, conv_block, downsample_layout, rgb_head,
                     upsample_block)
from .normalization import init_weights
from .position import with_position

STAGES = ("full", "global")
#: How the layout reaches the decoder: as the input only (pix2pixHD) or by SPADE modulation too.
CONDITIONINGS = ("input", "spade")


class GlobalGenerator(nn.Module):
    """pix2pixHD's G1. :meth:`features` stops before the RGB head (what a local enhancer adds to).

    ``conditioning='spade'``: the residual blocks and the decoder normalise with SPADE (param-free
    BatchNorm, as SPADE) on the class map and edges, and each object's style code (the last
    ``style_channels`` of the layout) modulates the decoder blocks at >= 1/4 of the full image
    size inside its own mask. The encoder half reads the class map and edges as its input, as
    pix2pixHD; the codes never pass through it or the bottleneck, whose receptive fields span the
    image, so an object's code changes the pixels near that object only. ``scale_below_full``:
    log2 of how much smaller than the final image this net works (the number of enhancers).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, ngf: int = 64, n_downsample: int = 3,
                 n_blocks: int = 6, text_dim: int = 0, norm: str = "instance", padding: str = "reflect",
                 upsample: str = "nearest", layout_skips: bool = False, conditioning: str = "input",
                 spade_hidden: int = 32, style_channels: int = 0, scale_below_full: int = 0,
                 position_frequencies: int = 0):
        super().__init__()
        self.layout_skips = layout_skips
        self.position_frequencies = position_frequencies
        self.spade = conditioning == "spade"
        self.shape_channels = in_channels - style_channels if self.spade else in_channels
        self.stem = conv_block(self.shape_channels, ngf, 7, 1, norm, padding)
        self.down = nn.Sequential(*[
            conv_block(ngf * 2 ** i, ngf * 2 ** (i + 1), 3, 2, norm, padding) for i in range(n_downsample)
        ])
        width = ngf * 2 ** n_downsample
        self.bottleneck_channels = width  # channels of encode()'s output
        block_norm = "batch" if self.spade else norm
        spade_channels = self.shape_channels if self.spade else 0
        self.blocks = nn.ModuleList([ResnetBlock(width, block_norm, padding, text_dim, spade_channels, spade_hidden)
                                     for _ in range(n_blocks)])
        if self.spade:
            styled = [2 ** (i + scale_below_full) <= 4 for i in range(n_downsample)]
            extra = 4 * position_frequencies
            self.up = nn.ModuleList([
                SpadeUpsample(ngf * 2 ** (i + 1), ngf * 2 ** i,
                              extra + (in_channels if styled[i] else self.shape_channels),
                              block_norm, padding, spade_hidden, style_channels if styled[i] else 0)
                for i in reversed(range(n_downsample))
            ])
        elif layout_skips:
            self.up = nn.ModuleList([
                LayoutSkipUpsample(ngf * 2 ** (i + 1), in_channels, ngf * 2 ** i, norm, padding)
                for i in reversed(range(n_downsample))
            ])
        else:
            self.up = nn.Sequential(*[
                upsample_block(ngf * 2 ** (i + 1), ngf * 2 ** i, norm, padding, upsample)
                for i in reversed(range(n_downsample))
            ])
        self.to_rgb = rgb_head(ngf, out_channels, padding)

    def encode(self, layout: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Stem, downsampling and residual blocks: the features entering the decoder."""
        shape = layout[:, :self.shape_channels]
        h = self.down(self.stem(shape))
        for block in self.blocks:
            h = block(h, text_emb, shape if self.spade else None)
        return h

    def decode(self, h: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """The upsampling path (``layout`` feeds it with SPADE or ``layout_skips``)."""
        if self.spade:
            shape, styled = with_position(layout, self.shape_channels, self.position_frequencies)
            for up in self.up:
                h = up(h, styled if up.norm.style_channels else shape)
            return h
        if not self.layout_skips:
            return self.up(h)
        pyramid = [layout]  # the layout at each decoder output resolution, finest first
        for _ in range(len(self.up) - 1):
            pyramid.append(downsample_layout(pyramid[-1]))
        for i, up in enumerate(self.up):
            h = up(h, pyramid[len(self.up) - 1 - i])
        return h

    def features(self, layout: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(layout, text_emb), layout)

    def forward(self, layout: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.to_rgb(self.features(layout, text_emb))


class LocalEnhancer(nn.Module):
    """pix2pixHD's G2 at one scale: ``out = up(blocks(down(layout) + coarse_features))``; with
    ``conditioning='spade'`` as :class:`GlobalGenerator` (codes modulate only its upsampling)."""

    def __init__(self, in_channels: int, ngf: int, n_blocks: int = 3, text_dim: int = 0,
                 norm: str = "instance", padding: str = "reflect", upsample: str = "nearest",
                 out_channels: int | None = None, conditioning: str = "input", spade_hidden: int = 32,
                 style_channels: int = 0, position_frequencies: int = 0):
        super().__init__()
        self.spade = conditioning == "spade"
        self.position_frequencies = position_frequencies
        self.shape_channels = in_channels - style_channels if self.spade else in_channels
        self.down = nn.Sequential(
            conv_block(self.shape_channels, ngf, 7, 1, norm, padding),
            conv_block(ngf, 2 * ngf, 3, 2, norm, padding),
        )
        block_norm = "batch" if self.spade else norm
        spade_channels = self.shape_channels if self.spade else 0
        self.blocks = nn.ModuleList([ResnetBlock(2 * ngf, block_norm, padding, text_dim, spade_channels, spade_hidden)
                                     for _ in range(n_blocks)])
        self.up = (SpadeUpsample(2 * ngf, ngf, in_channels + 4 * position_frequencies, block_norm, padding,
                                 spade_hidden, style_channels)
                   if self.spade else upsample_block(2 * ngf, ngf, norm, padding, upsample))
        # only the finest enhancer turns features into pixels
        self.to_rgb = rgb_head(ngf, out_channels, padding) if out_channels is not None else nn.Identity()

    def features(self, layout: torch.Tensor, coarse: torch.Tensor, text_emb: torch.Tensor | None = None):
        """Everything but the RGB head: what the next enhancer adds to, or the head turns into pixels."""
        shape = layout[:, :self.shape_channels]
        h = self.down(shape) + coarse
        for block in self.blocks:
            h = block(h, text_emb, shape if self.spade else None)
        if not self.spade:
            return self.up(h)
        return self.up(h, with_position(layout, self.shape_channels, self.position_frequencies)[1])

    def forward(self, layout: torch.Tensor, coarse: torch.Tensor, text_emb: torch.Tensor | None = None):
        return self.to_rgb(self.features(layout, coarse, text_emb))


class Generator(nn.Module):
    """Layout (B, in_channels, H, W) [+ text (B, text_dim)] -> image (B, out_channels, H', W') in [-1, 1].

    ``H'`` is ``H`` for ``stage='full'`` and ``H / 2**n_local_enhancers`` for ``stage='global'``.
    ``H`` and ``W`` must be multiples of ``2**(n_downsample + n_local_enhancers)``.
    ``forward(..., modulate={point: fn})`` replaces the features at a named point by ``fn(features)``
    (the rendering hook of editing; see :meth:`forward`). ``noise_channels``: OASIS's per-pixel noise between the
    layout's edge and style channels, read as shape (:attr:`in_channels` = argument ``in_channels`` + it).
    ``position_frequencies``: :func:`~.position.position_features` beside the class map in every decoder SPADE
    (``conditioning='spade'`` only; made inside, so not part of :attr:`in_channels`). ``box_coordinates``:
    the layout carries each pixel's place in its object's box on the shape side (2 more :attr:`in_channels`).
    """

    #: Where :meth:`forward` can modulate features, coarsest first.
    MODULATION_POINTS = ("decoder", "output", "rgb")

    def __init__(self, in_channels: int, out_channels: int = 3, ngf: int = 64, n_downsample: int = 3,
                 n_blocks: int = 6, n_local_enhancers: int = 0, n_blocks_local: int = 3, text_dim: int = 0,
                 norm: str = "instance", padding: str = "reflect", upsample: str = "nearest",
                 layout_skips: bool = False, conditioning: str = "input", spade_hidden: int = 32,
                 style_channels: int = 0, noise_channels: int = 0, position_frequencies: int = 0,
                 box_coordinates: bool = False):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ConfigError(f"unknown generator conditioning {conditioning!r}; expected one of "
                              f"{', '.join(CONDITIONINGS)}")
        if min(in_channels - 1, ngf - 1, n_downsample, n_blocks, n_local_enhancers, noise_channels,
               position_frequencies) < 0:
            raise ConfigError(
                f"Generator: invalid sizes in_channels={in_channels} ngf={ngf} n_downsample={n_downsample} "
                f"n_blocks={n_blocks} n_local_enhancers={n_local_enhancers} noise_channels={noise_channels} "
                f"position_frequencies={position_frequencies}")
        if position_frequencies and conditioning != "spade":
            raise ConfigError(f"Generator: position_frequencies={position_frequencies} needs conditioning='spade' "
                              f"(the decoder's SPADE layers read them), got {conditioning!r}")
        self.noise_channels, self.box_coordinates, self.text_dim = noise_channels, bool(box_coordinates), text_dim
        self.in_channels = in_channels + noise_channels + 2 * self.box_coordinates
        self.out_channels, self.n_downsample, self.n_local_enhancers = out_channels, n_downsample, n_local_enhancers
        in_channels = self.in_channels
        self.global_net = GlobalGenerator(in_channels, out_channels, ngf * 2 ** n_local_enhancers, n_downsample,
                                          n_blocks, text_dim, norm, padding, upsample, layout_skips, conditioning,
                                          spade_hidden, style_channels, n_local_enhancers, position_frequencies)
        # enhancers[0] is the coarsest (right above G1), enhancers[-1] the finest
        self.enhancers = nn.ModuleList([
            LocalEnhancer(in_channels, ngf * 2 ** (n_local_enhancers - n), n_blocks_local, text_dim, norm, padding,
                          upsample, out_channels if n == n_local_enhancers else None, conditioning, spade_hidden,
                          style_channels, position_frequencies)
            for n in range(1, n_local_enhancers + 1)
        ])
        init_weights(self)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.n_downsample + self.n_local_enhancers)

    def freeze_global(self, frozen: bool) -> None:
        """Hold the global net fixed (pix2pixHD's ``niter_fix_global``: the enhancers train alone) or release it."""
        self.global_net.requires_grad_(not frozen)

    def modulation_channels(self, point: str, stage: str = "full") -> int:
        """Channels of the features at a :data:`MODULATION_POINTS` name (what a modulation sees)."""
        self._check_modulate({point: None})
        if point == "decoder":
            return self.global_net.bottleneck_channels
        head = self.enhancers[-1].to_rgb if self.n_local_enhancers and stage == "full" else self.global_net.to_rgb
        return head[0].in_channels if point == "output" else head[0].out_channels

    @property
    def trunk_sees_style(self) -> bool:
        """Whether the global net's encoder reads the style channels (``conditioning='input'``):
        then its output (:meth:`trunk`) changes with the style codes and cannot be reused."""
        return not self.global_net.spade

    def trunk(self, layout: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """The global net's features entering its decoder (stem, downsampling, residual blocks):
        what ``forward(trunk=...)`` reuses when only the style codes or the modulations change
        (an edit's steps), so each step runs the decoder alone."""
        self._check_inputs(layout, text_emb, "full")
        return self.global_net.encode(self._pyramid(layout)[-1], text_emb)

    def _pyramid(self, layout: torch.Tensor) -> list[torch.Tensor]:
        """The layout at each generator's input resolution, finest first."""
        pyramid = [layout]
        for _ in range(self.n_local_enhancers):
            pyramid.append(downsample_layout(pyramid[-1]))
        return pyramid

    def forward(self, layout: torch.Tensor, text_emb: torch.Tensor | None = None, stage: str = "full",
                modulate: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                trunk: torch.Tensor | None = None) -> torch.Tensor:
        """The image for a layout; ``modulate`` maps :data:`MODULATION_POINTS` names to functions
        whose output replaces the features at that point (e.g. a learned scale and shift inside an
        edit region): ``'decoder'`` the global net's features after its residual blocks, entering
        its decoder; ``'output'`` the last features, entering the final RGB head (the finest
        enhancer's, or the global net's with no enhancers or at ``stage='global'``); ``'rgb'``
        that head's output before its tanh. ``trunk``: :meth:`trunk`'s output for this layout's
        shape channels and ``text_emb``, reused instead of recomputed (not with ``trunk_sees_style``)."""
        self._check_inputs(layout, text_emb, stage)
        modulate = self._check_modulate(modulate)
        pyramid = self._pyramid(layout)
        if trunk is None:
            h = self.global_net.encode(pyramid[-1], text_emb)
        elif self.trunk_sees_style:
            raise ConfigError("Generator: a reused trunk needs conditioning='spade' (with 'input' the "
                              "encoder reads the style channels)")
        else:
            expected = (layout.shape[0], self.global_net.bottleneck_channels,
                        *(n // 2 ** self.n_downsample for n in pyramid[-1].shape[-2:]))
            if tuple(trunk.shape) != expected:
                raise ConfigError(f"Generator: trunk must be {expected}, got {tuple(trunk.shape)}")
            h = trunk
        if "decoder" in modulate:
            h = modulate["decoder"](h)
        h = self.global_net.decode(h, pyramid[-1])
        head = self.global_net.to_rgb
        if stage == "full" and self.n_local_enhancers > 0:
            for i, enhancer in enumerate(self.enhancers):
                h = enhancer.features(pyramid[self.n_local_enhancers - 1 - i], h, text_emb)
            head = self.enhancers[-1].to_rgb
        if "output" in modulate:
            h = modulate["output"](h)
        x = head[0](h)  # the head's conv; head[1] is its tanh
        if "rgb" in modulate:
            x = modulate["rgb"](x)
        return head[1](x)

    def _check_modulate(self, modulate: Mapping | None) -> Mapping:
        if modulate is None:
            return {}
        if not isinstance(modulate, Mapping):
            raise ConfigError(f"Generator: modulate must be a mapping of point names to functions, "
                              f"got {type(modulate).__name__}")
        for name in modulate:
            if name not in self.MODULATION_POINTS:
                raise ConfigError(f"Generator: unknown modulation point {name!r}; expected one of "
                                  f"{', '.join(self.MODULATION_POINTS)}")
        return modulate

    def _check_inputs(self, layout: torch.Tensor, text_emb: torch.Tensor | None, stage: str) -> None:
        # shape checks only: static under torch.compile, so no graph breaks
        if stage not in STAGES:
            raise ConfigError(f"Generator: unknown stage {stage!r}; expected 'full' or 'global'")
        if layout.dim() != 4 or layout.shape[1] != self.in_channels:
            raise ConfigError(
                f"Generator: layout must be (B, {self.in_channels}, H, W), got {tuple(layout.shape)}")
        m = self.size_multiple
        if layout.shape[-2] % m or layout.shape[-1] % m:
            raise ConfigError(
                f"Generator: layout size {layout.shape[-2]}x{layout.shape[-1]} must be a multiple of {m} "
                f"(2**(n_downsample + n_local_enhancers))")
        if text_emb is not None and (self.text_dim == 0 or text_emb.shape != (layout.shape[0], self.text_dim)):
            raise ConfigError(
                f"Generator: text embedding must be (B={layout.shape[0]}, text_dim={self.text_dim}), "
                f"got {tuple(text_emb.shape)}" + (" (built without text: text_dim=0)" if self.text_dim == 0 else ""))
