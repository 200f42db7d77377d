"""SceneGraphToImage: the whole model, from packed scene graphs to images.

    graph ─► GraphEncoder ─► object vectors ─► LayoutPredictor ─► boxes + masks
          ─► build_layout (class channels ⊕ instance edges ⊕ style map) ─► Generator ─► image

The constructor takes plain JSON-serialisable keyword arguments (stored, completed with the
defaults, as ``self.config``), so a model is fully described by ``config.json`` and rebuilt by
``SceneGraphToImage(**config)``. ``save_pretrained`` / ``from_pretrained`` write and read a
folder with ``config.json``, ``model.safetensors`` and ``vocab.json`` (no pickle anywhere).

Usage::

    model = SceneGraphToImage.from_pretrained("runs/shapes_64/checkpoints/latest")
    images = model.generate([{"objects": ["circle", "sky", "grass"],
                              "relationships": [[0, "above", 2]]}], seed=0)   # (1, 3, 64, 64)

Text (``text_dim > 0``): a caption embedding drives FiLM in the generator's residual blocks
(the identity for images without a caption), per-object description embeddings enter the graph
encoder and, with ``style_dim > 0``, a small :class:`TextStylePrior` that maps an object's text
to the distribution of its style code (a learned conditional prior, so "a green circle" is drawn
green). ``text_encoder`` (a :meth:`TextEncoder.load` spec) makes the model encode
``batch.captions`` / ``batch.descriptions`` itself (:meth:`SceneGraphToImage.encode_texts`); the
encoder is frozen and not part of ``model.safetensors`` (``config.json`` keeps its spec).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.batch import Batch, collate
from ..errors import CheckpointError, ConfigError, DataError, GraphError, Layout2ImgError
from ..io import check_state, load_weights
from ..vocab import Vocab
from .encoder import AppearanceEncoder, StyleClusters
from .gcn import GraphEncoder
from .generator import Generator
from .layout import LayoutPredictor, LayoutTensors, build_layout, compose, layout_channels

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"
LAYOUT_SOURCES = ("gt", "pred")
STYLE_SOURCES = ("encode", "sample", "cluster")

#: Every section's keys and defaults (sg2im's graph network; a small pix2pixHD generator).
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "gcn": {"embed_dim": 128, "width": 128, "hidden": 512, "layers": 5, "pooling": "avg", "text_mode": "add",
            "mlp_norm": "none"},
    # pooling: 'over' (smaller boxes occlude larger ones) or 'sum' (sg2im); stuff_below_things
    # puts every stuff object under every thing when the vocabulary knows which is which;
    # use_gt_masks=False builds 'gt' layouts from GT boxes with *predicted* masks (sg2im on
    # Visual Genome, whose masks are just boxes: the image loss then supervises the masks).
    "layout": {"mask_size": 16, "box_hidden": 512, "mask_channels": None, "mask_norm": "batch", "pooling": "over",
               "stuff_below_things": True, "use_gt_masks": True},
    "generator": {"ngf": 64, "n_downsample": 3, "n_blocks": 6, "n_local_enhancers": 0, "n_blocks_local": 3,
                  "norm": "instance", "padding": "reflect", "upsample": "nearest", "layout_skips": False},
    "encoder": {"nef": 16, "n_downsample": 3, "norm": "instance", "padding": "reflect"},
    "clusters": {"k": 10},
}
TOP_DEFAULTS: dict[str, Any] = {"image_size": 64, "style_dim": 8, "class_embed_dim": 0, "text_dim": 0,
                                "text_encoder": None}
#: What to do when a text encoder folder named by a run config does not exist yet.
TRAIN_CLIP_HINT = "run `layout2img train-clip --config configs/clip/shapes.yaml` first (it writes runs/clip_shapes)"
#: Keys ``config.json`` holds beside the constructor's arguments.
META_KEYS = ("layout2img_version", "model_class", "metadata", "text_encoder_fingerprint")


@dataclass
class ModelOutput:
    """What :meth:`SceneGraphToImage.forward` returns (per object rows follow ``batch.objs``)."""

    images: torch.Tensor  # (B, 3, H, W) in [-1, 1] (H/2**n_local_enhancers for stage='global')
    boxes_pred: torch.Tensor  # (O, 4) predicted boxes
    mask_logits: torch.Tensor  # (O, M, M) predicted mask logits
    boxes: torch.Tensor  # (O, 4) the boxes the layout was built from
    masks: torch.Tensor  # (O, M, M) the mask probabilities the layout was built from
    layout: LayoutTensors
    style_mu: torch.Tensor | None  # (O, S) encoder outputs ('encode' only)
    style_logvar: torch.Tensor | None
    style_codes: torch.Tensor | None  # (O, S) the codes spread into the style map
    obj_vecs: torch.Tensor  # (O, width) graph-convolved object vectors
    prior_mu: torch.Tensor | None = None  # (O, S) the text style prior (objects with text; else None)
    prior_logvar: torch.Tensor | None = None
    prior_mask: torch.Tensor | None = None  # (O,) bool: objects whose code follows the text prior


@dataclass
class TextInputs:
    """Encoded captions and descriptions of a batch (what :meth:`SceneGraphToImage.forward` takes).

    Rows without text are zero vectors with a False mask: FiLM leaves those images alone and the
    graph encoder keeps those objects' category embeddings.
    """

    text_emb: torch.Tensor  # (B, D) caption embeddings, zeros where none
    text_mask: torch.Tensor  # (B,) bool
    obj_text_emb: torch.Tensor  # (O, D) description embeddings, zeros where none
    obj_text_mask: torch.Tensor  # (O,) bool

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        return {"text_emb": self.text_emb, "text_mask": self.text_mask, "obj_text_emb": self.obj_text_emb,
                "obj_text_mask": self.obj_text_mask}


class TextStylePrior(nn.Module):
    """p(style code | object, text): a Gaussian per object from its class, its graph vector, its
    image's caption and its own description.

    Trained by the KL of the (detached) appearance-encoder posterior to it, so it learns which
    codes make "a green circle" green; at generation objects with text draw their codes from it
    instead of N(0, I). The last layer starts at zero: an untrained prior *is* N(0, I).
    """

    def __init__(self, num_objects: int, width: int, text_dim: int, style_dim: int, hidden: int = 256,
                 class_dim: int = 32):
        super().__init__()
        self.text_dim, self.style_dim = text_dim, style_dim
        self.class_embedding = nn.Embedding(num_objects, class_dim)
        self.net = nn.Sequential(nn.Linear(class_dim + width + 2 * text_dim + 2, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * style_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, objs: torch.Tensor, obj_vecs: torch.Tensor, caption_emb: torch.Tensor,
                caption_mask: torch.Tensor, desc_emb: torch.Tensor, desc_mask: torch.Tensor):
        """(O,) classes, (O, width), (O, D) caption of each object's image, (O,) bool, (O, D), (O,) bool
        -> mu, logvar (O, style_dim)."""
        dtype = obj_vecs.dtype
        cm, dm = caption_mask.to(torch.bool)[:, None], desc_mask.to(torch.bool)[:, None]
        # where() rather than a product: a row without text may hold anything (even NaN)
        cap = torch.where(cm, caption_emb.to(dtype), caption_emb.new_zeros((), dtype=dtype))
        desc = torch.where(dm, desc_emb.to(dtype), desc_emb.new_zeros((), dtype=dtype))
        h = torch.cat([self.class_embedding(objs).to(dtype), obj_vecs, cap, desc, cm.to(dtype), dm.to(dtype)], dim=1)
        mu, logvar = self.net(h).float().chunk(2, dim=1)
        return mu, logvar.clamp(-8.0, 4.0)


class _Shared:
    """Holds a module outside its owner's parameters and state dict; deep copies share it
    (the EMA copy of a model uses the same frozen text encoder)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def __deepcopy__(self, memo):
        return self


def _check_section(name: str, given: Mapping | None, defaults: dict) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"model.{name}: expected a mapping, got {type(given).__name__}")
    unknown = [k for k in given if k not in defaults]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(defaults)})"
        raise ConfigError(f"model.{name}: unknown key {unknown[0]!r}{hint}")
    return {**defaults, **dict(given)}


def _make_vocab(vocab: Any) -> Vocab:
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, Mapping):
        return Vocab.from_dict(dict(vocab))
    if isinstance(vocab, (str, Path)):
        return Vocab.by_name(str(vocab))
    raise ConfigError(f"model.vocab: expected a vocabulary name, path or dict, got {type(vocab).__name__}")


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (interpolations resolved)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


class SceneGraphToImage(nn.Module):
    """Scene graph -> layout -> image (see the module doc).

    Arguments (all JSON-serialisable): ``vocab`` (a name such as ``'shapes'``, a vocab.json
    path, a :class:`Vocab` or its ``to_dict()``), ``image_size``, ``style_dim`` (0: no style
    channels and no appearance encoder), ``class_embed_dim`` (0: one-hot class channels, else
    learned class embeddings of that size, for large vocabularies), ``text_dim`` (0: no text
    conditioning), ``text_encoder`` (None, or a :meth:`TextEncoder.load` spec - a domain CLIP
    folder, ``ARCH=FILE``, ``NAME/TAG`` - whose ``embed_dim`` must equal ``text_dim``), and the
    sections ``gcn``, ``layout``, ``generator``, ``encoder``, ``clusters`` whose keys and defaults
    are :data:`SECTION_DEFAULTS`.
    """

    def __init__(self, vocab: Any = "shapes", image_size: int = 64, gcn: Mapping | None = None,
                 layout: Mapping | None = None, generator: Mapping | None = None, encoder: Mapping | None = None,
                 clusters: Mapping | None = None, style_dim: int = 8, class_embed_dim: int = 0, text_dim: int = 0,
                 text_encoder: str | None = None):
        super().__init__()
        vocab = _make_vocab(_plain(vocab))
        sections = {name: _check_section(name, _plain(value), SECTION_DEFAULTS[name])
                    for name, value in (("gcn", gcn), ("layout", layout), ("generator", generator),
                                        ("encoder", encoder), ("clusters", clusters))}
        for key, value in (("image_size", image_size), ("style_dim", style_dim),
                           ("class_embed_dim", class_embed_dim), ("text_dim", text_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "image_size" else 0):
                raise ConfigError(f"model.{key}: expected a {'positive' if key == 'image_size' else 'non-negative'} "
                                  f"integer, got {value!r}")
        text_encoder = _plain(text_encoder)
        if text_encoder is not None and (not isinstance(text_encoder, (str, Path)) or not str(text_encoder).strip()):
            raise ConfigError(f"model.text_encoder: expected a CLIP folder, ARCH=FILE or NAME/TAG (or null), "
                              f"got {text_encoder!r}")
        self.config: dict[str, Any] = {
            "vocab": vocab.to_dict(), "image_size": image_size, "style_dim": style_dim,
            "class_embed_dim": class_embed_dim, "text_dim": text_dim, **copy.deepcopy(sections),
        }
        if text_encoder is not None:  # absent from config.json of text-free models, as before
            self.config["text_encoder"] = str(text_encoder)
        self.vocab = vocab
        self.image_size = image_size
        self.style_dim, self.class_embed_dim, self.text_dim = style_dim, class_embed_dim, text_dim
        #: Extra information from ``config.json`` (e.g. the training step) after ``from_pretrained``.
        self.metadata: dict[str, Any] = {}
        #: The frozen CLIP text encoder (``model.text_encoder`` spec); None: ``generate(text=...)`` fails.
        #: Not a submodule: its weights are neither trained nor saved with the model.
        self.text_encoder = load_text_encoder(text_encoder, text_dim) if text_encoder is not None else None

        g, lay = sections["gcn"], dict(sections["layout"])
        self.layout_pooling = lay.pop("pooling")
        stuff_below = lay.pop("stuff_below_things")
        self.use_gt_masks = bool(lay.pop("use_gt_masks"))
        self.mask_size = lay["mask_size"]
        self.gcn = GraphEncoder(vocab.num_objects, vocab.num_predicates, text_dim=text_dim, **g)
        self.layout_predictor = LayoutPredictor(g["width"], **lay)
        self.class_embedding = nn.Embedding(vocab.num_objects, class_embed_dim) if class_embed_dim > 0 else None
        in_channels = layout_channels(vocab.num_objects, class_embed_dim, style_dim)
        self.generator = Generator(in_channels, 3, text_dim=text_dim, **sections["generator"])
        multiple = self.generator.size_multiple
        if image_size % multiple:
            raise ConfigError(
                f"model.image_size: {image_size} is not a multiple of {multiple} "
                f"(2**(generator.n_downsample + generator.n_local_enhancers))")
        self.encoder = AppearanceEncoder(3, style_dim, **sections["encoder"]) if style_dim > 0 else None
        self.style_clusters = (StyleClusters(vocab.num_objects, style_dim, **sections["clusters"])
                               if style_dim > 0 else None)
        self.style_prior = (TextStylePrior(vocab.num_objects, g["width"], text_dim, style_dim)
                            if text_dim > 0 and style_dim > 0 else None)
        stuff = torch.tensor([vocab.is_stuff(i) for i in range(vocab.num_objects)], dtype=torch.bool)
        # Derived from the vocabulary, so not saved with the weights.
        self.register_buffer("stuff_classes", stuff if (stuff_below and stuff.any()) else None, persistent=False)

    # -- the text encoder (kept out of parameters() and state_dict()) --------------------------
    @property
    def text_encoder(self):
        holder = self.__dict__.get("_text_encoder")
        return holder.module if holder is not None else None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "text_encoder":
            if value is not None and not isinstance(value, nn.Module):
                raise ConfigError(f"text_encoder: expected a TextEncoder or None, got {type(value).__name__}")
            if value is not None and self.text_dim and getattr(value, "embed_dim", self.text_dim) != self.text_dim:
                raise ConfigError(f"text_encoder: embeds in {value.embed_dim} dimensions, the model's text_dim is "
                                  f"{self.text_dim}")
            self.__dict__["_text_encoder"] = _Shared(value) if value is not None else None
            return
        super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.text_encoder is not None:  # .to(device) moves the encoder along
            self.text_encoder._apply(fn)
        return self

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_semantic_channels(self) -> int:
        return self.class_embed_dim if self.class_embed_dim > 0 else self.vocab.num_objects - 1

    @property
    def layout_channels(self) -> int:
        """Channels of the generator's input (semantic ⊕ edges ⊕ style)."""
        return layout_channels(self.vocab.num_objects, self.class_embed_dim, self.style_dim)

    @property
    def discriminator_layout_channels(self) -> int:
        """Channels of ``LayoutTensors.for_discriminator()`` (semantic ⊕ edges)."""
        return self.num_semantic_channels + 1

    # -- building from a config ------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any, **overrides) -> "SceneGraphToImage":
        """Build from a run config (YAML path, or a dict / DictConfig with a ``model:`` section)
        or from a model section itself. ``overrides`` replace top-level model keys."""
        if isinstance(config, (str, Path)):
            from omegaconf import OmegaConf
            from omegaconf.errors import OmegaConfBaseException

            path = Path(config)
            if not path.exists():
                from ..config import resolve_config_path

                path = resolve_config_path(config)
            try:
                config = OmegaConf.load(path)
                config = OmegaConf.to_container(config, resolve=True)
            except (OmegaConfBaseException, ValueError) as e:
                raise ConfigError(f"{path}: cannot read config: {str(e).splitlines()[0]}") from None
        config = _plain(config)
        if not isinstance(config, Mapping):
            raise ConfigError(f"model config: expected a mapping, got {type(config).__name__}")
        section = config.get("model", config)
        if not isinstance(section, Mapping):
            raise ConfigError("model config: the 'model' section must be a mapping")
        kwargs = {**dict(section), **overrides}
        known = ("vocab", *TOP_DEFAULTS, *SECTION_DEFAULTS)
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"model: unknown key {unknown[0]!r}{hint}")
        return cls(**kwargs)

    # -- the forward pass ----------------------------------------------------------------------
    def _layout_geometry_inputs(self, batch: Batch, boxes_pred, mask_logits, layout_source: str,
                                keep_known_boxes: bool = True):
        if layout_source == "gt":
            if not bool(batch.boxes_known.all()):
                missing = int((~batch.boxes_known).nonzero()[0])
                raise DataError(f"layout_source='gt' needs every box; object {missing} of the batch has none")
            boxes = batch.boxes.float()
        elif keep_known_boxes:
            boxes = torch.where(batch.boxes_known[:, None], batch.boxes.float(), boxes_pred.float())
        else:
            boxes = boxes_pred.float()
        if layout_source == "gt" and batch.masks is not None and self.use_gt_masks:
            masks = batch.masks.float()
        else:
            masks = torch.sigmoid(mask_logits.float())
        return boxes, masks

    def _compose(self, batch: Batch, boxes: torch.Tensor, masks: torch.Tensor):
        # float32 even under autocast: box placement should not be rounded to bf16
        with _full_precision(boxes.device):
            return compose(boxes.float(), masks.float(), batch.obj_to_img, batch.num_images, self.image_size,
                           objs=batch.objs, stuff_classes=self.stuff_classes, skip=batch.objs == 0,
                           pooling=self.layout_pooling)  # __image__ is never drawn

    def _wants_channels_last(self) -> bool:
        for p in self.generator.parameters():
            if p.dim() == 4:
                return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        return False

    def forward(self, batch: Batch, layout_source: str = "gt", style_source: str = "encode",
                text_emb: torch.Tensor | None = None, obj_text_emb: torch.Tensor | None = None,
                obj_text_mask: torch.Tensor | None = None, stage: str = "full",
                generator: torch.Generator | None = None, keep_known_boxes: bool = True,
                style_codes: torch.Tensor | None = None, text_mask: torch.Tensor | None = None) -> ModelOutput:
        """Run the model on a packed batch.

        ``layout_source``: ``'gt'`` builds the layout from ``batch.boxes`` / ``batch.masks``
        (predicted masks where the batch has none, or with ``layout.use_gt_masks=False``);
        ``'pred'`` from the predictions, except that boxes the batch knows
        (``batch.boxes_known``: user boxes) are used as given. Dataset batches know every box,
        so the fully predicted layout of dataset graphs needs ``keep_known_boxes=False``.
        ``style_source``: ``'encode'`` (reparameterised codes of ``batch.images``, pooled over
        the ground-truth layout; training), ``'sample'`` (N(0, I)), ``'cluster'`` (fitted
        :class:`StyleClusters`). Random draws use ``generator`` (any device) when given.
        ``style_codes`` (O, style_dim), one row per ``batch.objs`` entry, replaces the codes
        ``style_source`` would give (a fixed appearance per object, e.g. to restyle only one).

        Text (models with ``text_dim > 0``; :meth:`encode_texts` makes all four from a batch):
        ``text_emb`` (B, text_dim) caption embeddings for FiLM, ``text_mask`` (B,) bool saying
        which images have one (the others are generated exactly as without text; None: all);
        ``obj_text_emb`` (O, text_dim) / ``obj_text_mask`` (O,) per-object descriptions. Objects
        with text (a description, or a caption on their image) draw their ``'sample'`` /
        ``'cluster'`` codes from the text style prior.
        """
        if layout_source not in LAYOUT_SOURCES:
            raise ConfigError(f"layout_source: unknown value {layout_source!r} ({' or '.join(LAYOUT_SOURCES)})")
        if style_source not in STYLE_SOURCES:
            raise ConfigError(f"style_source: unknown value {style_source!r} ({', '.join(STYLE_SOURCES)})")
        num_images, size = batch.num_images, self.image_size
        text_emb, text_mask, obj_text_emb, obj_text_mask = self._check_text_inputs(
            batch, text_emb, text_mask, obj_text_emb, obj_text_mask)
        obj_vecs = self.gcn(batch.objs, batch.triples, obj_text_emb, obj_text_mask)
        boxes_pred, mask_logits = self.layout_predictor(obj_vecs)
        boxes, masks = self._layout_geometry_inputs(batch, boxes_pred, mask_logits, layout_source, keep_known_boxes)
        geometry = self._compose(batch, boxes, masks)

        prior_mu = prior_logvar = prior_mask = None
        if self.style_prior is not None and (text_emb is not None or obj_text_emb is not None):
            prior_mu, prior_logvar, prior_mask = self._text_prior(batch, obj_vecs, text_emb, text_mask,
                                                                  obj_text_emb, obj_text_mask)

        mu = logvar = codes = None
        if style_codes is not None:
            codes = self._check_style_codes(style_codes, batch.objs.shape[0]).to(obj_vecs.device)
        elif self.style_dim > 0:
            if style_source == "encode":
                if batch.images is None:
                    raise DataError("style_source='encode' needs batch.images (use 'sample' or 'cluster')")
                if tuple(batch.images.shape[-2:]) != (size, size):
                    raise DataError(f"batch.images are {tuple(batch.images.shape[-2:])}, the model makes "
                                    f"{size}x{size}")
                enc_geometry = geometry
                if layout_source != "gt" and bool(batch.boxes_known.all()):
                    enc_geometry = self._compose(
                        batch, *self._layout_geometry_inputs(batch, boxes_pred, mask_logits, "gt"))
                mu, logvar = self.encoder(batch.images, enc_geometry.weights, batch.obj_to_img)
                codes = AppearanceEncoder.reparameterize(mu, logvar, generator)
            elif style_source == "sample":
                rng_device = generator.device if generator is not None else obj_vecs.device
                codes = torch.randn((batch.objs.shape[0], self.style_dim), generator=generator,
                                    device=rng_device).to(obj_vecs.device)
                if prior_mask is not None:  # the same draws, scaled and shifted by the text prior
                    codes = torch.where(prior_mask[:, None], prior_mu + torch.exp(0.5 * prior_logvar) * codes, codes)
            else:
                if not self.style_clusters.fitted:
                    raise ConfigError("style_source='cluster': the style clusters are not fitted "
                                      "(fit model.style_clusters on encoded codes first)")
                codes = self.style_clusters.sample(batch.objs, generator)
                if prior_mask is not None and bool(prior_mask.any()):
                    rng_device = generator.device if generator is not None else obj_vecs.device
                    eps = torch.randn(codes.shape, generator=generator, device=rng_device).to(codes.device)
                    codes = torch.where(prior_mask[:, None], prior_mu + torch.exp(0.5 * prior_logvar) * eps,
                                        codes.float())
            codes = codes.float()

        with _full_precision(boxes.device):
            layout = build_layout(batch.objs, boxes, masks, batch.obj_to_img, num_images, size,
                                  self.vocab.num_objects, style_codes=codes, class_embedding=self.class_embedding,
                                  geometry=geometry)
        layout_in = layout.tensor()
        if self._wants_channels_last():
            layout_in = layout_in.contiguous(memory_format=torch.channels_last)
        images = self._run_generator(layout_in, text_emb, text_mask, stage)
        return ModelOutput(images=images, boxes_pred=boxes_pred, mask_logits=mask_logits, boxes=boxes, masks=masks,
                           layout=layout, style_mu=mu, style_logvar=logvar, style_codes=codes, obj_vecs=obj_vecs,
                           prior_mu=prior_mu, prior_logvar=prior_logvar, prior_mask=prior_mask)

    # -- text ------------------------------------------------------------------------------------
    def _check_text_inputs(self, batch: Batch, text_emb, text_mask, obj_text_emb, obj_text_mask):
        b, o = batch.num_images, batch.objs.shape[0]
        if (text_emb is not None or obj_text_emb is not None) and self.text_dim == 0:
            raise ConfigError("text embeddings given, but this model takes no text (text_dim=0)")
        for name, emb, rows in (("text_emb", text_emb, b), ("obj_text_emb", obj_text_emb, o)):
            if emb is not None and (not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (rows, self.text_dim)):
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise DataError(f"{name}: expected shape ({rows}, {self.text_dim}), got {shape}")
        for name, mask, emb, rows in (("text_mask", text_mask, text_emb, b),
                                      ("obj_text_mask", obj_text_mask, obj_text_emb, o)):
            if mask is None:
                continue
            if emb is None:
                raise DataError(f"{name} given without {name.replace('mask', 'emb')}")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (rows,):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise DataError(f"{name}: expected shape ({rows},), got {shape}")
        device = batch.objs.device
        if text_mask is not None:
            text_mask = text_mask.to(device=device, dtype=torch.bool)
            if not bool(text_mask.any()):
                text_emb = text_mask = None  # no image has a caption: exactly the text-free model
        if obj_text_mask is not None:
            obj_text_mask = obj_text_mask.to(device=device, dtype=torch.bool)
            if not bool(obj_text_mask.any()):
                obj_text_emb = obj_text_mask = None
        return text_emb, text_mask, obj_text_emb, obj_text_mask

    def _text_prior(self, batch: Batch, obj_vecs, text_emb, text_mask, obj_text_emb, obj_text_mask):
        o, device = batch.objs.shape[0], obj_vecs.device
        zeros = obj_vecs.new_zeros(o, self.text_dim, dtype=torch.float32)
        no = torch.zeros(o, dtype=torch.bool, device=device)
        if text_emb is not None:
            cap = text_emb.float()[batch.obj_to_img]
            cap_mask = (text_mask[batch.obj_to_img] if text_mask is not None
                        else torch.ones(o, dtype=torch.bool, device=device))
        else:
            cap, cap_mask = zeros, no
        if obj_text_emb is not None:
            desc = obj_text_emb.float()
            desc_mask = obj_text_mask if obj_text_mask is not None else torch.ones(o, dtype=torch.bool, device=device)
        else:
            desc, desc_mask = zeros, no
        # the prior steers appearance only: the layout's training is left to its own losses
        mu, logvar = self.style_prior(batch.objs, obj_vecs.detach(), cap, cap_mask, desc, desc_mask)
        return mu, logvar, (cap_mask | desc_mask) & (batch.objs != 0)

    def _run_generator(self, layout_in: torch.Tensor, text_emb, text_mask, stage: str) -> torch.Tensor:
        """The generator with FiLM on the images that have text and without it on the others.

        Instance normalisation works per image, so running the two groups separately equals
        one pass in which FiLM is the identity on the rows without text.
        """
        if text_emb is None or text_mask is None or bool(text_mask.all()):
            return self.generator(layout_in, text_emb, stage=stage)
        with_text, without = text_mask.nonzero().flatten(), (~text_mask).nonzero().flatten()
        a = self.generator(layout_in[with_text], text_emb[with_text], stage=stage)
        b = self.generator(layout_in[without], None, stage=stage)
        out = a.new_zeros((layout_in.shape[0],) + tuple(a.shape[1:]))
        return out.index_copy(0, with_text, a).index_copy(0, without, b.to(a.dtype))

    def encode_texts(self, batch: Batch, drop_prob: float = 0.0, generator: torch.Generator | None = None,
                     captions: Sequence[str | None] | None = None, ground_captions: bool = True,
                     cache: bool = True) -> TextInputs:
        """Caption and description embeddings of a batch with the model's text encoder.

        ``captions`` replaces ``batch.captions`` (one per image, None for none). ``drop_prob``:
        each caption and each description is independently dropped (as if absent) with this
        probability - text dropout in training, so the model also works without text. The
        draws are one ``torch.rand(B + O, generator=generator)`` call whatever the batch holds,
        so a seeded generator gives the same drops on every run.

        ``ground_captions``: an object without a (kept) description whose vocabulary name the
        (kept) caption of its image mentions gets the caption's phrase for it as its description
        ("a large black star to the left of a white square" gives the star "a large black star"
        and the square "a white square"; see :func:`caption_phrase`), so a caption reaches the
        objects it talks about, not only FiLM. Objects of a class the caption names twice get its
        first phrase. ``cache``: as :meth:`TextEncoder.encode_text`.
        """
        if self.text_encoder is None:
            raise ConfigError(f"encode_texts: this model has no text encoder (text_dim={self.text_dim}); "
                              "set model.text_encoder")
        captions = list(batch.captions if captions is None else captions)
        b, o = batch.num_images, batch.objs.shape[0]
        if len(captions) != b:
            raise DataError(f"captions: expected one per image ({b}), got {len(captions)}")
        descriptions = list(batch.descriptions)
        if len(descriptions) != o:
            raise DataError(f"batch.descriptions: expected one per object ({o}), got {len(descriptions)}")

        def present(t: Any) -> bool:
            return isinstance(t, str) and bool(t.strip())

        keep = [present(t) for t in captions + descriptions]
        if drop_prob > 0:
            rng_device = generator.device if generator is not None else "cpu"
            draws = torch.rand(b + o, generator=generator, device=rng_device).cpu().tolist()
            keep = [k and r >= drop_prob for k, r in zip(keep, draws)]
        if ground_captions:
            names = self.vocab.object_names
            for j, img in enumerate(batch.obj_to_img.tolist()):
                if keep[b + j] or not keep[img] or int(batch.objs[j]) == 0:
                    continue
                phrase = caption_phrase(captions[img], names[int(batch.objs[j])])
                if phrase is not None:
                    descriptions[j], keep[b + j] = phrase, True
        texts = [" ".join(t.split()) for t, k in zip(captions + descriptions, keep) if k]
        device = self.device
        emb = torch.zeros(b + o, self.text_dim, device=device)
        if texts:
            rows = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long, device=device)
            emb = emb.index_copy(0, rows, self.text_encoder.encode_text(texts, cache=cache).to(device=device, dtype=emb.dtype))
        mask = torch.tensor(keep, dtype=torch.bool, device=device)
        return TextInputs(emb[:b], mask[:b], emb[b:], mask[b:])

    def _check_style_codes(self, codes: Any, num_objects: int) -> torch.Tensor:
        if self.style_dim == 0:
            raise ConfigError("style_codes given, but this model has no style codes (style_dim=0)")
        if not isinstance(codes, torch.Tensor) or tuple(codes.shape) != (num_objects, self.style_dim):
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise DataError(f"style_codes: expected a tensor of shape ({num_objects}, {self.style_dim}) "
                            f"(one row per object), got {shape}")
        if not codes.is_floating_point() or not bool(torch.isfinite(codes).all()):
            raise DataError("style_codes: expected finite floating-point values")
        return codes.float()

    # -- inference -----------------------------------------------------------------------------
    def _items(self, graphs: Any) -> list[dict]:
        from ..graph import SceneGraph

        if isinstance(graphs, (SceneGraph, Mapping)):
            graphs = [graphs]
        if not isinstance(graphs, Sequence) or isinstance(graphs, (str, bytes)) or len(graphs) == 0:
            raise GraphError("generate: expected a SceneGraph, an sg2im dict, or a non-empty list of them")
        items = []
        for i, g in enumerate(graphs):
            if isinstance(g, Mapping):
                g = SceneGraph.from_dict(dict(g), self.vocab, source="<generate>", index=i)
            elif not isinstance(g, SceneGraph):
                raise GraphError(f"<generate>: graph {i}: expected a SceneGraph or an sg2im dict, "
                                 f"got {type(g).__name__}")
            items.append(g.to_item(self.vocab))
        return items

    @torch.no_grad()
    def generate(self, graphs: Any, seed: int = 0, text: Any = None, num_samples: int = 1,
                 return_layout: bool = False, layout_source: str = "pred", style_source: str | None = None,
                 style_codes: Any = None, return_output: bool = False):
        """Images for scene graphs: (len(graphs) * num_samples, 3, H, W) in [-1, 1].

        ``graphs``: a :class:`~layout2img.graph.SceneGraph`, an sg2im dict
        (``{"objects": [...], "relationships": [[s, "pred", o], ...], "boxes": [...]}``) or a
        list of them; samples of one graph are consecutive. The same ``seed`` gives the same
        pixels on CPU (a private ``torch.Generator``; the global RNG is untouched). A graph
        with ``boxes`` keeps them (masks are still predicted); otherwise boxes are predicted.
        ``text`` (models with a text encoder): a caption for every graph, or a list with one
        caption (or None) per graph; it replaces the graphs' own captions. Without it a graph's
        ``caption`` and ``descriptions`` are used (and ignored by models without a text encoder).
        ``style_source``: None picks ``'cluster'`` when the style clusters are fitted, else
        ``'sample'``. ``style_codes``: fixed codes instead, one ``(num_objects, style_dim)``
        tensor per graph (a list, or one tensor for one graph), the same for all its samples.
        With ``return_layout`` returns ``(images, LayoutTensors)``; with ``return_output`` the
        whole :class:`ModelOutput` (images clamped; boxes and masks as used, one row per object,
        each graph's ``__image__`` last).
        """
        if text is not None and self.text_encoder is None:
            raise ConfigError("generate: text given, but this model has no text encoder "
                              f"(text_dim={self.text_dim}); text guidance needs a model trained with one")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"generate: num_samples must be a positive integer, got {num_samples!r}")
        if style_source is None:
            style_source = "cluster" if self.style_clusters is not None and self.style_clusters.fitted else "sample"
        graph_items = self._items(graphs)
        if text is not None:
            graph_items = self._with_captions(graph_items, text)
        items = [it for it in graph_items for _ in range(num_samples)]
        batch = collate(items)
        if style_codes is not None:
            style_codes = self._pack_style_codes(style_codes, graph_items, num_samples)
        device = self.device
        batch = batch.to(device)
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        was_training = self.training
        self.eval()
        try:
            texts = self.encode_texts(batch).as_kwargs() if self.text_encoder is not None else {}
            out = self.forward(batch, layout_source=layout_source, style_source=style_source, generator=rng,
                               style_codes=style_codes, **texts)
        finally:
            self.train(was_training)
        images = out.images.float().clamp(-1, 1)
        if return_output:
            return dataclasses.replace(out, images=images)
        return (images, out.layout) if return_layout else images

    @staticmethod
    def _with_captions(items: list[dict], text: Any) -> list[dict]:
        if isinstance(text, str):
            text = [text] * len(items)
        if not isinstance(text, Sequence) or len(text) != len(items):
            have = len(text) if isinstance(text, Sequence) else type(text).__name__
            raise ConfigError(f"generate: text must be a string or one caption per graph ({len(items)}), got {have}")
        for i, t in enumerate(text):
            if t is not None and not isinstance(t, str):
                raise ConfigError(f"generate: text {i}: expected a string or None, got {type(t).__name__}")
        return [{**it, "caption": t} for it, t in zip(items, text)]

    def _pack_style_codes(self, codes: Any, items: list[dict], num_samples: int) -> torch.Tensor:
        """Per-graph (N_i, S) codes -> rows following the packed batch (zeros for ``__image__``)."""
        if isinstance(codes, torch.Tensor):
            codes = [codes]
        if not isinstance(codes, Sequence) or len(codes) != len(items):
            have = len(codes) if isinstance(codes, Sequence) else type(codes).__name__
            raise DataError(f"style_codes: expected one tensor per graph ({len(items)}), got {have}")
        rows = []
        for i, (c, it) in enumerate(zip(codes, items)):
            n = it["objs"].numel() - 1
            try:
                c = self._check_style_codes(c, n)
            except DataError as e:
                raise DataError(f"graph {i}: {e}") from None
            rows += [torch.cat([c, c.new_zeros(1, self.style_dim)])] * num_samples
        return torch.cat(rows).to(self.device)

    # -- saving and loading --------------------------------------------------------------------
    def save_pretrained(self, save_dir: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``vocab.json`` into ``save_dir``.

        The folder is built under a temporary name and renamed into place (an existing folder
        is replaced as a whole), so a crash never leaves half a checkpoint.
        """
        from safetensors.torch import save_file

        from .. import __version__
        from ..io import atomic_dir, atomic_save, atomic_write_text

        config = {k: v for k, v in self.config.items() if k != "vocab"}
        payload = {"model_class": type(self).__name__, "layout2img_version": __version__, **config,
                   "metadata": dict(metadata or {})}
        if self.text_encoder is not None:
            payload["text_encoder_fingerprint"] = self.text_encoder.fingerprint()
        try:
            config_text = json.dumps(payload, indent=1)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"save_pretrained: metadata is not JSON-serialisable: {e}") from None
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_dir = Path(save_dir)
        with atomic_dir(save_dir, overwrite=True) as tmp:  # each file fsynced, then the folder renamed
            atomic_write_text(tmp / CONFIG_FILE, config_text + "\n")
            atomic_write_text(tmp / VOCAB_FILE, json.dumps(self.vocab.to_dict(), indent=1) + "\n")
            atomic_save(tmp / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
        return save_dir

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "SceneGraphToImage":
        """Load a folder written by :meth:`save_pretrained` (safetensors only, strict)."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint folder not found")
        for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
            if not (path / name).is_file():
                raise CheckpointError(f"{path}: incomplete checkpoint: missing {name}")
        payload = _read_json(path / CONFIG_FILE)
        vocab_dict = _read_json(path / VOCAB_FILE)
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path / CONFIG_FILE}: expected a JSON object")
        metadata = payload.get("metadata") or {}
        kwargs = {k: v for k, v in payload.items() if k not in META_KEYS}
        spec = kwargs.get("text_encoder")
        if isinstance(spec, str):
            kwargs["text_encoder"] = resolve_text_encoder_spec(spec, [path.resolve(), *path.resolve().parents])
        try:
            vocab = Vocab.from_dict(vocab_dict)
            model = cls.from_config({**kwargs, "vocab": vocab.to_dict()})
        except Layout2ImgError as e:
            raise CheckpointError(f"{path}: {e}") from None
        if isinstance(spec, str):
            model.config["text_encoder"] = spec  # saved again as written, not as resolved here
        expected = payload.get("text_encoder_fingerprint")
        found = model.text_encoder.fingerprint() if expected and model.text_encoder is not None else expected
        if found != expected:
            raise CheckpointError(f"{path}: text encoder {spec!r} is not the CLIP this model was trained with (weights "
                                  f"{found}, expected {expected}); point text_encoder in {path / CONFIG_FILE} at that CLIP")
        state = load_weights(path / WEIGHTS_FILE, device=map_location)
        check_state(path / WEIGHTS_FILE, model.state_dict(), state)
        model.load_state_dict(state, strict=True)
        model.metadata = dict(metadata)
        return model.to(map_location).eval()


#: Words that end a noun phrase when reading backwards from an object's name in a caption.
_PHRASE_STOPS = frozenset("a an the of to and or on in at by with under over above below left right beside near "
                          "behind front inside around next is are there this that".split())


def caption_phrase(caption: str | None, name: str, max_words: int = 3) -> str | None:
    """The caption's noun phrase for an object name: its first whole-word mention with up to
    ``max_words`` modifiers before it ("a large black star ..." , "star" -> "a large black star";
    "... on grass" -> "grass"), or None when the caption does not mention it."""
    if not caption or not name or name.startswith("__"):
        return None
    words = re.findall(r"[\w'-]+|[^\w\s]", caption.lower())
    target = name.lower().split()
    n = len(target)
    for i in range(len(words) - n + 1):
        if words[i:i + n] == target:
            start = i
            while start > 0 and i - start < max_words and words[start - 1].isalpha() \
                    and words[start - 1] not in _PHRASE_STOPS:
                start -= 1
            article = [words[start - 1]] if start > 0 and words[start - 1] in ("a", "an", "the") else []
            return " ".join([*article, *words[start:i + n]])
    return None


def _looks_like_path(spec: str) -> bool:
    """A text-encoder spec meant as a file or folder (not an open_clip ``NAME/TAG``)."""
    if spec.startswith(("hf-hub:", "local-dir:")):
        return False
    if spec.startswith((".", "/", "~")) or "\\" in spec or "=" in spec:
        return True
    head, slash, _ = spec.partition("/")
    if not slash:
        return True
    try:
        import open_clip

        return head not in open_clip.list_models()
    except ImportError:  # pragma: no cover - a declared dependency
        return True


def resolve_text_encoder_spec(spec: str, base_dirs: Sequence[Path] = ()) -> str:
    """``spec`` itself, or - a relative path that does not exist from here - the first
    ``base / spec`` that exists (a checkpoint names ``runs/clip_shapes`` relative to the repo)."""
    arch, eq, rest = spec.partition("=")
    target = rest if eq else spec
    if not _looks_like_path(spec) or Path(target).expanduser().exists() or Path(target).is_absolute():
        return spec
    for base in base_dirs:
        if (Path(base) / target).exists():
            found = str(Path(base) / target)
            return f"{arch}={found}" if eq else found
    return spec


def load_text_encoder(spec: Any, text_dim: int):
    """The frozen :class:`TextEncoder` a model config names; ``text_dim`` must be its ``embed_dim``."""
    from .text import TextEncoder

    spec = str(spec).strip()
    arch, eq, rest = spec.partition("=")
    if _looks_like_path(spec) and not Path(rest if eq else spec).expanduser().exists():
        raise ConfigError(f"model.text_encoder: {rest if eq else spec}: no such CLIP folder or file; "
                          f"for the Shapes domain CLIP, {TRAIN_CLIP_HINT}")
    try:
        encoder = TextEncoder.load(spec)
    except CheckpointError as e:
        raise ConfigError(f"model.text_encoder: {e}") from None
    encoder.freeze()
    if text_dim != encoder.embed_dim:
        raise ConfigError(f"model.text_dim is {text_dim}, but the text encoder {spec} embeds in "
                          f"{encoder.embed_dim} dimensions (set model.text_dim: {encoder.embed_dim})")
    return encoder


def _full_precision(device: torch.device):
    """Autocast switched off (where autocast exists for the device)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None

