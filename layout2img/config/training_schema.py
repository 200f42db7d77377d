"""The training sections of a run config: discriminators, loss weights, optimisers and schedule
(:class:`~layout2img.config.schema.RunConfig` holds them beside the model and data sections)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ImageDiscriminatorConfig:
    """The multi-scale patch discriminator (pix2pixHD)."""

    ndf: int = 32
    n_layers: int = 3
    num_D: int = 2


@dataclass
class ObjectDiscriminatorConfig:
    """The object discriminator on box crops, with an auxiliary classifier."""

    ndf: int = 64
    crop_size: int = 32


@dataclass
class SegmentationDiscriminatorConfig:
    """OASIS's per-pixel (N+1)-class U-Net discriminator: ``n_down`` halvings from width ``ndf``."""

    ndf: int = 32
    n_down: int = 4


@dataclass
class ProjectedDiscriminatorConfig:
    """Projected GAN's heads (``ndf`` wide, on ``mix_channels`` of randomly mixed features) on a frozen
    scene segmenter (``encoder_widths``, one scale each) that the run first trains for ``encoder_steps``
    steps of ``encoder_batch`` real train images (half of them at the low-resolution size, when there
    is one), learning rate ``encoder_lr``."""

    ndf: int = 64
    mix_channels: int = 64
    encoder_widths: List[int] = field(default_factory=lambda: [32, 64, 128])
    encoder_steps: int = 400
    encoder_batch: int = 16
    encoder_lr: float = 0.002


@dataclass
class DiscriminatorConfig:
    """The discriminators (their ``text_dim`` follows the model's text encoder).

    ``kind``: the image discriminator, ``multiscale`` (pix2pixHD's patch D on layout + image, with
    feature matching), ``segmentation`` (OASIS: labels each pixel with its class or "fake"; no
    feature matching, ``loss.lambda_labelmix`` for LabelMix) or ``projected`` (Projected GAN on a
    frozen segmenter the run trains first; layout beside its features, feature matching as multiscale).
    """

    kind: str = "multiscale"
    image: ImageDiscriminatorConfig = field(default_factory=ImageDiscriminatorConfig)
    segmentation: SegmentationDiscriminatorConfig = field(default_factory=SegmentationDiscriminatorConfig)
    projected: ProjectedDiscriminatorConfig = field(default_factory=ProjectedDiscriminatorConfig)
    object: Optional[ObjectDiscriminatorConfig] = None  # None: no object discriminator


@dataclass
class LossConfig:
    """Loss weights (a weight of 0 switches its term off).

    ``lambda_l1``: pixel L1 to the real image (sg2im's; pix2pix 100) on ``l1_pool`` x ``l1_pool`` block means (1: per
    pixel); ``lambda_l1_full_size``: its weight in the steps at the model's size after a ``train.low_res_steps``
    start (None: the same); ``texture_pool`` k > 1: stuff over 3 px from every thing (textures of random phase:
    bricks, waves) meets the L1 and feature matching through k x k block means; ``perceptual``: vgg19
    (torchvision's, from the torch hub cache), auto (vgg19 if there, else off), patch_mmd (no weights: MMD of local patch distributions, Amir & Weiss
    2021) or none, never the FID Inception; ``lambda_prior``: text style prior's fit to the encoder's codes;
    ``lambda_clip``: 1 - cos(CLIP(fake), caption), also per object crop and description; ``lambda_labelmix``:
    OASIS's LabelMix consistency (segmentation D only). The layout sampler (``model.layout.predictor: sampler``) uses
    ``lambda_box``, ``lambda_mask``, ``lambda_layout_kl`` (its beta: KL of box posterior to fixed prior),
    ``lambda_layout_prior`` (that KL pulling the prior to the fixed posterior), ``lambda_layout_relation`` (relation
    hinge of prior-drawn boxes)."""

    gan_mode: str = "hinge"
    lambda_feat: float = 10.0
    lambda_l1: float = 10.0
    lambda_l1_full_size: Optional[float] = None  # the L1's weight in full-size steps (None: lambda_l1)
    l1_pool: int = 1
    texture_pool: int = 0
    perceptual: str = "none"
    lambda_perceptual: float = 0.0
    lambda_obj: float = 1.0
    lambda_aux: float = 1.0
    lambda_box: float = 1.0
    lambda_mask: float = 1.0
    lambda_kl: float = 0.01
    lambda_prior: float = 1.0
    lambda_clip: float = 0.0
    lambda_labelmix: float = 0.0
    lambda_layout_kl: float = 0.001
    lambda_layout_prior: float = 0.01
    lambda_layout_relation: float = 1.0


@dataclass
class TrainConfig:
    """Optimisers and schedule.

    ``amp``: auto (bf16 on CUDA) | bf16 | fp32. ``global_steps``: pix2pixHD coarse-to-fine, the global net alone
    first, then fixed for ``fix_global_steps`` more. ``low_res_steps``: the first steps render the same network
    at half the image size (layout and real images; progressive resizing). ``r1_gamma``: R1 penalty weight
    (0: off), applied every ``r1_every`` steps. ``text_dropout``: each caption / description dropped with this
    probability. ``init_from``: a checkpoint folder whose model weights start this run. ``grad_clip`` 0: off.
    ``diffaugment``: DiffAugment policy for everything the discriminators see (comma-separated color,
    translation, cutout; empty: off). ``fit_styles``: at the end of the run, fit per-class style clusters on up
    to this many train images (0: off), so generation draws appearances like the data's. ``lr_decay_start``:
    the fraction of ``max_steps`` after which both learning rates fall linearly to 0 at ``max_steps``
    (pix2pixHD's ``niter_decay``; 1.0: constant).
    """

    # twice pix2pixHD's 2e-4: FID 117.3 -> 108.8 in the default run's 700 steps (BENCHMARKS, R9)
    lr_g: float = 0.0004
    lr_d: float = 0.0004
    lr_decay_start: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    amp: str = "auto"
    ema_decay: float = 0.999
    global_steps: int = 0
    fix_global_steps: int = 0
    low_res_steps: int = 0
    grad_clip: float = 0.0
    channels_last: bool = False  # no gain with oneDNN on the AMD CPU (BENCHMARKS); for CUDA, True
    r1_gamma: float = 0.0
    r1_every: int = 16
    text_dropout: float = 0.0
    init_from: Optional[str] = None
    diffaugment: Optional[str] = "color,translation,cutout"
    fit_styles: int = 1000
