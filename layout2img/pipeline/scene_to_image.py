"""SceneGraphToImage: the whole model, from packed scene graphs to images.

    graph ─► GraphEncoder ─► object vectors ─► LayoutStage (boxes + masks, composed)
          ─► build_layout (class channels ⊕ instance edges ⊕ style map) ─► Generator ─► image

Its constructor's JSON-serialisable keyword arguments are ``self.config`` (``config.json``);
``save_pretrained`` / ``from_pretrained`` write and read that folder (:mod:`.checkpoint`, no pickle)::

    model = SceneGraphToImage.from_pretrained("runs/shapes_64/checkpoints/latest")
    images = model.generate([{"objects": ["circle", "sky", "grass"],
                              "relationships": [[0, "above", 2]]}], seed=0)   # (1, 3, 64, 64)

Layouts: :class:`~.layouts.LayoutStage`; text: :class:`~.text_conditioner.TextConditioner`;
appearance from a picture: :meth:`SceneGraphToImage.encode_styles` (:mod:`.appearance`);
:meth:`SceneGraphToImage.render` is the rendering hook editing uses.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..data.batch import Batch
from ..errors import ConfigError, DataError
from ..io import PretrainedMixin
from ..models.encoder import AppearanceEncoder, StyleClusters
from ..models.gcn import GraphEncoder
from ..models.generator import Generator
from ..models.layout_input import LayoutTensors, build_layout, layout_channels
from ..models.text_prior import TextStylePrior
from . import checkpoint
from .inputs import check_inputs, check_sources, check_style_codes
from .layouts import LayoutStage, build_layout_predictor, full_precision, packed_batch, per_image_layouts
from .model_config import make_vocab, model_config, model_kwargs, with_saved_defaults
from .outputs import ModelOutput, TextInputs
from .text import load_text_encoder
from .styles import draw_style_codes, encode_style_codes
from .text_conditioner import TextConditioner


class SceneGraphToImage(PretrainedMixin, nn.Module):
    """Scene graph -> layout -> image (see the module doc).

    Arguments (all JSON-serialisable): ``vocab`` (a name such as ``'shapes'``, a vocab.json
    path, a :class:`Vocab` or its ``to_dict()``), ``image_size``, ``style_dim`` (0: no style
    channels and no appearance encoder), ``class_embed_dim`` (0: one-hot class channels, else
    learned class embeddings of that size, for large vocabularies), ``text_dim`` (0: no text
    conditioning), ``text_encoder`` (None, or a :meth:`TextEncoder.load` spec - a domain CLIP
    folder, ``ARCH=FILE``, ``NAME/TAG`` - whose ``embed_dim`` must equal ``text_dim``), and the
    sections ``gcn``, ``layout``, ``generator``, ``encoder``, ``clusters`` whose keys and defaults
    are :data:`SECTION_DEFAULTS`.

    Its stages are objects it holds: :attr:`layout_stage` (:class:`LayoutStage`: boxes, masks,
    refinement, composition, the layout losses) and :attr:`text_conditioner`
    (:class:`TextConditioner`: the text encoder, encoded texts, the text style prior).
    """

    MODEL_CLASS, FORMAT_VERSION, EXTRA_FILES = checkpoint.MODEL_CLASS, checkpoint.FORMAT_VERSION, checkpoint.EXTRA_FILES

    def __init__(self, vocab: Any = "shapes", image_size: int | None = None, gcn: Mapping | None = None,
                 layout: Mapping | None = None, generator: Mapping | None = None, encoder: Mapping | None = None,
                 clusters: Mapping | None = None, style_dim: int | None = None, class_embed_dim: int | None = None,
                 text_dim: int | None = None, text_encoder: str | None = None):
        super().__init__()
        vocab = make_vocab(vocab)
        self.config: dict[str, Any] = model_config(
            vocab, {"gcn": gcn, "layout": layout, "generator": generator, "encoder": encoder, "clusters": clusters},
            image_size=image_size, style_dim=style_dim, class_embed_dim=class_embed_dim, text_dim=text_dim,
            text_encoder=text_encoder)
        sections = self.config
        image_size, style_dim, text_dim = sections["image_size"], sections["style_dim"], sections["text_dim"]
        class_embed_dim, text_encoder = sections["class_embed_dim"], sections.get("text_encoder")
        self.vocab = vocab
        self.image_size = image_size
        self.style_dim, self.class_embed_dim, self.text_dim = style_dim, class_embed_dim, text_dim
        #: Extra information from ``config.json`` (e.g. the training step) after ``from_pretrained``.
        self.metadata: dict[str, Any] = {}

        g, lay = sections["gcn"], self.config["layout"]
        self.gcn = GraphEncoder(vocab.num_objects, vocab.num_predicates, text_dim=text_dim, **g)
        self.layout_predictor = build_layout_predictor(g["width"], vocab.num_predicates, lay)
        self.layout_stage = LayoutStage(self.layout_predictor, lay, vocab, image_size, lay["pooling"])
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
        self.register_buffer("stuff_classes", stuff if (lay["stuff_below_things"] and stuff.any()) else None,
                             persistent=False)
        self.text_conditioner = TextConditioner(vocab, text_dim, self.style_prior)
        if text_encoder is not None:
            self.set_text_encoder(load_text_encoder(text_encoder, text_dim), spec=text_encoder)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def layout_channels(self) -> int:
        """Channels of the generator's input (semantic ⊕ edges ⊕ noise ⊕ style)."""
        return self.generator.in_channels

    @property
    def discriminator_layout_channels(self) -> int:
        """Channels of ``LayoutTensors.for_discriminator()`` (semantic ⊕ edges)."""
        return (self.class_embed_dim if self.class_embed_dim > 0 else self.vocab.num_objects - 1) + 1

    # -- the stages' facts and switches ----------------------------------------------------------
    @property
    def samples_layouts(self) -> bool:
        """Whether the layout net draws a layout per seed (``layout.predictor: sampler``)."""
        return self.layout_stage.samples_layouts

    @property
    def refines_by_default(self) -> bool:
        """Whether ``generate`` / ``predict_layout`` repair broken relations unless told."""
        return self.layout_stage.refines_by_default

    def freeze_global_generator(self, frozen: bool) -> None:
        """Hold the coarse-to-fine generator's global net fixed (pix2pixHD's ``niter_fix_global``)."""
        self.generator.freeze_global(frozen)

    @property
    def text_encoder(self):
        """The frozen text encoder on the model's device (it follows the model there on first use
        after a move), or None (then ``generate(text=...)`` fails)."""
        return self.text_conditioner.encoder_on(self.device)

    def set_text_encoder(self, encoder, spec: str | None = None) -> None:
        """Use ``encoder`` (a frozen :class:`TextEncoder` whose ``embed_dim`` is ``text_dim``) or none;
        ``config['text_encoder']`` becomes ``spec`` (default: the encoder's name)."""
        self.text_conditioner.set_encoder(encoder)
        if encoder is None:
            self.config.pop("text_encoder", None)
        else:
            self.config["text_encoder"] = str(spec if spec is not None else encoder.name)

    def encode_texts(self, batch: Batch, drop_prob: float = 0.0, generator: torch.Generator | None = None,
                     captions: Sequence[str | None] | None = None, ground_captions: bool = True,
                     cache: bool = True) -> TextInputs:
        """Caption and description embeddings of a batch with the model's text encoder (the
        arguments: :meth:`TextConditioner.encode`)."""
        return self.text_conditioner.encode(batch, self.device, drop_prob, generator, captions, ground_captions,
                                            cache)

    # -- saving and loading (PretrainedMixin's hooks) --------------------------------------------
    def pretrained_config(self) -> dict[str, Any]:
        return checkpoint.checkpoint_config(self)

    def save_extra_files(self, folder: Path) -> None:
        checkpoint.save_checkpoint_files(self, folder)

    def load_pretrained_state(self, state: dict[str, Any], where: Path) -> None:
        super().load_pretrained_state(checkpoint.with_later_tensors(state, self.state_dict()), where)

    @classmethod
    def read_pretrained_config(cls, folder: str | Path) -> dict[str, Any]:
        # keys an older folder lacks keep the meaning they had when it was written
        return with_saved_defaults(super().read_pretrained_config(folder))

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], folder: Path) -> "SceneGraphToImage":
        return checkpoint.model_from_checkpoint_config(cls.from_config, config, folder)

    @classmethod
    def from_config(cls, config: Any, **overrides) -> "SceneGraphToImage":
        """Build from a run config (YAML path, or a dict / DictConfig with a ``model:`` section)
        or from a model section itself. ``overrides`` replace top-level model keys."""
        return cls(**model_kwargs(config, **overrides))

    # -- the forward pass ----------------------------------------------------------------------
    def object_vectors(self, batch: Batch, text_emb: torch.Tensor | None = None,
                       text_mask: torch.Tensor | None = None, obj_text_emb: torch.Tensor | None = None,
                       obj_text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(O, width) graph-convolved object vectors (with the objects' text, as :meth:`forward`)."""
        _, _, obj_text_emb, obj_text_mask = self.text_conditioner.check_inputs(batch, text_emb, text_mask,
                                                                               obj_text_emb, obj_text_mask)
        return self.gcn(batch.objs, batch.triples, obj_text_emb, obj_text_mask)

    @property
    def uses_channels_last(self) -> bool:
        """Whether the generator's convolutions are in ``channels_last`` (its input is then put so too)."""
        conv = next((p for p in self.generator.parameters() if p.dim() == 4), None)
        return conv is not None and conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()

    def generator_input(self, layout: LayoutTensors) -> torch.Tensor:
        layout_in = layout.tensor()
        return layout_in.contiguous(memory_format=torch.channels_last) if self.uses_channels_last else layout_in

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
        layout_in = self.generator_input(layout)
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
        return self.generator.trunk(self.generator_input(layout), caption_emb)

    def forward(self, batch: Batch, layout_source: str = "gt", style_source: str = "encode",
                text_emb: torch.Tensor | None = None, obj_text_emb: torch.Tensor | None = None,
                obj_text_mask: torch.Tensor | None = None, stage: str = "full",
                generator: torch.Generator | None = None, keep_known_boxes: bool = True,
                style_codes: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                layout_noise: torch.Tensor | None = None, refine: bool = False,
                style_known: torch.Tensor | None = None, image_size: int | None = None) -> ModelOutput:
        """Run the model on a packed batch.

        ``layout_source``: ``'gt'`` builds the layout from ``batch.boxes`` / ``batch.masks``
        (predicted masks where the batch has none, or with ``layout.use_gt_masks=False``);
        ``'pred'`` from the predictions, boxes the batch knows (``batch.boxes_known``) kept unless
        ``keep_known_boxes=False`` (a dataset graph's fully predicted layout). ``style_source``:
        ``'encode'`` (reparameterised codes of ``batch.images`` pooled over the ground-truth
        layout; training), ``'sample'`` (N(0, I)), ``'cluster'`` (fitted :class:`StyleClusters`);
        random draws use ``generator`` (any device) when given. ``style_codes`` (O, style_dim)
        replaces those codes, or with ``style_known`` (O,) bool only the rows it marks.

        Layout sampler only: in training mode with ``layout_source='gt'`` the layout is the
        posterior pass :meth:`LayoutSampler.losses` needs (``ModelOutput.layout_sample``); else
        free boxes are drawn from ``layout_noise`` (O, z_dim + 1) (None: from ``generator``).
        ``refine``: repair broken relations of the free predicted boxes (either predictor).
        ``image_size``: render at this side instead of the model's (a multiple of the generator's
        ``size_multiple``; ``batch.images``, when encoded, at that size): the trainer's low-resolution
        steps (``train.low_res_steps``), the same network on a coarser layout.

        Text (``text_dim > 0``; :meth:`encode_texts` makes all four): ``text_emb`` (B, text_dim)
        captions for FiLM on the images ``text_mask`` (B,) marks (None: all), ``obj_text_emb`` (O,
        text_dim) / ``obj_text_mask`` (O,) descriptions; objects with text draw their codes from
        the text style prior.
        """
        check_sources(layout_source, style_source)
        num_images, size = batch.num_images, self.image_size if image_size is None else int(image_size)
        if size <= 0 or size % self.generator.size_multiple:
            raise ConfigError(f"image_size {size} is not a positive multiple of {self.generator.size_multiple} "
                              f"(2**(n_downsample + n_local_enhancers))")
        text_emb, text_mask, obj_text_emb, obj_text_mask = self.text_conditioner.check_inputs(
            batch, text_emb, text_mask, obj_text_emb, obj_text_mask)
        obj_vecs = self.gcn(batch.objs, batch.triples, obj_text_emb, obj_text_mask)
        layouts = self.layout_stage
        boxes_pred, mask_logits, layout_sample = layouts.predict_boxes(
            batch, obj_vecs, training_pass=self.training and layout_source == "gt",
            keep_known_boxes=keep_known_boxes, generator=generator, noise=layout_noise, refine=refine)
        boxes, masks = layouts.geometry_inputs(batch, boxes_pred, mask_logits, layout_source, keep_known_boxes)
        geometry = layouts.compose(batch, boxes, masks, self.stuff_classes,
                                   fill_holes=not layouts.uses_given_masks(batch, layout_source), size=size)
        prior_mu, prior_logvar, prior_mask = self.text_conditioner.prior(batch, obj_vecs, text_emb, text_mask,
                                                                         obj_text_emb, obj_text_mask)

        mu = logvar = codes = None
        if style_codes is not None:
            given = check_style_codes(style_codes, batch.objs.shape[0], self.style_dim).to(obj_vecs.device)
        if style_codes is not None and style_known is None:
            codes = given
        elif self.style_dim > 0:
            if style_source == "encode":  # pooled over the ground-truth layout when the batch has one
                enc_geometry = geometry
                if layout_source != "gt" and bool(batch.boxes_known.all()):
                    enc_geometry = layouts.compose(batch, *layouts.geometry_inputs(batch, boxes_pred, mask_logits, "gt"),
                                                   self.stuff_classes, not layouts.uses_given_masks(batch, "gt"), size)
                mu, logvar, codes = encode_style_codes(self.encoder, batch.images, enc_geometry, batch.obj_to_img,
                                                       size, generator)
            else:
                codes = draw_style_codes(style_source, batch.objs, self.style_dim, self.style_clusters, generator,
                                         obj_vecs.device, prior_mu, prior_logvar, prior_mask)
            codes = codes.float()
            if style_codes is not None:  # the rows style_known marks are given, the rest drawn as without them
                codes = torch.where(style_known.to(codes.device)[:, None], given, codes)

        with full_precision(boxes.device):
            layout = build_layout(batch.objs, boxes, masks, batch.obj_to_img, num_images, size,
                                  self.vocab.num_objects, style_codes=codes, class_embedding=self.class_embedding,
                                  geometry=geometry, noise_channels=self.generator.noise_channels, generator=generator,
                                  box_coordinates=self.generator.box_coordinates)
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
        ``style_source``: ``'auto'`` / None (the fitted style clusters when there are any, else
        sampled), ``'cluster'`` or ``'sample'``. ``style_codes``: per graph (a list; one entry for
        one graph) fixed codes for all its samples: an ``(num_objects, style_dim)`` tensor, or
        ``{object index: (style_dim,) code}`` for some objects (e.g. :meth:`encode_styles`'), the
        others drawn as without it. With ``return_layout`` returns ``(images, LayoutTensors)``;
        with ``return_output`` the whole :class:`ModelOutput` (images clamped; boxes and masks as
        used, one row per object, each graph's ``__image__`` last). Arguments are checked once
        (:func:`~layout2img.pipeline.inputs.check_inputs`)."""
        request = check_inputs(self, graphs, seed, num_samples, text, style_source, style_codes, layout_seed, refine)
        batch, noise = packed_batch(request, self.layout_stage, self.device)
        codes = request.style_codes.to(self.device) if request.style_codes is not None else None
        rng = torch.Generator(device="cpu").manual_seed(request.seed)
        with self.evaluating():
            texts = self.encode_texts(batch).as_kwargs() if self.text_encoder is not None else {}
            out = self.forward(batch, layout_source=layout_source, style_source=request.style_source, generator=rng,
                               style_codes=codes, style_known=request.style_known, layout_noise=noise,
                               refine=request.refine, **texts)
        images = out.images.float().clamp(-1, 1)
        if return_output:
            return dataclasses.replace(out, images=images)
        return (images, out.layout) if return_layout else images

    @torch.no_grad()
    def predict_layout(self, graphs: Any, seed: int = 0, refine: bool | None = None, num_samples: int = 1,
                       pinned: Any = None, text: Any = None) -> list[dict[str, torch.Tensor]]:
        """Each graph's layout without drawing an image: ``len(graphs) * num_samples`` dicts
        ``{"boxes": (N, 4), "masks": (N, M, M)}`` (N: the graph's objects; mask probabilities),
        the samples of one graph consecutive, exactly the layouts ``generate(graphs, seed=...,
        layout_seed=seed, num_samples=..., refine=refine)`` draws.

        ``graphs`` as :meth:`generate`. The sampler draws sample k of a graph from the k-th noise
        block of ``torch.Generator().manual_seed(seed)`` (whatever the batch); the regression has
        one layout per graph. Boxes in a graph, and ``pinned`` (per graph None or one box or None
        per object) stay exactly. ``refine`` (None: the model's default, :attr:`refines_by_default`)
        repairs broken relations of the free boxes (``layout.refine_steps`` steps). ``text``: the
        captions ``generate`` would take (they reach the objects they name).
        """
        request = check_inputs(self, graphs, seed, num_samples, text, refine=refine, pinned=pinned)
        batch, noise = packed_batch(request, self.layout_stage, self.device)
        with self.evaluating():
            texts = self.encode_texts(batch).as_kwargs() if self.text_encoder is not None else {}
            obj_vecs = self.object_vectors(batch, **texts)
            boxes, mask_logits, _ = self.layout_stage.predict_boxes(batch, obj_vecs, noise=noise,
                                                                    refine=request.refine)
        return per_image_layouts(batch, boxes, mask_logits)

    def encode_styles(self, image: Any, graph: Any, masks: Any = None) -> torch.Tensor:
        """(N, style_dim) codes of a reference graph's N objects from a user's picture: ``image`` a
        (3, S, S) tensor in [-1, 1] at the model's size, a PIL image or a file path; ``graph``'s
        ``boxes`` say where each object is in it; ``masks`` (N, M, M) or None (predicted). What
        ``generate(style_codes=...)`` takes (:mod:`~layout2img.pipeline.appearance`)."""
        from .appearance import encode_reference

        return encode_reference(self, image, graph, masks)[1]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The model in eval mode inside the block, its training mode restored after."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)
