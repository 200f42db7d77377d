"""SceneGraphToImage: the whole model, from packed scene graphs to images.

    graph ─► GraphEncoder ─► object vectors ─► LayoutPredictor or LayoutSampler ─► boxes + masks
          ─► build_layout (class channels ⊕ instance edges ⊕ style map) ─► Generator ─► image

The constructor takes plain JSON-serialisable keyword arguments (stored, completed with the
defaults, as ``self.config``), so a model is fully described by ``config.json`` and rebuilt by
``SceneGraphToImage(**config)``. ``save_pretrained`` / ``from_pretrained``
(:class:`~layout2img.io.PretrainedMixin`) write and read a folder with ``config.json``,
``model.safetensors``, ``vocab.json`` and, for a text model, its text encoder in ``text_encoder/``
(no pickle anywhere).

Usage::

    model = SceneGraphToImage.from_pretrained("runs/shapes_64/checkpoints/latest")
    images = model.generate([{"objects": ["circle", "sky", "grass"],
                              "relationships": [[0, "above", 2]]}], seed=0)   # (1, 3, 64, 64)

Layouts (``layout.predictor``, :mod:`.layouts`): the regression draws one layout per graph; the
sampler one per *layout seed* (``generate(..., layout_seed=s)``, default the image seed), placing
free boxes around the given ones and, by default, refining broken relations.
:meth:`SceneGraphToImage.predict_layout` returns the boxes and masks alone; writing them into the
graph and generating with the same seed reproduces the image.

Text (``text_dim > 0``): a caption embedding drives FiLM in the generator's residual blocks
(the identity for images without a caption), per-object description embeddings enter the graph
encoder and, with ``style_dim > 0``, a small :class:`TextStylePrior` that maps an object's text
to the distribution of its style code (a learned conditional prior, so "a green circle" is drawn
green). ``text_encoder`` (a :meth:`TextEncoder.load` spec) makes the model encode
``batch.captions`` / ``batch.descriptions`` itself (:meth:`SceneGraphToImage.encode_texts`); the
encoder is frozen, held outside the model's parameters (``pipeline/text.py``), and saved beside
the weights in ``text_encoder/`` when it is a domain CLIP (``config.json`` keeps its spec and
fingerprint), so the checkpoint works after the CLIP folder is moved.

:meth:`SceneGraphToImage.render` is the rendering hook editing uses: a built layout, given style
codes and caption, and feature modulation at :data:`Generator.MODULATION_POINTS`.
"""
from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..config import to_container
from ..data.batch import Batch
from ..errors import ConfigError, DataError
from ..models.encoder import AppearanceEncoder, StyleClusters
from ..models.gcn import GraphEncoder
from ..models.generator import Generator
from ..models.layout import LayoutTensors, build_layout, compose, layout_channels
from ..models.text_prior import TextStylePrior
from .checkpoint import SceneGraphCheckpointMixin
from .inputs import check_style_codes, graph_items, pack_style_codes
from .layouts import LayoutMixin, build_layout_predictor
from .model_config import SECTION_DEFAULTS, check_section, make_vocab, model_kwargs
from .outputs import ModelOutput
from .text import TextConditioningMixin, load_text_encoder

LAYOUT_SOURCES = ("gt", "pred")
STYLE_SOURCES = ("encode", "sample", "cluster")


class SceneGraphToImage(LayoutMixin, TextConditioningMixin, SceneGraphCheckpointMixin, nn.Module):
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
        vocab = make_vocab(vocab)
        sections = {name: check_section(name, value, SECTION_DEFAULTS[name])
                    for name, value in (("gcn", gcn), ("layout", layout), ("generator", generator),
                                        ("encoder", encoder), ("clusters", clusters))}
        for key, value in (("image_size", image_size), ("style_dim", style_dim),
                           ("class_embed_dim", class_embed_dim), ("text_dim", text_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "image_size" else 0):
                raise ConfigError(f"model.{key}: expected a {'positive' if key == 'image_size' else 'non-negative'} "
                                  f"integer, got {value!r}")
        text_encoder = to_container(text_encoder)
        if text_encoder is not None and (not isinstance(text_encoder, (str, Path)) or not str(text_encoder).strip()):
            raise ConfigError(f"model.text_encoder: expected a CLIP folder, ARCH=FILE or NAME/TAG (or null), "
                              f"got {text_encoder!r}")
        self.config: dict[str, Any] = {
            "vocab": vocab.to_dict(), "image_size": image_size, "style_dim": style_dim,
            "class_embed_dim": class_embed_dim, "text_dim": text_dim, **copy.deepcopy(sections),
        }
        self.vocab = vocab
        self.image_size = image_size
        self.style_dim, self.class_embed_dim, self.text_dim = style_dim, class_embed_dim, text_dim
        #: Extra information from ``config.json`` (e.g. the training step) after ``from_pretrained``.
        self.metadata: dict[str, Any] = {}

        g, lay = sections["gcn"], dict(sections["layout"])
        self.layout_pooling = lay.pop("pooling")
        stuff_below = lay.pop("stuff_below_things")
        self.use_gt_masks = bool(lay.pop("use_gt_masks"))
        self.mask_size = lay["mask_size"]
        self.gcn = GraphEncoder(vocab.num_objects, vocab.num_predicates, text_dim=text_dim, **g)
        self.layout_predictor = build_layout_predictor(g["width"], vocab.num_predicates, lay)
        self.class_embedding = nn.Embedding(vocab.num_objects, class_embed_dim) if class_embed_dim > 0 else None
        in_channels = layout_channels(vocab.num_objects, class_embed_dim, style_dim)
        self.generator = Generator(in_channels, 3, text_dim=text_dim, style_channels=style_dim, **sections["generator"])
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
        if text_encoder is not None:  # absent from config.json of text-free models, as before
            self.set_text_encoder(load_text_encoder(text_encoder, text_dim), spec=str(text_encoder))

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
        return cls(**model_kwargs(config, **overrides))

    def object_vectors(self, batch: Batch, text_emb: torch.Tensor | None = None,
                       text_mask: torch.Tensor | None = None, obj_text_emb: torch.Tensor | None = None,
                       obj_text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(O, width) graph-convolved object vectors (with the objects' text, as :meth:`forward`)."""
        _, _, obj_text_emb, obj_text_mask = self._check_text_inputs(batch, text_emb, text_mask, obj_text_emb,
                                                                    obj_text_mask)
        return self.gcn(batch.objs, batch.triples, obj_text_emb, obj_text_mask)

    def graph_items(self, graphs: Any) -> list[dict]:
        """Dataset items for scene graphs (see :meth:`generate`), read with this model's vocabulary."""
        return graph_items(graphs, self.vocab)

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

    @property
    def uses_channels_last(self) -> bool:
        """Whether the generator's convolutions are in ``channels_last`` (its input is then put so too)."""
        for p in self.generator.parameters():
            if p.dim() == 4:
                return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        return False

    def render(self, layout: LayoutTensors, style_codes: torch.Tensor | None = None,
               caption_emb: torch.Tensor | None = None, caption_mask: torch.Tensor | None = None,
               modulate: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
               stage: str = "full", trunk: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's images (B, 3, H, W) in [-1, 1] for a built layout: the rendering hook.

        ``style_codes`` (O, style_dim), one row per packed object, are spread into the layout's
        style channels in place of its own (None: keep ``layout.style``); gradients flow back
        to them. ``caption_emb`` (B, text_dim) drives FiLM on the images ``caption_mask`` (B,)
        bool marks (None: all); the others are drawn as without text. ``modulate``: as
        :meth:`Generator.forward` (names in :data:`Generator.MODULATION_POINTS`). ``trunk``:
        :meth:`render_trunk`'s output for the same layout and caption, reused.
        """
        if style_codes is not None:
            if layout.geometry is None:
                raise DataError("render: style_codes given, but the layout has no geometry to spread them with")
            codes = check_style_codes(style_codes, layout.geometry.weights.shape[0], self.style_dim, finite=False)
            layout = dataclasses.replace(layout, style=layout.geometry.spread(codes.to(layout.geometry.weights.dtype)))
        layout_in = layout.tensor()
        if self.uses_channels_last:
            layout_in = layout_in.contiguous(memory_format=torch.channels_last)
        if caption_emb is None or caption_mask is None or bool(caption_mask.all()):
            return self.generator(layout_in, caption_emb, stage=stage, modulate=modulate, trunk=trunk)
        # Instance normalisation works per image, so running the two groups separately equals
        # one pass in which FiLM is the identity on the rows without text.
        with_text, without = caption_mask.nonzero().flatten(), (~caption_mask).nonzero().flatten()
        if trunk is not None:
            raise ConfigError("render: a reused trunk needs a caption for every image or for none")
        a = self.generator(layout_in[with_text], caption_emb[with_text], stage=stage, modulate=modulate)
        b = self.generator(layout_in[without], None, stage=stage, modulate=modulate)
        out = a.new_zeros((layout_in.shape[0],) + tuple(a.shape[1:]))
        return out.index_copy(0, with_text, a).index_copy(0, without, b.to(a.dtype))

    @torch.no_grad()
    def render_trunk(self, layout: LayoutTensors, caption_emb: torch.Tensor | None = None) -> torch.Tensor | None:
        """What :meth:`render` may reuse (``trunk=``) while only style codes and modulations change,
        for this layout and ``caption_emb`` (given for every image, or None); None where the
        generator's encoder reads the style channels."""
        if self.generator.trunk_sees_style:
            return None
        layout_in = layout.tensor()
        if self.uses_channels_last:
            layout_in = layout_in.contiguous(memory_format=torch.channels_last)
        return self.generator.trunk(layout_in, caption_emb)

    def forward(self, batch: Batch, layout_source: str = "gt", style_source: str = "encode",
                text_emb: torch.Tensor | None = None, obj_text_emb: torch.Tensor | None = None,
                obj_text_mask: torch.Tensor | None = None, stage: str = "full",
                generator: torch.Generator | None = None, keep_known_boxes: bool = True,
                style_codes: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                layout_noise: torch.Tensor | None = None, refine: bool = False) -> ModelOutput:
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

        Layout sampler only: in training mode with ``layout_source='gt'`` the layout is the
        posterior pass :meth:`LayoutSampler.losses` needs (``ModelOutput.layout_sample``); else
        free boxes are drawn from ``layout_noise`` (O, z_dim + 1) (None: from ``generator``).
        ``refine``: repair broken relations of the free predicted boxes (either predictor).

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
        boxes_pred, mask_logits, layout_sample = self.predict_boxes(
            batch, obj_vecs, training_pass=self.training and layout_source == "gt",
            keep_known_boxes=keep_known_boxes, generator=generator, noise=layout_noise, refine=refine)
        boxes, masks = self._layout_geometry_inputs(batch, boxes_pred, mask_logits, layout_source, keep_known_boxes)
        geometry = self._compose(batch, boxes, masks)

        prior_mu = prior_logvar = prior_mask = None
        if self.style_prior is not None and (text_emb is not None or obj_text_emb is not None):
            prior_mu, prior_logvar, prior_mask = self._text_prior(batch, obj_vecs, text_emb, text_mask,
                                                                  obj_text_emb, obj_text_mask)

        mu = logvar = codes = None
        if style_codes is not None:
            codes = check_style_codes(style_codes, batch.objs.shape[0], self.style_dim).to(obj_vecs.device)
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
                    raise ConfigError("style_source='cluster': the style clusters are not fitted (run "
                                      "`layout2img fit-styles --checkpoint DIR`, or train with train.fit_styles > 0)")
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
        images = self.render(layout, caption_emb=text_emb, caption_mask=text_mask, stage=stage)
        return ModelOutput(images=images, boxes_pred=boxes_pred, mask_logits=mask_logits, boxes=boxes, masks=masks,
                           layout=layout, style_mu=mu, style_logvar=logvar, style_codes=codes, obj_vecs=obj_vecs,
                           prior_mu=prior_mu, prior_logvar=prior_logvar, prior_mask=prior_mask,
                           layout_sample=layout_sample)

    @torch.no_grad()
    def generate(self, graphs: Any, seed: int = 0, text: Any = None, num_samples: int = 1,
                 return_layout: bool = False, layout_source: str = "pred", style_source: str | None = None,
                 style_codes: Any = None, return_output: bool = False, layout_seed: int | None = None,
                 refine: bool | None = None):
        """Images for scene graphs: (len(graphs) * num_samples, 3, H, W) in [-1, 1].

        ``graphs``: a :class:`~layout2img.graph.SceneGraph`, an sg2im dict
        (``{"objects": [...], "relationships": [[s, "pred", o], ...], "boxes": [...]}``) or a
        list of them; samples of one graph are consecutive. The same ``seed`` gives the same
        pixels on CPU (a private ``torch.Generator``; the global RNG is untouched). A graph
        with ``boxes`` keeps them (masks are still predicted); otherwise boxes are predicted.
        A layout sampler draws them from ``layout_seed`` (None: ``seed``), sample k of a graph
        from the k-th noise block of its own generator (:meth:`predict_layout` gives the same
        layouts); ``refine`` (None: :attr:`refines_by_default`) repairs broken relations.
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
        batch, per_graph, noise = self.layout_batch(graphs, seed if layout_seed is None else layout_seed,
                                                    num_samples, text=text)
        if style_codes is not None:
            style_codes = pack_style_codes(style_codes, per_graph, num_samples, self.style_dim).to(self.device)
        refine = self.refines_by_default if refine is None else bool(refine)
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        was_training = self.training
        self.eval()
        try:
            texts = self.encode_texts(batch).as_kwargs() if self.text_encoder is not None else {}
            out = self.forward(batch, layout_source=layout_source, style_source=style_source, generator=rng,
                               style_codes=style_codes, layout_noise=noise, refine=refine, **texts)
        finally:
            self.train(was_training)
        images = out.images.float().clamp(-1, 1)
        if return_output:
            return dataclasses.replace(out, images=images)
        return (images, out.layout) if return_layout else images


def _full_precision(device: torch.device):
    """Autocast switched off (where autocast exists for the device)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()
