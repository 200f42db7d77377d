"""The schema of a domain CLIP run (``layout2img train-clip``): every key, its type and its default."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from .schema import ShapesPrepare


@dataclass
class ClipSplit:
    """A COCO split's files for CLIP training (Shapes finds its own under ``root``)."""

    image_dir: Optional[str] = None
    instances_json: Optional[str] = None
    stuff_json: Optional[str] = None
    captions_json: Optional[str] = None


@dataclass
class ClipDataConfig:
    """Image-caption pairs: shapes (``root``, ``prepare``) or coco (``train`` / ``val`` files)."""

    dataset: str = MISSING  # shapes | coco
    root: str = "data/shapes"  # shapes: as ShapesDataConfig
    prepare: Optional[ShapesPrepare] = field(default_factory=ShapesPrepare)
    max_images: Optional[int] = None  # per split (None: all)
    train: Optional[ClipSplit] = None
    val: Optional[ClipSplit] = None


@dataclass
class ClipTrainConfig:
    """The domain CLIP's schedule.

    ``crops_per_step``: object crops per step, each with a different text;
    ``captions_per_image``: contrastive losses per step, each pairing every image with another of
    its captions; ``hard_negatives``: per image, this many copies of its caption with one word
    swapped for another of its ``swap_words`` group, joining the image->text softmax;
    ``eval_every``: caption retrieval on val every N steps (0: only at the end) among
    ``num_candidates``; ``max_minutes``: stop after this much training, then evaluate and save
    (0: no limit); ``init_from``: a domain CLIP folder of the same model to start from.
    """

    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    warmup: int = MISSING
    weight_decay: float = MISSING
    crops_per_step: int = 48
    crop_weight: float = 1.0
    captions_per_image: int = 1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    grad_clip: float = 0.0
    max_minutes: float = 0.0
    init_from: Optional[str] = None
    hard_negatives: int = 0
    swap_words: List[List[str]] = field(default_factory=list)
    eval_every: int = 200
    log_every: int = 50
    num_candidates: int = 100
    eval_seed: int = 0


@dataclass
class ClipRunConfig:
    """A domain CLIP run (``layout2img train-clip``); ``model`` is ``open_clip.CLIP``'s keyword
    arguments, an open-ended mapping checked when the model is built."""

    out_dir: str = MISSING
    seed: int = 0
    device: str = "auto"
    log_dir: Optional[str] = None  # a folder for TensorBoard scalars
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    model: Dict[str, Any] = MISSING
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    config_path: Optional[str] = None
