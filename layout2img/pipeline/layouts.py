"""Layouts in the pipeline: the box predictor a config names, seeded layout noise, pinned boxes, refinement.

``model.layout.predictor`` picks the layout net: ``regression`` (:class:`LayoutPredictor`, one
layout per graph) or ``sampler`` (:class:`LayoutSampler`, one layout per seed). The sampler's
draws follow a *layout seed*: each graph takes one noise block per sample from its own
``torch.Generator().manual_seed(layout_seed)`` (:func:`layout_noise`), so a graph's layout does not
depend on the batch it is drawn in, nor on the seed of its style codes. :class:`LayoutMixin` gives
:class:`~layout2img.pipeline.SceneGraphToImage` the layout step of its forward pass and
``predict_layout``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.batch import Batch, collate
from ..errors import ConfigError, GraphError
from ..graph_validation import box_problem
from ..models.layout import LayoutPredictor
from ..models.layout_relations import mask_centre_fractions, refine_boxes, relation_hinge, thing_pairs
from ..models.layout_sampler import LayoutSampler, sample_known_mask
from .inputs import with_captions

PREDICTORS = ("regression", "sampler")
PLACEMENTS = ("sequential", "joint")
#: Refinements of a sampled layout at most: each round refines the boxes, then redraws their masks.
REFINE_ROUNDS = 3
#: The layout section's keys that shape the box and mask head (both predictors have one).
HEAD_KEYS = ("mask_size", "box_hidden", "mask_channels", "mask_norm")


def build_layout_predictor(width: int, num_predicates: int, layout: Mapping[str, Any]) -> nn.Module:
    """The layout net of a completed ``model.layout`` section, its keys checked (ConfigError)."""
    predictor, placement = layout["predictor"], layout["placement"]
    if predictor not in PREDICTORS:
        raise ConfigError(f"model.layout.predictor: expected {' or '.join(PREDICTORS)}, got {predictor!r}")
    if placement not in PLACEMENTS:
        raise ConfigError(f"model.layout.placement: expected {' or '.join(PLACEMENTS)}, got {placement!r}")
    steps = layout["refine_steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"model.layout.refine_steps: expected an integer >= 0, got {steps!r}")
    if not 0 <= float(layout["refine_max_iou"]) <= 1:
        raise ConfigError(f"model.layout.refine_max_iou: expected a value in [0, 1], got {layout['refine_max_iou']!r}")
    if not 0 <= float(layout["known_fraction"]) <= 1:
        raise ConfigError(f"model.layout.known_fraction: expected a value in [0, 1], got {layout['known_fraction']!r}")
    head = {k: layout[k] for k in HEAD_KEYS}
    if predictor == "regression":
        return LayoutPredictor(width, **head)
    return LayoutSampler(width, num_predicates, z_dim=layout["z_dim"], layers=layout["layers"],
                         hidden=layout["hidden"], **head)


def layout_noise(sampler: LayoutSampler, items: Sequence[dict], num_samples: int, seed: int,
                 device=None) -> torch.Tensor:
    """(O, z_dim + 1) noise rows for the batch of ``num_samples`` consecutive copies of each item:
    sample k of an item is the k-th block its own ``Generator().manual_seed(seed)`` draws."""
    blocks = []
    for it in items:
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        blocks += [sampler.draw_noise(int(it["objs"].numel()), rng, device) for _ in range(num_samples)]
    return torch.cat(blocks)


def pin_boxes(batch: Batch, pinned: Any, num_objects: Sequence[int], num_samples: int) -> Batch:
    """``batch`` with user boxes pinned: ``pinned`` holds per graph None or one box (or None) per
    object; a graph's own boxes stay pinned where ``pinned`` gives none. GraphError on a bad box."""
    if not isinstance(pinned, Sequence) or isinstance(pinned, (str, bytes)) or len(pinned) != len(num_objects):
        have = len(pinned) if isinstance(pinned, Sequence) else type(pinned).__name__
        raise GraphError(f"pinned: expected one entry per graph ({len(num_objects)}), got {have}")
    boxes, known = batch.boxes.clone(), batch.boxes_known.clone()
    start = 0
    for g, (pins, n) in enumerate(zip(pinned, num_objects)):
        if pins is not None:
            if not isinstance(pins, Sequence) or len(pins) != n:
                raise GraphError(f"pinned: graph {g}: expected one box or None per object ({n})")
            for i, box in enumerate(pins):
                if box is None:
                    continue
                box = box.tolist() if hasattr(box, "tolist") else list(box)
                why = box_problem(box)
                if why:
                    raise GraphError(f"pinned: graph {g}: object {i}: {why}")
                for k in range(num_samples):  # each sample is a copy of the graph (+ its __image__)
                    row = start + k * (n + 1) + i
                    boxes[row] = torch.tensor(box, dtype=boxes.dtype)
                    known[row] = True
        start += num_samples * (n + 1)
    return dataclasses.replace(batch, boxes=boxes, boxes_known=known)


class LayoutMixin:
    """The layout step of :class:`~layout2img.pipeline.SceneGraphToImage` and ``predict_layout``."""

    layout_predictor: nn.Module

    @property
    def samples_layouts(self) -> bool:
        """Whether the layout net draws a layout per seed (``layout.predictor: sampler``)."""
        return isinstance(self.layout_predictor, LayoutSampler)

    @property
    def refines_by_default(self) -> bool:
        """Whether ``generate`` / ``predict_layout`` refine unless told: when ``layout.refine_steps`` > 0
        (either predictor: a regressed layout breaks relations and piles things up too)."""
        return self.config["layout"]["refine_steps"] > 0

    def predict_boxes(self, batch: Batch, obj_vecs: torch.Tensor, training_pass: bool = False,
                      keep_known_boxes: bool = True, generator: torch.Generator | None = None,
                      noise: torch.Tensor | None = None, refine: bool = False):
        """``(boxes (O, 4), mask logits (O, M, M), LayoutSample or None)`` of a packed batch.

        ``keep_known_boxes``: the batch's known boxes are pinned (the sampler places the others
        around them); else every box is predicted. ``training_pass`` (the sampler): latents from
        the posterior of ``batch.boxes`` with a random subset pinned (:func:`sample_known_mask`),
        for :meth:`LayoutSampler.losses`. ``noise`` (O, z_dim + 1): the sampler's draws (None: from
        ``generator``). ``refine``: projected gradient steps on the free boxes lowering the broken
        relations (``layout.refine_steps``; pinned boxes and ``__image__`` stay).
        """
        net, lay = self.layout_predictor, self.config["layout"]
        known = batch.boxes_known if keep_known_boxes else torch.zeros_like(batch.boxes_known)
        if not self.samples_layouts:
            boxes, mask_logits = net(obj_vecs)
            if refine:
                pinned = torch.where(known[:, None], batch.boxes.to(boxes.dtype), boxes)
                boxes = self._refined(batch, pinned, known | (batch.objs == 0), mask_logits)
            return boxes, mask_logits, None
        if training_pass:
            pins = sample_known_mask(batch.obj_to_img, float(lay["known_fraction"]), generator)
            sample = net(obj_vecs, batch.triples, pins, batch.boxes, gt_boxes=batch.boxes, objs=batch.objs,
                         generator=generator)
            return sample.boxes, sample.mask_logits, sample
        sample = net(obj_vecs, batch.triples, known, batch.boxes, objs=batch.objs, generator=generator, noise=noise,
                     placement=lay["placement"], obj_to_img=batch.obj_to_img)
        boxes, mask_logits = sample.boxes, sample.mask_logits
        if refine and not bool(sample.known.all()):
            for _ in range(REFINE_ROUNDS):
                boxes = self._refined(batch, boxes, sample.known, mask_logits)
                # the masks of the refined boxes (what the sampler gives the graph with these boxes
                # written in) move the centroids the relations are judged on: check, repeat if broken
                mask_logits = net.masks_for(obj_vecs, batch.triples, boxes)
                fractions = mask_centre_fractions(torch.sigmoid(mask_logits.float()))
                if float(relation_hinge(boxes.float(), batch.triples, self.vocab.predicate_names, fractions,
                                        margin=0.0).sum()) == 0.0:
                    break
        return boxes, mask_logits, sample

    def _refined(self, batch: Batch, boxes: torch.Tensor, fixed: torch.Tensor, mask_logits: torch.Tensor):
        layout, names = self.config["layout"], self.vocab.predicate_names
        apart = thing_pairs(batch.objs, batch.obj_to_img, batch.triples, names, self.vocab.num_things)
        return refine_boxes(boxes, batch.triples, names, fixed=fixed, mask_probs=torch.sigmoid(mask_logits.float()),
                            steps=layout["refine_steps"], apart=apart, max_iou=float(layout["refine_max_iou"]))

    def layout_batch(self, graphs: Any, seed: int, num_samples: int, pinned: Any = None, text: Any = None):
        """(packed batch on the model's device, per-graph items, layout noise or None) of ``graphs``,
        ``num_samples`` consecutive copies of each, ``pinned`` boxes applied (see ``predict_layout``)."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        if text is not None and self.text_encoder is None:
            raise ConfigError(f"text given, but this model has no text encoder (text_dim={self.text_dim})")
        per_graph = self.graph_items(graphs)
        if text is not None:
            per_graph = with_captions(per_graph, text)
        batch = collate([it for it in per_graph for _ in range(num_samples)])
        if pinned is not None:
            batch = pin_boxes(batch, pinned, [it["objs"].numel() - 1 for it in per_graph], num_samples)
        noise = layout_noise(self.layout_predictor, per_graph, num_samples, seed, self.device) \
            if self.samples_layouts else None
        return batch.to(self.device), per_graph, noise

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
        batch, per_graph, noise = self.layout_batch(graphs, seed, num_samples, pinned, text)
        refine = self.refines_by_default if refine is None else bool(refine)
        was_training = self.training
        self.eval()
        try:
            texts = self.encode_texts(batch).as_kwargs() if self.text_encoder is not None else {}
            obj_vecs = self.object_vectors(batch, **texts)
            boxes, mask_logits, _ = self.predict_boxes(batch, obj_vecs, noise=noise, refine=refine)
        finally:
            self.train(was_training)
        boxes = torch.where(batch.boxes_known[:, None], batch.boxes.float(), boxes.float())
        masks = torch.sigmoid(mask_logits.float())
        out = []
        for i in range(batch.num_images):
            rows = batch.objects_of(i)[:-1]  # __image__ is each item's last object
            out.append({"boxes": boxes[rows].cpu(), "masks": masks[rows].cpu()})
        return out
