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
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.batch import Batch, collate
from ..errors import CheckpointError, ConfigError, DataError, GraphError, Layout2ImgError
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
TOP_DEFAULTS: dict[str, Any] = {"image_size": 64, "style_dim": 8, "class_embed_dim": 0, "text_dim": 0}
#: Keys ``config.json`` holds beside the constructor's arguments.
META_KEYS = ("layout2img_version", "model_class", "metadata")


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
    conditioning), and the sections ``gcn``, ``layout``, ``generator``, ``encoder``,
    ``clusters`` whose keys and defaults are :data:`SECTION_DEFAULTS`.
    """

    def __init__(self, vocab: Any = "shapes", image_size: int = 64, gcn: Mapping | None = None,
                 layout: Mapping | None = None, generator: Mapping | None = None, encoder: Mapping | None = None,
                 clusters: Mapping | None = None, style_dim: int = 8, class_embed_dim: int = 0, text_dim: int = 0):
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
        self.config: dict[str, Any] = {
            "vocab": vocab.to_dict(), "image_size": image_size, "style_dim": style_dim,
            "class_embed_dim": class_embed_dim, "text_dim": text_dim, **copy.deepcopy(sections),
        }
        self.vocab = vocab
        self.image_size = image_size
        self.style_dim, self.class_embed_dim, self.text_dim = style_dim, class_embed_dim, text_dim
        #: Extra information from ``config.json`` (e.g. the training step) after ``from_pretrained``.
        self.metadata: dict[str, Any] = {}
        #: The CLIP text encoder (added by the text-guidance work); None: ``generate(text=...)`` fails.
        self.text_encoder: nn.Module | None = None

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
        stuff = torch.tensor([vocab.is_stuff(i) for i in range(vocab.num_objects)], dtype=torch.bool)
        # Derived from the vocabulary, so not saved with the weights.
        self.register_buffer("stuff_classes", stuff if (stuff_below and stuff.any()) else None, persistent=False)

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
                style_codes: torch.Tensor | None = None) -> ModelOutput:
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
        """
        if layout_source not in LAYOUT_SOURCES:
            raise ConfigError(f"layout_source: unknown value {layout_source!r} ({' or '.join(LAYOUT_SOURCES)})")
        if style_source not in STYLE_SOURCES:
            raise ConfigError(f"style_source: unknown value {style_source!r} ({', '.join(STYLE_SOURCES)})")
        num_images, size = batch.num_images, self.image_size
        obj_vecs = self.gcn(batch.objs, batch.triples, obj_text_emb, obj_text_mask)
        boxes_pred, mask_logits = self.layout_predictor(obj_vecs)
        boxes, masks = self._layout_geometry_inputs(batch, boxes_pred, mask_logits, layout_source, keep_known_boxes)
        geometry = self._compose(batch, boxes, masks)

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
            else:
                if not self.style_clusters.fitted:
                    raise ConfigError("style_source='cluster': the style clusters are not fitted "
                                      "(fit model.style_clusters on encoded codes first)")
                codes = self.style_clusters.sample(batch.objs, generator)
            codes = codes.float()

        with _full_precision(boxes.device):
            layout = build_layout(batch.objs, boxes, masks, batch.obj_to_img, num_images, size,
                                  self.vocab.num_objects, style_codes=codes, class_embedding=self.class_embedding,
                                  geometry=geometry)
        layout_in = layout.tensor()
        if self._wants_channels_last():
            layout_in = layout_in.contiguous(memory_format=torch.channels_last)
        images = self.generator(layout_in, text_emb, stage=stage)
        return ModelOutput(images=images, boxes_pred=boxes_pred, mask_logits=mask_logits, boxes=boxes, masks=masks,
                           layout=layout, style_mu=mu, style_logvar=logvar, style_codes=codes, obj_vecs=obj_vecs)

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
        ``style_source``: None picks ``'cluster'`` when the style clusters are fitted, else
        ``'sample'``. ``style_codes``: fixed codes instead, one ``(num_objects, style_dim)``
        tensor per graph (a list, or one tensor for one graph), the same for all its samples.
        With ``return_layout`` returns ``(images, LayoutTensors)``; with ``return_output`` the
        whole :class:`ModelOutput` (images clamped; boxes and masks as used, one row per object,
        each graph's ``__image__`` last).
        """
        if text is not None:
            if self.text_encoder is None:
                raise ConfigError("generate: text given, but this model has no text encoder "
                                  f"(text_dim={self.text_dim}); text guidance needs a model trained with one")
            # never ignore text silently: the text-guidance work wires the encoder in here
            raise NotImplementedError("generate(text=...) with a text encoder")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"generate: num_samples must be a positive integer, got {num_samples!r}")
        if style_source is None:
            style_source = "cluster" if self.style_clusters is not None and self.style_clusters.fitted else "sample"
        graph_items = self._items(graphs)
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
            out = self.forward(batch, layout_source=layout_source, style_source=style_source, generator=rng,
                               style_codes=style_codes)
        finally:
            self.train(was_training)
        images = out.images.float().clamp(-1, 1)
        if return_output:
            return dataclasses.replace(out, images=images)
        return (images, out.layout) if return_layout else images

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
        from safetensors.torch import load_file

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
        try:
            vocab = Vocab.from_dict(vocab_dict)
            model = cls.from_config({**kwargs, "vocab": vocab.to_dict()})
        except Layout2ImgError as e:
            raise CheckpointError(f"{path}: {e}") from None
        try:
            state = load_file(str(path / WEIGHTS_FILE), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types on a damaged file
            raise CheckpointError(f"{path / WEIGHTS_FILE}: cannot read: {str(e).splitlines()[0]}") from None
        _check_state(path / WEIGHTS_FILE, model.state_dict(), state)
        model.load_state_dict(state, strict=True)
        model.metadata = dict(metadata)
        return model.to(map_location).eval()


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


def _check_state(where: Path, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> None:
    """One-line CheckpointError naming what does not match (strict loading)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in found and tuple(found[k].shape) != tuple(v.shape)]

    def _few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: weights do not match config.json: {'; '.join(problems)}")
