"""A small scene segmenter: the frozen feature network of the projected discriminator.

Projected GAN (Sauer et al., NeurIPS 2021) judges images in the feature space of a frozen, pretrained
network. No ImageNet weights exist where this project trains, so the network is the project's own:
:class:`SceneSegmenter` is trained (``training.segmenter``) to label every pixel of *real* images with
its class - the ground-truth layout's label map - and is then frozen. It never sees a generated image
while it trains, and it is never the FID Inception nor the object classifier the metrics use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class SceneSegmenter(nn.Module):
    """image (B, 3, H, W) in [-1, 1] -> per-pixel class logits (B, num_classes, H, W).

    A stem at full resolution, then one stage per entry of ``widths``, each halving the resolution
    (two 3 x 3 conv-BN-ReLU); each stage's 1 x 1 class head is upsampled and summed (FCN).
    :meth:`features` gives the stages' outputs - H/2, H/4, ... - which the projected
    discriminator reads. ``H`` and ``W`` must be multiples of ``2 ** len(widths)``.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] | list[int] = (32, 64, 128)):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if num_classes < 2 or not widths or min(widths) < 1:
            raise ConfigError(f"SceneSegmenter: num_classes={num_classes} must be >= 2 and widths={list(widths)} "
                              f"a non-empty list of positive channel counts")
        self.num_classes, self.widths = num_classes, widths
        self.stem = _conv_bn_relu(3, widths[0], 1)
        chans = (widths[0],) + widths
        self.stages = nn.ModuleList([nn.Sequential(_conv_bn_relu(chans[i], chans[i + 1], 2),
                                                   _conv_bn_relu(chans[i + 1], chans[i + 1], 1))
                                     for i in range(len(widths))])
        self.heads = nn.ModuleList([nn.Conv2d(w, num_classes, 1) for w in widths])
        self.frozen = False

    @property
    def size_multiple(self) -> int:
        return 2 ** len(self.widths)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        m = self.size_multiple
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-1] % m or image.shape[-2] % m:
            raise ConfigError(f"SceneSegmenter: image must be (B, 3, H, W) with H, W multiples of {m}, "
                              f"got {tuple(image.shape)}")
        x, feats = self.stem(image), []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-2:]
        return sum(F.interpolate(head(f), size=size, mode="bilinear", align_corners=False)
                   for head, f in zip(self.heads, self.features(image)))

    def freeze(self) -> "SceneSegmenter":
        """No gradients to its parameters and batch statistics fixed, from now on (see :meth:`train`)."""
        self.requires_grad_(False)
        self.frozen = True
        return super().train(False)

    def unfreeze(self) -> "SceneSegmenter":
        """Trainable again (for :func:`~layout2img.training.segmenter.train_segmenter`)."""
        self.requires_grad_(True)
        self.frozen = False
        return self

    def train(self, mode: bool = True) -> "SceneSegmenter":
        # once frozen, a discriminator's .train() must not switch its BatchNorm back to batch statistics
        return super().train(mode and not self.frozen)
