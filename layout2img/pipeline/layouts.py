"""Layouts in the pipeline: the box predictor a config names, seeded layout noise, pinned boxes, refinement.

``model.layout.predictor`` picks the layout net: ``regression`` (:class:`LayoutPredictor`, one
layout per graph) or ``sampler`` (:class:`LayoutSampler`, one layout per seed). The sampler's
draws follow a *layout seed*: each graph takes one noise block per sample from its own
``torch.Generator().manual_seed(layout_seed)`` (:func:`layout_noise`), so a graph's layout does not
depend on the batch it is drawn in, nor on the seed of its style codes. :class:`LayoutStage` is the
layout step :class:`~layout2img.pipeline.SceneGraphToImage` holds: boxes, masks, refinement,
composition and the layout net's losses.
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..data.batch import Batch, collate
from ..errors import ConfigError, DataError, GraphError
from ..graph_validation import box_problem
from ..models.layout import LayoutGeometry, LayoutPredictor, compose
from ..models.layout_relations import mask_centre_fractions, refine_boxes, relation_hinge, thing_pairs
from ..models.layout_sampler import LayoutSampler, sample_known_mask

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


class LayoutStage:
    """The layout step of :class:`~layout2img.pipeline.SceneGraphToImage`: object vectors -> boxes
    and masks (predicted, pinned, refined) -> the composed geometry, and the layout net's losses.

    A plain object the model holds beside its modules: ``predictor`` is the model's registered
    ``layout_predictor`` (so checkpoints keep their keys) and ``config`` its ``config['layout']``.
    """

    def __init__(self, predictor: nn.Module, config: dict[str, Any], vocab, image_size: int, pooling: str):
        if config.get("hard") and not config.get("use_gt_masks", True):
            raise ConfigError("model.layout.hard needs model.layout.use_gt_masks: with predicted masks in training "
                              "the image loss supervises them, and a label map passes it no gradient")
        self.predictor, self.config, self.vocab = predictor, config, vocab
        self.image_size, self.pooling = image_size, pooling

    @property
    def samples_layouts(self) -> bool:
        """Whether the layout net draws a layout per seed (``layout.predictor: sampler``)."""
        return isinstance(self.predictor, LayoutSampler)

    @property
    def refines_by_default(self) -> bool:
        """Whether ``generate`` / ``predict_layout`` refine unless told: when ``layout.refine_steps`` > 0
        (either predictor: a regressed layout breaks relations and piles things up too)."""
        return self.config["refine_steps"] > 0

    def noise(self, items: Sequence[dict], num_samples: int, seed: int, device=None) -> torch.Tensor | None:
        """The sampler's draws for ``num_samples`` copies of each item (:func:`layout_noise`); None
        for the regression."""
        return layout_noise(self.predictor, items, num_samples, seed, device) if self.samples_layouts else None

    def predict_boxes(self, batch: Batch, obj_vecs: torch.Tensor, training_pass: bool = False,
                      keep_known_boxes: bool = True, generator: torch.Generator | None = None,
                      noise: torch.Tensor | None = None, refine: bool = False):
        """``(boxes (O, 4), mask logits (O, M, M), LayoutSample or None)`` of a packed batch.

        ``keep_known_boxes``: the batch's known boxes are pinned (the sampler places the others
        around them); else every box is predicted. ``training_pass`` (the sampler): latents from
        the posterior of ``batch.boxes`` with a random subset pinned (:func:`sample_known_mask`),
        for :meth:`losses`. ``noise`` (O, z_dim + 1): the sampler's draws (None: from
        ``generator``). ``refine``: projected gradient steps on the free boxes lowering the broken
        relations (``layout.refine_steps``; pinned boxes and ``__image__`` stay).
        """
        net, lay = self.predictor, self.config
        known = batch.boxes_known if keep_known_boxes else torch.zeros_like(batch.boxes_known)
        if not self.samples_layouts:
            boxes, mask_logits = net(obj_vecs)
            if refine:
                pinned = torch.where(known[:, None], batch.boxes.to(boxes.dtype), boxes)
                boxes = self.refined(batch, pinned, known | (batch.objs == 0), mask_logits)
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
                boxes = self.refined(batch, boxes, sample.known, mask_logits)
                # the masks of the refined boxes (what the sampler gives the graph with these boxes
                # written in) move the centroids the relations are judged on: check, repeat if broken
                mask_logits = net.masks_for(obj_vecs, batch.triples, boxes)
                fractions = mask_centre_fractions(torch.sigmoid(mask_logits.float()))
                if float(relation_hinge(boxes.float(), batch.triples, self.vocab.predicate_names, fractions,
                                        margin=0.0).sum()) == 0.0:
                    break
        return boxes, mask_logits, sample

    def refined(self, batch: Batch, boxes: torch.Tensor, fixed: torch.Tensor, mask_logits: torch.Tensor):
        """``boxes`` after ``layout.refine_steps`` relation-repair steps; ``fixed`` rows stay."""
        names = self.vocab.predicate_names
        apart = thing_pairs(batch.objs, batch.obj_to_img, batch.triples, names, self.vocab.num_things)
        return refine_boxes(boxes, batch.triples, names, fixed=fixed, mask_probs=torch.sigmoid(mask_logits.float()),
                            steps=self.config["refine_steps"], apart=apart,
                            max_iou=float(self.config["refine_max_iou"]))

    def uses_given_masks(self, batch: Batch, layout_source: str) -> bool:
        """Whether a layout from ``layout_source`` takes the batch's masks (else the predicted ones)."""
        return layout_source == "gt" and batch.masks is not None and bool(self.config["use_gt_masks"])

    def geometry_inputs(self, batch: Batch, boxes_pred: torch.Tensor, mask_logits: torch.Tensor,
                        layout_source: str, keep_known_boxes: bool = True):
        """The ``(boxes, mask probabilities)`` a layout is built from: the batch's (``'gt'``; masks
        predicted where it has none or with ``use_gt_masks`` off) or the predicted ones with the
        known boxes kept (``'pred'``)."""
        if layout_source == "gt":
            if not bool(batch.boxes_known.all()):
                missing = int((~batch.boxes_known).nonzero()[0])
                raise DataError(f"layout_source='gt' needs every box; object {missing} of the batch has none")
            boxes = batch.boxes.float()
        elif keep_known_boxes:
            boxes = torch.where(batch.boxes_known[:, None], batch.boxes.float(), boxes_pred.float())
        else:
            boxes = boxes_pred.float()
        if self.uses_given_masks(batch, layout_source):
            masks = batch.masks.float()
        else:
            masks = torch.sigmoid(mask_logits.float())
        return boxes, masks

    def compose(self, batch: Batch, boxes: torch.Tensor, masks: torch.Tensor, stuff_classes: torch.Tensor | None,
                fill_holes: bool = False, size: int | None = None) -> LayoutGeometry:
        """The objects painted into the image plane (``stuff_classes`` under the things, when given).
        ``fill_holes`` (and ``layout.fill_holes``): what no object covers in or between boxes of
        stuff goes to the nearest stuff (:func:`fill_stuff_holes`; for predicted layouts; with
        ``layout.fill_given``, for every layout). ``layout.hard``: filled, then each pixel wholly its
        topmost object's (:func:`label_map_weights`). ``size``: the plane's side (default the model's)."""
        # float32 even under autocast: box placement should not be rounded to bf16
        with full_precision(boxes.device):
            geometry = compose(boxes.float(), masks.float(), batch.obj_to_img, batch.num_images,
                               size or self.image_size, objs=batch.objs, stuff_classes=stuff_classes,
                               skip=batch.objs == 0, pooling=self.pooling)  # __image__ is never drawn
            hard = self.config["hard"]
            fill = hard or self.config["fill_given"] or (fill_holes and self.config["fill_holes"])
            if fill and stuff_classes is not None:
                geometry = fill_stuff_holes(geometry, boxes.float(), stuff_classes[batch.objs] & (batch.objs != 0))
        return label_map_weights(geometry) if hard else geometry

    def losses(self, out, batch: Batch, weights) -> dict[str, torch.Tensor]:
        """The layout net's weighted training losses for a forward pass ``out`` on ``batch``
        (``weights``: the ``loss`` config section): box and mask regression, and for the sampler
        its KL and relation terms too (:meth:`LayoutSampler.losses`)."""
        w = weights
        if out.layout_sample is not None:
            return self.predictor.losses(
                out.layout_sample, batch.boxes, batch.triples, self.vocab.predicate_names, gt_masks=batch.masks,
                objs=batch.objs, beta=w.lambda_layout_kl, lambda_prior=w.lambda_layout_prior, lambda_box=w.lambda_box,
                lambda_relation=w.lambda_layout_relation, lambda_mask=w.lambda_mask)
        return self.predictor.losses(out.boxes_pred, out.mask_logits, batch.boxes, batch.masks, batch.objs,
                                     lambda_box=w.lambda_box, lambda_mask=w.lambda_mask)


def fill_stuff_holes(geometry: LayoutGeometry, boxes: torch.Tensor, is_stuff: torch.Tensor) -> LayoutGeometry:
    """``geometry`` with the pixels no object covers given to the nearest stuff of their image.

    Ground-truth layouts cover every pixel (each belongs to some object's visible mask); predicted
    masks are soft blobs that leave holes between stuff, and predicted stuff boxes need not meet
    (a band between the sky's box and the grass's), which the generator never saw in training
    and the editor draws as unlabelled. Each uncovered share (1 - the sum of the visible weights)
    of a pixel inside a box of stuff, or *between* boxes of stuff (some above and below it, or left
    and right), is split equally among the stuff objects of its image whose boxes are nearest to
    it (those that hold it, when any do); a pixel without a topmost object takes the first of them
    as its instance. Pixels beyond all stuff (no sky in the graph: the top) stay as they were.
    """
    if not bool(is_stuff.any()):
        return geometry
    from ..models.layout import boxes_to_masks_full

    weights, obj_to_img = geometry.weights, geometry.obj_to_img
    H, W = weights.shape[-2:]
    inside = boxes_to_masks_full(boxes, torch.ones(boxes.shape[0], 1, 1, device=boxes.device), H, W) > 0.5
    in_stuff = torch.zeros(geometry.num_images, H, W, device=weights.device).index_add(
        0, obj_to_img, (inside & is_stuff[:, None, None]).float())
    between = _enclosed(in_stuff, 1) | _enclosed(in_stuff, 2)  # stuff above and below, or left and right
    takes = _nearest_boxes(boxes, inside, is_stuff, obj_to_img, geometry.num_images) & between[obj_to_img]
    covered = torch.zeros(geometry.num_images, H, W, device=weights.device, dtype=weights.dtype)
    covered = covered.index_add(0, obj_to_img, weights)
    holders = torch.zeros_like(covered).index_add(0, obj_to_img, takes.to(weights.dtype))
    share = takes.to(weights.dtype) / holders[obj_to_img].clamp(min=1)
    weights = weights + (1 - covered).clamp(min=0)[obj_to_img] * share
    # the instance map: an uncovered pixel takes the lowest-index stuff object nearest to it
    index = torch.arange(1, boxes.shape[0] + 1, device=boxes.device)[:, None, None]
    candidate = torch.where(takes, index, torch.full_like(index, boxes.shape[0] + 1)).expand(-1, H, W)
    first = torch.full_like(geometry.instances, boxes.shape[0] + 1)
    first = first.scatter_reduce(0, obj_to_img[:, None, None].expand(-1, H, W), candidate, reduce="amin")
    holes = (geometry.instances == 0) & (first <= boxes.shape[0])
    instances = torch.where(holes, first, geometry.instances)
    return dataclasses.replace(geometry, weights=weights, instances=instances)


def label_map_weights(geometry: LayoutGeometry) -> LayoutGeometry:
    """``geometry`` with each pixel given wholly to its topmost object (its instance map), as the
    label maps of pix2pixHD and SPADE: no blend of two objects' classes and codes along a soft mask
    edge. The weights carry no gradient to boxes or masks."""
    index = torch.arange(1, geometry.weights.shape[0] + 1, device=geometry.weights.device)[:, None, None]
    hard = (geometry.instances[geometry.obj_to_img] == index).to(geometry.weights.dtype)
    return dataclasses.replace(geometry, weights=hard)


def _enclosed(cover: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, H, W) bool: pixels with ``cover > 0`` at or before them along ``dim`` and at or after them."""
    before = cover.cummax(dim).values > 0
    return before & (cover.flip(dim).cummax(dim).values.flip(dim) > 0)


def _nearest_boxes(boxes: torch.Tensor, inside: torch.Tensor, candidates: torch.Tensor, obj_to_img: torch.Tensor,
                  num_images: int) -> torch.Tensor:
    """(O, H, W): for each pixel, the ``candidates`` of its image whose boxes are nearest to it
    (distance 0 where ``inside``, the box's coverage test; else from the pixel's centre to the box)."""
    H, W = inside.shape[-2:]
    ys = (torch.arange(H, device=boxes.device, dtype=boxes.dtype) + 0.5) / H
    xs = (torch.arange(W, device=boxes.device, dtype=boxes.dtype) + 0.5) / W
    dy = (boxes[:, 1, None] - ys).clamp(min=0) + (ys - boxes[:, 3, None]).clamp(min=0)  # (O, H)
    dx = (boxes[:, 0, None] - xs).clamp(min=0) + (xs - boxes[:, 2, None]).clamp(min=0)  # (O, W)
    dist = torch.where(inside, torch.zeros(()), torch.hypot(dy[:, :, None], dx[:, None, :]))
    dist = torch.where(candidates[:, None, None], dist, torch.full((), float("inf")))
    nearest = torch.full((num_images, H, W), float("inf"), dtype=dist.dtype, device=dist.device)
    nearest = nearest.scatter_reduce(0, obj_to_img[:, None, None].expand(-1, H, W), dist, reduce="amin")
    return torch.isfinite(dist) & (dist <= nearest[obj_to_img] + 1e-6)


def packed_batch(request, stage: LayoutStage, device) -> tuple[Batch, torch.Tensor | None]:
    """(packed batch on ``device``, layout noise or None) of a checked
    :class:`~layout2img.pipeline.inputs.GenerationRequest`: ``num_samples`` consecutive copies of
    each graph, its pinned boxes applied."""
    batch = collate([it for it in request.items for _ in range(request.num_samples)])
    if request.pinned is not None:
        batch = pin_boxes(batch, request.pinned, [it["objs"].numel() - 1 for it in request.items], request.num_samples)
    return batch.to(device), stage.noise(request.items, request.num_samples, request.layout_seed, device)


def per_image_layouts(batch: Batch, boxes: torch.Tensor, mask_logits: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """One ``{"boxes": (N, 4), "masks": (N, M, M)}`` per image (known boxes as given, mask
    probabilities, ``__image__`` left out), on the CPU."""
    boxes = torch.where(batch.boxes_known[:, None], batch.boxes.float(), boxes.float())
    masks = torch.sigmoid(mask_logits.float())
    out = []
    for i in range(batch.num_images):
        rows = batch.objects_of(i)[:-1]  # __image__ is each item's last object
        out.append({"boxes": boxes[rows].cpu(), "masks": masks[rows].cpu()})
    return out


def full_precision(device: torch.device):
    """Autocast switched off (where autocast exists for the device)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()
