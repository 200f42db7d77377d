"""Every config key, its type and its default: the structured (dataclass) schema of run configs.

The defaults are the default run's model and training (``python train.py``: configs/shapes_64.yaml
states only its data and schedule); YAML files state only what differs from them. A GAN run is a
:class:`RunConfig` whose ``data`` section is the dataclass its ``dataset`` names (:data:`DATASETS`);
a domain CLIP run (``layout2img train-clip``) is a :class:`~layout2img.config.clip_schema.ClipRunConfig`.
The model sections carry the defaults :class:`~layout2img.SceneGraphToImage` uses
(:func:`model_section_defaults`, :func:`model_top_defaults`). ``MISSING``: a key every config sets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple, Optional

from omegaconf import II, MISSING

from .training_schema import DiscriminatorConfig, LossConfig, TrainConfig


# -- model -------------------------------------------------------------------------------------------
@dataclass
class GcnConfig:
    """The graph network (configs/base/sg2im.yaml states sg2im's larger sizes)."""

    embed_dim: int = 64
    width: int = 64
    hidden: int = 256
    layers: int = 3
    pooling: str = "avg"
    text_mode: str = "add"
    mlp_norm: str = "none"


@dataclass
class LayoutConfig:
    """Boxes and masks to a layout. ``pooling``: 'over' (smaller boxes occlude larger ones) or 'sum' (sg2im);
    ``stuff_below_things`` puts every stuff object under every thing when the vocabulary knows which is which;
    ``use_gt_masks`` False builds 'gt' layouts from GT boxes with *predicted* masks (sg2im on Visual Genome,
    whose masks are just boxes: the image loss supervises them). ``mask_channels`` None: as wide as the graph
    network. ``fill_holes``: what predicted masks and boxes leave uncovered in or between stuff boxes goes to it;
    ``fill_given``: so does what ground-truth masks leave (at 16 cells, a partly unlabelled ring round each thing);
    ``hard``: filled, then each pixel wholly its topmost object's (a label map; needs ``use_gt_masks``).

    ``predictor``: ``regression`` (sg2im's box net: one layout per graph) or ``sampler`` (a conditional VAE,
    :class:`~layout2img.models.layout_sampler.LayoutSampler`: one layout per seed). The sampler's own keys (ignored
    by the regression): ``z_dim`` latent size per object, ``layers`` / ``hidden`` of its two graph convolutions,
    ``placement`` ``sequential`` (one object per graph at a time, each around those placed) or ``joint``,
    ``known_fraction`` the largest share of true boxes pinned per training image, ``refine_steps`` projected
    gradient steps that repair broken relations when sampling (0: none), ``refine_max_iou`` the largest IoU the
    refinement leaves between two things of one image (1: overlap is not refined)."""

    mask_size: int = 16
    box_hidden: int = 256
    mask_channels: Optional[int] = 32
    mask_norm: str = "batch"
    pooling: str = "over"
    stuff_below_things: bool = True
    use_gt_masks: bool = True
    fill_holes: bool = True
    fill_given: bool = False
    hard: bool = False
    predictor: str = "sampler"  # one layout per seed (the editor's "New layout"), ~11 % more a step
    z_dim: int = 8
    layers: int = 2
    hidden: int = 256
    placement: str = "sequential"
    known_fraction: float = 1.0
    refine_steps: int = 50
    refine_max_iou: float = 0.3


@dataclass
class GeneratorConfig:
    """A pix2pixHD generator: a global net plus ``n_local_enhancers`` (each doubles the size).

    ``layout_skips``: the layout again at every decoder scale (CRN-style); False is pix2pixHD.
    ``conditioning``: ``input`` (pix2pixHD: the layout, style channels included, is the input) or ``spade``
    (SPADE normalisation from the class map in every residual and decoder block, each object's style code
    modulating the decoder inside its own mask, as ISLA-Norm / SEAN); ``spade_hidden``: width of SPADE's
    shared layout conv; ``noise_channels``: OASIS's 3D noise, that many per-pixel N(0, 1) channels (0: none).
    """

    ngf: int = 24  # 32 costs ~1.35x a step on the AMD CPU: 24 keeps the default run inside 10 minutes
    n_downsample: int = 3
    n_blocks: int = 4
    n_local_enhancers: int = 0
    n_blocks_local: int = 3
    norm: str = "instance"
    padding: str = "reflect"
    upsample: str = "nearest"
    layout_skips: bool = False
    conditioning: str = "spade"
    spade_hidden: int = 32
    noise_channels: int = 0
    position_frequencies: int = 0  # sin / cos of x and y at that many frequencies for the decoder's SPADE
    box_coordinates: bool = False  # each pixel's place in its object's box: two more layout channels


@dataclass
class EncoderConfig:
    """The appearance encoder (image crops -> per-object style codes)."""

    nef: int = 16
    n_downsample: int = 3
    norm: str = "batch"  # not instance: keeps absolute colour in the codes
    padding: str = "reflect"


@dataclass
class ClustersConfig:
    """Style-code clusters fitted after training (``style_source='cluster'``)."""

    k: int = 10


@dataclass
class ModelConfig:
    """:class:`~layout2img.SceneGraphToImage`'s arguments.

    ``style_dim`` 0: no style codes and no encoder; ``class_embed_dim`` 0: one-hot class
    channels, else learned class embeddings of that size; ``text_dim`` 0: no text conditioning;
    ``text_encoder``: a domain CLIP folder, ``ARCH=FILE`` or an open_clip ``NAME/TAG`` whose
    embed_dim is ``text_dim``.
    """

    vocab: str = "shapes"
    image_size: int = 64
    style_dim: int = 8
    class_embed_dim: int = 0
    text_dim: int = 0
    text_encoder: Optional[str] = None
    gcn: GcnConfig = field(default_factory=GcnConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    clusters: ClustersConfig = field(default_factory=ClustersConfig)


MODEL_SECTIONS = ("gcn", "layout", "generator", "encoder", "clusters")


def model_section_defaults() -> dict[str, dict[str, Any]]:
    """Each model section's keys and defaults: ``{"gcn": {"embed_dim": 128, ...}, ...}`` (a copy)."""
    model = ModelConfig()
    return {name: dataclasses.asdict(getattr(model, name)) for name in MODEL_SECTIONS}


def model_top_defaults() -> dict[str, Any]:
    """The model's top-level keys (besides ``vocab`` and the sections) and their defaults."""
    model = ModelConfig()
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(ModelConfig)
            if f.name not in ("vocab", *MODEL_SECTIONS)}


def _run_model() -> ModelConfig:
    # In a run the model draws images and masks at the data's sizes unless a config says otherwise.
    return ModelConfig(image_size=II("data.image_size"), layout=LayoutConfig(mask_size=II("data.mask_size")))


# -- data --------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Keys of every dataset's ``data:`` section; ``train`` / ``val`` hold per-split paths."""

    dataset: str = MISSING  # shapes | coco | vg: picks the section's dataclass
    image_size: int = 64
    mask_size: int = 16
    num_workers: int = 0
    hflip: float = 0.5  # probability of a horizontal flip (image, boxes and masks together)


@dataclass
class ShapesPrepare:
    """:func:`~layout2img.data.shapes.ensure_shapes`'s arguments: the Shapes dataset written on first use."""

    num_train: int = 10000
    num_val: int = 1000
    size: int = 64
    seed: int = 0


@dataclass
class ShapesSplit:
    """One Shapes split (the files are found under ``root``)."""

    max_samples: Optional[int] = None  # the first N images of the split (None: all)


@dataclass
class ShapesDataConfig(DataConfig):
    """The built-in Shapes world at ``root`` (``prepare`` None: read it, never write it)."""

    root: str = "data/shapes"
    prepare: Optional[ShapesPrepare] = field(default_factory=ShapesPrepare)
    train: Optional[ShapesSplit] = field(default_factory=ShapesSplit)
    val: Optional[ShapesSplit] = field(default_factory=ShapesSplit)


@dataclass
class CocoSplit:
    """One COCO split's files (``split``: sg2im's cut of val2017, 'val' or 'test')."""

    image_dir: str = MISSING
    instances_json: str = MISSING
    stuff_json: Optional[str] = None
    captions_json: Optional[str] = None
    split: Optional[str] = None
    max_samples: Optional[int] = None


@dataclass
class CocoDataConfig(DataConfig):
    """COCO-Stuff (sg2im / LostGAN protocol): :class:`~layout2img.data.coco.CocoSceneGraphDataset`'s filters.

    ``min_object_size``: kept boxes' area fraction; ``stuff_only``: keep only images with stuff
    annotations; ``drop_crowd`` True is LostGAN's mode (iscrowd objects dropped);
    ``image_ids_file``: e.g. sg2im's 40k "deprecated challenge" ids; ``val_size``: images of
    val2017 in sg2im's 'val' cut.
    """

    root: Optional[str] = None  # the dataset's folder, for the split files to name (${data.root}/...)
    min_object_size: float = 0.02
    min_objects: int = 3
    max_objects: int = 8
    include_other: bool = False
    stuff_only: bool = True
    instance_whitelist: Optional[List[str]] = None
    stuff_whitelist: Optional[List[str]] = None
    drop_crowd: bool = False
    image_ids_file: Optional[str] = None
    val_size: int = 1024
    include_relationships: bool = True
    train: CocoSplit = MISSING
    val: Optional[CocoSplit] = None


@dataclass
class VgSplit:
    """One Visual Genome split's HDF5 file."""

    h5_path: str = MISSING
    max_samples: Optional[int] = None


@dataclass
class VgDataConfig(DataConfig):
    """Visual Genome (sg2im protocol, HDF5 files from datasets/prepare_vg.py)."""

    root: Optional[str] = None  # the dataset's folder, for the files to name (${data.root}/...)
    vocab: str = MISSING  # the prepared vocab.json
    image_dir: str = MISSING
    max_objects: int = 10  # objects sampled per training image
    include_relationships: bool = True
    use_orphaned_objects: bool = True
    train: VgSplit = MISSING
    val: Optional[VgSplit] = None


#: A ``data.dataset``: its ``data:`` dataclass and its splits' builder, ``module:function``
#: (imported when used: config sits below the data layer).
DatasetKind = NamedTuple("DatasetKind", [("schema", type), ("builder", str)])
#: The one registry of dataset kinds: the loader reads ``schema``, ``build_dataset`` ``builder``.
DATASETS: dict[str, DatasetKind] = {
    "shapes": DatasetKind(ShapesDataConfig, "layout2img.data.build:build_shapes"),
    "coco": DatasetKind(CocoDataConfig, "layout2img.data.build:build_coco"),
    "vg": DatasetKind(VgDataConfig, "layout2img.data.build:build_vg"),
}


@dataclass
class RunConfig:
    """A GAN training run (``train.py``, ``layout2img train``).

    ``device``: auto | cpu | cuda[:N]; ``resume``: auto (the latest checkpoint in out_dir) |
    never | a checkpoint folder; ``config_path``: the file it was loaded from (set by the loader).
    """

    out_dir: str = MISSING
    max_steps: int = MISSING
    batch_size: int = MISSING
    checkpoint_every: int = MISSING
    seed: int = 0
    device: str = "auto"
    resume: str = "auto"
    keep_last: int = 3
    log_every: int = 10
    sample_every: int = II("checkpoint_every")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=_run_model)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    config_path: Optional[str] = None
