"""A perceptual distance that needs no pretrained weights: an MMD between local patch distributions.

Amir & Weiss, "Understanding and Simplifying Perceptual Distances" (CVPR 2021), show that the
distance between two images' features in a CNN with random weights is an MMD between the
distributions of small patches of the images around each location. :class:`LocalPatchMMD` computes
that MMD directly:

* a Gaussian pyramid of each image (``scales`` levels, ``kornia.geometry.transform.pyrdown``);
* at each level, random Fourier features of every ``patch`` x ``patch`` patch ``p`` (all channels),
  ``phi(p) = sqrt(2 / C) * cos(W p / sigma + b)``, ``W ~ N(0, 1)`` applied as a convolution and
  ``b ~ U(0, 2 pi)``, so ``phi(p) . phi(q)`` approximates the Gaussian kernel
  ``exp(-|p - q|^2 / (2 sigma^2))`` (Rahimi & Recht, 2007); ``C = features`` per bandwidth, and the
  kernel is the sum over ``bandwidths`` (per pixel and channel, in the images' units: the model's
  images lie in [-1, 1]) with ``sigma = bandwidth * sqrt(channels * patch^2)``;
* the local patch distribution of a window is the mean of ``phi`` over it (``window`` x ``window``
  average pooling, stride ``window // 2``; clipped to the level's size), and its squared MMD to the
  real image's same window is ``|mean phi(fake) - mean phi(real)|^2``;
* the loss is the mean over windows and images, summed over the levels.

The random weights come from ``torch.Generator().manual_seed(seed)`` at construction and live in
non-persistent buffers: the loss is deterministic, never saved, and reads no file. Levels smaller
than a patch are left out. Computed in float32 outside autocast; the real side without gradients.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError


class LocalPatchMMD(nn.Module):
    """``forward(fake, real)``: the summed-over-levels mean squared local patch MMD (a scalar).

    ``fake`` and ``real`` are (B, channels, H, W) of one size; the gradient flows to ``fake`` only.
    """

    def __init__(self, scales: int = 3, patch: int = 5, bandwidths: Sequence[float] = (0.1, 0.3),
                 features: int = 96, window: int = 8, seed: int = 0, channels: int = 3):
        super().__init__()
        bandwidths = tuple(float(b) for b in bandwidths)
        if min(scales, patch, features, window, channels) < 1 or not bandwidths or min(bandwidths) <= 0:
            raise ConfigError(f"LocalPatchMMD: scales, patch, features, window and channels must be >= 1 and the "
                              f"bandwidths positive, got scales={scales} patch={patch} features={features} "
                              f"window={window} channels={channels} bandwidths={bandwidths}")
        self.scales, self.patch, self.window, self.channels = scales, patch, window, channels
        self.bandwidths, self.features, self.seed = bandwidths, features, seed
        rng = torch.Generator(device="cpu").manual_seed(seed)
        weights, biases = [], []
        for bandwidth in bandwidths:
            sigma = bandwidth * math.sqrt(channels * patch * patch)
            weights.append(torch.randn((features, channels, patch, patch), generator=rng) / sigma)
            biases.append(torch.rand(features, generator=rng) * (2 * math.pi))
        self.register_buffer("weight", torch.cat(weights), persistent=False)
        self.register_buffer("bias", torch.cat(biases), persistent=False)
        self.amplitude = math.sqrt(2.0 / features)

    def local_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per pyramid level, the mean patch feature of every window: (B, C * len(bandwidths), h, w),
        without the factor ``sqrt(2 / C)`` (:meth:`forward` applies it to the squared distances)."""
        from kornia.geometry.transform import pyrdown

        out, x = [], images
        weight = self.weight.contiguous(memory_format=torch.channels_last)  # 2-4x faster on CPU
        for level in range(self.scales):
            if level:
                x = pyrdown(x)
            if min(x.shape[-2:]) < self.patch:
                break
            phi = torch.cos(F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, self.bias))
            k = min(self.window, *phi.shape[-2:])
            out.append(F.avg_pool2d(phi, k, stride=max(k // 2, 1)))
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if fake.dim() != 4 or fake.shape != real.shape or fake.shape[1] != self.channels:
            raise DataError(f"LocalPatchMMD: fake and real must both be (B, {self.channels}, H, W), got "
                            f"{tuple(fake.shape)} and {tuple(real.shape)}")
        if min(fake.shape[-2:]) < self.patch:
            raise DataError(f"LocalPatchMMD: images of {tuple(fake.shape[-2:])} are smaller than a "
                            f"{self.patch}x{self.patch} patch")
        with torch.autocast(fake.device.type, enabled=False):
            fake_emb = self.local_embeddings(fake.float())
            with torch.no_grad():
                real_emb = self.local_embeddings(real.float())
            loss = fake.new_zeros((), dtype=torch.float32)
            for f, r in zip(fake_emb, real_emb):
                loss = loss + (f - r).pow(2).sum(dim=1).mean()
        return loss * self.amplitude ** 2

    def extra_repr(self) -> str:
        return (f"scales={self.scales}, patch={self.patch}, bandwidths={self.bandwidths}, features={self.features}, "
                f"window={self.window}, seed={self.seed}")
