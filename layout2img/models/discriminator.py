"""Discriminators: pix2pixHD's multiscale PatchGAN on layout + image, and an object discriminator.

* :class:`MultiscaleDiscriminator` - ``num_D`` PatchGANs (:class:`NLayerDiscriminator`) on the
  concatenation of the layout and the image, each on the input average-pooled once more than the
  previous (3x3, stride 2). Every scale returns its intermediate feature maps (for the feature
  matching loss) with the patch logits last. Use ``num_D=2`` up to 128 px and 3 from 256 px.
  With ``text_dim > 0`` a projection-discriminator term (Miyato & Koyama, 2018) - the inner
  product of a linear projection of the text embedding with the globally pooled last features -
  is added to each scale's logits.
* :class:`ProjectedDiscriminator` - Projected GAN (Sauer et al., 2021): small patch heads on the
  multi-scale features of a frozen :class:`~layout2img.models.segmenter.SceneSegmenter`, mixed by
  fixed random 1 x 1 (across channels) and 3 x 3 (across scales) convolutions, the layout pooled
  beside each scale; same call and output structure as the multiscale D.
* :class:`ObjectDiscriminator` - judges each object's crop, taken with ``torchvision.ops.roi_align``
  at its box, and classifies it (auxiliary classifier, as sg2im; LostGAN judges crops too).
  It judges every box it is given: pass only the real objects (``real_objects(objs)`` drops
  ``__image__``, class 0, whose "crop" is the whole image).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import downsample_layout
from .layout import crop_boxes
from .normalization import conv2d, init_weights, norm_layer
from .segmenter import SceneSegmenter

D_NORMS = ("instance", "spectral", "batch", "none")


def _check_norm(norm: str) -> None:
    if norm not in D_NORMS:
        raise ConfigError(f"unknown discriminator norm {norm!r}; expected one of {', '.join(D_NORMS)}")


def real_objects(objs: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the objects a discriminator should judge: all but ``__image__`` (index 0)."""
    return objs != 0


class NLayerDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN: ``n_layers`` stride-2 4x4 convs, one stride-1 conv, a 1-channel conv.

    ``forward`` returns the ``n_layers + 2`` feature maps, the last being the logits.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        _check_norm(norm)
        spectral = norm == "spectral"
        inner_norm = "none" if spectral else norm
        pad = math.ceil((4 - 1) / 2)  # 2, as pix2pixHD
        layers = [nn.Sequential(conv2d(in_channels, ndf, 4, 2, pad=pad, spectral=spectral), nn.LeakyReLU(0.2, True))]
        nf = ndf
        for n in range(1, n_layers + 1):
            prev, nf = nf, min(nf * 2, 512)
            stride = 2 if n < n_layers else 1
            layers.append(nn.Sequential(
                conv2d(prev, nf, 4, stride, pad=pad, spectral=spectral),
                norm_layer(inner_norm, nf),
                nn.LeakyReLU(0.2, True),
            ))
        layers.append(conv2d(nf, 1, 4, 1, pad=pad, spectral=spectral))
        self.layers = nn.ModuleList(layers)
        self.feature_channels = nf  # width of the last features before the logits

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """(layout (B, Cl, H, W), image (B, 3, H, W)[, text (B, text_dim)]) -> list over scales, finest first.

    Also accepts the concatenation ``layout ⊕ image`` alone as the first argument.

    ``in_channels`` is ``Cl + 3``. Each scale's entry is the list of its ``n_layers + 2`` feature maps
    (logits last) when ``get_features`` is true, else ``[logits]``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, num_D: int = 2,
                 norm: str = "instance", text_dim: int = 0, get_features: bool = True):
        super().__init__()
        if num_D < 1 or n_layers < 1:
            raise ConfigError(f"MultiscaleDiscriminator: num_D={num_D} and n_layers={n_layers} must be >= 1")
        self.in_channels, self.num_D, self.n_layers = in_channels, num_D, n_layers
        self.text_dim, self.get_features = text_dim, get_features
        self.scales = nn.ModuleList([NLayerDiscriminator(in_channels, ndf, n_layers, norm) for _ in range(num_D)])
        nf = self.scales[0].feature_channels
        self.text_proj = (nn.ModuleList([nn.Linear(text_dim, nf) for _ in range(num_D)]) if text_dim > 0 else None)
        init_weights(self)

    def forward(self, layout: torch.Tensor, image: torch.Tensor | None = None,
                text_emb: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """``layout`` and ``image`` are concatenated on channels; pass ``image=None`` when ``layout``
        already is that concatenation (e.g. one tensor that needs grad for the R1 penalty)."""
        x = layout if image is None else torch.cat([layout, image.to(layout.dtype)], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"MultiscaleDiscriminator: layout + image have {x.shape[1]} channels, built for {self.in_channels}")
        if text_emb is not None and (self.text_proj is None or text_emb.shape != (x.shape[0], self.text_dim)):
            raise ConfigError(
                f"MultiscaleDiscriminator: text embedding must be (B={x.shape[0]}, text_dim={self.text_dim}), "
                f"got {tuple(text_emb.shape)}")
        outputs = []
        for i, scale in enumerate(self.scales):
            if i > 0:
                x = downsample_layout(x)
            feats = scale(x)
            if text_emb is not None:
                pooled = feats[-2].mean(dim=(2, 3))
                projection = (self.text_proj[i](text_emb).to(pooled.dtype) * pooled).sum(dim=1)
                feats[-1] = feats[-1] + projection.to(feats[-1].dtype)[:, None, None, None]
            outputs.append(feats if self.get_features else feats[-1:])
        return outputs


class ProjectedDiscriminator(nn.Module):
    """(layout ⊕ image (B, Cl + 3, H, W)) -> list over the encoder's scales, finest first, of
    ``[mixed features, head features, patch logits]`` (the multiscale D's structure, so feature
    matching and the GAN losses take it unchanged; matching the mixed features of the frozen
    encoder is a perceptual term on the project's own network).

    The encoder and both mixing convolutions never train (``requires_grad`` off, BatchNorm on its
    running statistics); only the heads do. Cross-channel mixing (CCM) is a random 1 x 1 conv per
    scale to ``mix_channels``; cross-scale mixing (CSM) adds each deeper scale, upsampled, to the
    one above it and mixes with a random 3 x 3 conv (Projected GAN's fixed random projections: they
    spread the features so no head can rely on a few of them). Each head sees its scale's mixed
    features and the layout average-pooled to that scale.
    """

    def __init__(self, encoder: SceneSegmenter, layout_channels: int, ndf: int = 64, mix_channels: int = 64):
        super().__init__()
        if layout_channels < 0 or ndf < 1 or mix_channels < 1:
            raise ConfigError(f"ProjectedDiscriminator: layout_channels={layout_channels}, ndf={ndf} and "
                              f"mix_channels={mix_channels} must be >= 0, >= 1 and >= 1")
        self.layout_channels, self.in_channels = layout_channels, layout_channels + 3
        self.heads = nn.ModuleList([nn.Sequential(
            conv2d(mix_channels + layout_channels, ndf, 3, spectral=True), nn.LeakyReLU(0.2, True),
            conv2d(ndf, 2 * ndf, 4, 2, pad=1, spectral=True), nn.LeakyReLU(0.2, True),
            conv2d(2 * ndf, 1, 3, spectral=True)) for _ in encoder.widths])
        init_weights(self.heads)
        self.encoder = encoder.freeze()
        self.ccm = nn.ModuleList([nn.Conv2d(w, mix_channels, 1) for w in encoder.widths])
        self.csm = nn.ModuleList([nn.Conv2d(mix_channels, mix_channels, 3, padding=1) for _ in encoder.widths])
        self.ccm.requires_grad_(False)
        self.csm.requires_grad_(False)

    @property
    def size_multiple(self) -> int:
        return self.encoder.size_multiple

    def forward(self, layout: torch.Tensor, image: torch.Tensor | None = None,
                text_emb: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        x = layout if image is None else torch.cat([layout, image.to(layout.dtype)], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"ProjectedDiscriminator: layout + image have {x.shape[1] if x.dim() == 4 else '?'} "
                              f"channels, built for {self.in_channels}")
        if text_emb is not None:
            raise ConfigError("ProjectedDiscriminator takes no text; use discriminator.kind=multiscale for text models")
        cond, image = x[:, :self.layout_channels], x[:, self.layout_channels:]
        mixed = [ccm(f) for ccm, f in zip(self.ccm, self.encoder.features(image))]
        for i in reversed(range(len(mixed))):  # deepest first: each scale gets the ones below it
            if i + 1 < len(mixed):
                mixed[i] = mixed[i] + F.interpolate(mixed[i + 1], size=mixed[i].shape[-2:], mode="bilinear",
                                                    align_corners=False)
            mixed[i] = self.csm[i](mixed[i])
        outputs = []
        for head, m in zip(self.heads, mixed):
            h = torch.cat([m, F.adaptive_avg_pool2d(cond, m.shape[-2:]).to(m.dtype)], 1)
            feats = [m]
            for layer in head:
                h = layer(h)
                if not isinstance(layer, nn.LeakyReLU):
                    continue
                feats.append(h)
            outputs.append(feats + [h])
        return outputs


class ObjectDiscriminator(nn.Module):
    """Judge and classify object crops.

    ``forward(images (B, 3, H, W), boxes (O, 4) normalised [x0, y0, x1, y1], obj_to_img (O,),
    text_emb (O, text_dim) or None) -> (realness (O,), class_logits (O, num_classes))``.
    Crops are ``crop_size`` x ``crop_size`` bilinear ``roi_align`` samples of each box in its own image.
    """

    def __init__(self, num_classes: int, ndf: int = 64, crop_size: int = 32, text_dim: int = 0,
                 norm: str = "spectral"):
        super().__init__()
        _check_norm(norm)
        if crop_size < 8 or crop_size & (crop_size - 1):
            raise ConfigError(f"ObjectDiscriminator: crop_size must be a power of two >= 8, got {crop_size}")
        self.num_classes, self.crop_size, self.text_dim = num_classes, crop_size, text_dim
        spectral = norm == "spectral"
        inner_norm = "none" if spectral else norm
        layers = [conv2d(3, ndf, 3, 1, spectral=spectral), nn.LeakyReLU(0.2, True)]
        nf = ndf
        for _ in range(int(math.log2(crop_size)) - 2):  # down to 4 x 4
            prev, nf = nf, min(nf * 2, 512)
            layers += [conv2d(prev, nf, 4, 2, pad=1, spectral=spectral), norm_layer(inner_norm, nf),
                       nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers)
        self.realness = nn.Linear(nf, 1)
        self.classifier = nn.Linear(nf, num_classes)
        self.text_proj = nn.Linear(text_dim, nf) if text_dim > 0 else None
        init_weights(self)

    def crops(self, images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor) -> torch.Tensor:
        """(O, 3, crop_size, crop_size) crops of each object's box."""
        return crop_boxes(images, boxes, obj_to_img, self.crop_size)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor,
                text_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if boxes.dim() != 2 or boxes.shape[1] != 4 or obj_to_img.shape != boxes.shape[:1]:
            raise ConfigError(
                f"ObjectDiscriminator: boxes must be (O, 4) and obj_to_img (O,), "
                f"got {tuple(boxes.shape)} and {tuple(obj_to_img.shape)}")
        if text_emb is not None and (self.text_proj is None or text_emb.shape != (boxes.shape[0], self.text_dim)):
            raise ConfigError(
                f"ObjectDiscriminator: text embedding must be (O={boxes.shape[0]}, text_dim={self.text_dim}), "
                f"got {tuple(text_emb.shape)}")
        h = self.body(self.crops(images, boxes, obj_to_img))
        feat = F.relu(h).sum(dim=(2, 3))  # sum pooling, as projection discriminators do
        realness = self.realness(feat).squeeze(1)
        if text_emb is not None:
            realness = realness + (self.text_proj(text_emb).to(feat.dtype) * feat).sum(dim=1)
        return realness, self.classifier(feat)


class _ResBlockD(nn.Module):
    """Spectrally normalised residual block (OASIS): LeakyReLU-conv-LeakyReLU-conv plus a 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, resample: str):
        super().__init__()
        self.resample = resample  # 'down', 'up' or 'none'
        self.conv1 = conv2d(in_ch, out_ch, 3, spectral=True)
        self.conv2 = conv2d(out_ch, out_ch, 3, spectral=True)
        self.shortcut = conv2d(in_ch, out_ch, 1, spectral=True, bias=False)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self._scale(x) if self.resample == "up" else x, 0.2))
        h = self.conv2(F.leaky_relu(h, 0.2))
        if self.resample == "down":
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(self._scale(x))


class SegmentationDiscriminator(nn.Module):
    """OASIS's discriminator (Schönfeld et al., 2021): a U-Net that labels every pixel with one of
    ``num_classes`` semantic classes or "fake" (channel 0).

    ``forward(image (B, 3, H, W)) -> logits (B, num_classes, H, W)``; ``num_classes`` counts the
    vocabulary's classes with channel 0 standing for "fake" (``__image__``, class 0, is never a
    pixel label). It needs no pretrained network: its per-pixel semantic judgement replaces the
    perceptual loss that pix2pixHD and SPADE need VGG weights for. ``n_down`` halvings
    (``H`` must be a multiple of ``2**n_down``), widths doubling from ``ndf`` up to ``8 * ndf``.
    """

    def __init__(self, num_classes: int, ndf: int = 32, n_down: int = 4):
        super().__init__()
        if num_classes < 2 or n_down < 1:
            raise ConfigError(f"SegmentationDiscriminator: num_classes={num_classes} must be >= 2 and "
                              f"n_down={n_down} >= 1")
        self.num_classes, self.n_down = num_classes, n_down
        widths = [min(ndf * 2 ** i, 8 * ndf) for i in range(n_down + 1)]
        self.stem = conv2d(3, widths[0], 3, spectral=True)
        self.down = nn.ModuleList([_ResBlockD(widths[i], widths[i + 1], "down") for i in range(n_down)])
        self.up = nn.ModuleList([
            _ResBlockD(widths[i + 1] * (1 if i == n_down - 1 else 2), widths[i], "up")
            for i in reversed(range(n_down))
        ])
        self.head = conv2d(2 * widths[0], num_classes, 1)
        init_weights(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = 2 ** self.n_down
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[-1] % m or image.shape[-2] % m:
            raise ConfigError(f"SegmentationDiscriminator: image must be (B, 3, H, W) with H, W multiples of {m}, "
                              f"got {tuple(image.shape)}")
        skips = [self.stem(image)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        for i, block in enumerate(self.up):
            h = block(h if i == 0 else torch.cat([h, skips.pop()], 1))
        return self.head(F.leaky_relu(torch.cat([h, skips.pop()], 1), 0.2))
