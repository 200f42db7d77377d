"""Differentiable relation hinges on boxes and the test-time refinement that lowers them.

The hinges follow :func:`layout2img.relations.geometric_relation` (sg2im's rules): ``inside`` /
``surrounding`` need strict containment; the four directions need the angle between the two
centres in their quadrant *and* no containment either way (containment would win). Each hinge
is zero when its relation holds with ``margin`` to spare, so a layout driven to zero hinge
satisfies the rule exactly as the evaluation checks it.

Centres are box centres, or, given per-object centre fractions (where the mask centroid sits
inside its box, :func:`mask_centre_fractions`), the mask centroids the evaluation uses; the
fractions are held fixed, so a centroid moves with its box.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import GraphError
from .layout import mask_centroids

#: The predicates the hinges know, by kind code (the position in this tuple).
GEOMETRIC_KINDS = ("left of", "right of", "above", "below", "inside", "surrounding")


def predicate_kinds(triples: torch.Tensor, predicate_names: Sequence[str]) -> torch.Tensor:
    """(T,) long: each triple's index in :data:`GEOMETRIC_KINDS`, or -1 for other predicates."""
    if triples.numel() and int(triples[:, 1].max()) >= len(predicate_names):
        bad = int((triples[:, 1] >= len(predicate_names)).nonzero()[0])
        raise GraphError(f"triple {bad}: predicate index {int(triples[bad, 1])} is outside the "
                         f"{len(predicate_names)} predicate names")
    table = torch.tensor([GEOMETRIC_KINDS.index(n) if n in GEOMETRIC_KINDS else -1 for n in predicate_names],
                         dtype=torch.long, device=triples.device)
    return table[triples[:, 1]] if triples.numel() else torch.zeros(0, dtype=torch.long, device=triples.device)


def mask_centre_fractions(mask_probs: torch.Tensor) -> torch.Tensor:
    """(O, 2) where each box-relative mask's centroid lies in its box, as fractions (0.5 if empty)."""
    unit = mask_probs.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(mask_probs.shape[0], 4)
    return mask_centroids(unit, mask_probs).to(mask_probs.dtype)


def centres_of(boxes: torch.Tensor, fractions: torch.Tensor | None = None) -> torch.Tensor:
    """(O, 2) points at ``fractions`` (default: the middle) of each box."""
    if fractions is None:
        return (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes[:, :2] + fractions.to(boxes.dtype) * (boxes[:, 2:] - boxes[:, :2])


def _check(boxes: torch.Tensor, triples: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise GraphError(f"boxes: expected shape (O, 4), got {tuple(boxes.shape)}")
    if triples.dim() != 2 or triples.shape[1] != 3:
        raise GraphError(f"triples: expected shape (T, 3), got {tuple(triples.shape)}")
    if triples.numel():
        ends = triples[:, [0, 2]]
        if int(ends.min()) < 0 or int(ends.max()) >= boxes.shape[0]:
            bad = int(((ends < 0) | (ends >= boxes.shape[0])).any(1).nonzero()[0])
            raise GraphError(f"triple {bad}: object index outside 0..{boxes.shape[0] - 1}")


def relation_hinge(boxes: torch.Tensor, triples: torch.Tensor, predicate_names: Sequence[str],
                   fractions: torch.Tensor | None = None, margin: float = 0.02) -> torch.Tensor:
    """(T,) non-negative violation of each triple's relation (0 for non-geometric predicates).

    ``boxes`` (O, 4) normalised ``[x0, y0, x1, y1]``; ``triples`` (T, 3) ``[subject, predicate,
    object]``; ``fractions`` (O, 2) centre positions inside the boxes (None: box centres).
    """
    _check(boxes, triples)
    kinds = predicate_kinds(triples, predicate_names)
    if triples.numel() == 0:
        return boxes.new_zeros(0)
    s, o = triples[:, 0], triples[:, 2]
    bs, bo = boxes[s], boxes[o]
    centres = centres_of(boxes, fractions)
    dx, dy = centres[s, 0] - centres[o, 0], centres[s, 1] - centres[o, 1]
    # Quadrants of geometric_relation's angle: left |theta| >= 3pi/4 <=> -dx >= |dy|, and so on.
    direction = torch.stack([dx + dy.abs(), -dx + dy.abs(), dy + dx.abs(), -dy + dx.abs()], 1) + margin
    # How far s strictly surrounds o on each side (all four > 0: "surrounding"), and o s.
    s_around_o = torch.stack([bo[:, 0] - bs[:, 0], bs[:, 2] - bo[:, 2], bo[:, 1] - bs[:, 1], bs[:, 3] - bo[:, 3]], 1)
    o_around_s = torch.stack([bs[:, 0] - bo[:, 0], bo[:, 2] - bs[:, 2], bs[:, 1] - bo[:, 1], bo[:, 3] - bs[:, 3]], 1)
    # Containment is strict, so a shared edge (common between stuff regions) already breaks it: no
    # margin here, or two equal boxes would be pushed apart sideways against the direction's pull.
    not_contained = torch.relu(s_around_o.amin(1)) + torch.relu(o_around_s.amin(1))
    per_kind = torch.cat([torch.relu(direction) + not_contained[:, None],
                          torch.relu(margin - o_around_s).sum(1, keepdim=True),   # inside
                          torch.relu(margin - s_around_o).sum(1, keepdim=True)],  # surrounding
                         dim=1)
    picked = per_kind.gather(1, kinds.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(kinds >= 0, picked, torch.zeros_like(picked))


def thing_pairs(objs: torch.Tensor, obj_to_img: torch.Tensor, triples: torch.Tensor,
                predicate_names: Sequence[str], num_things: int | None) -> torch.Tensor:
    """(P, 2) pairs i < j of things (class 1..num_things) in the same image that no ``inside`` /
    ``surrounding`` triple joins: the boxes a layout should not pile on each other."""
    if not num_things:
        return torch.zeros(0, 2, dtype=torch.long, device=objs.device)
    thing = (objs >= 1) & (objs <= num_things)
    i, j = torch.triu_indices(objs.numel(), objs.numel(), 1, device=objs.device)
    keep = thing[i] & thing[j] & (obj_to_img[i] == obj_to_img[j])
    if triples.numel():
        kinds = predicate_kinds(triples, predicate_names)
        nested = triples[(kinds == GEOMETRIC_KINDS.index("inside")) | (kinds == GEOMETRIC_KINDS.index("surrounding"))]
        if nested.numel():
            n = objs.numel()
            key = torch.minimum(nested[:, 0], nested[:, 2]) * n + torch.maximum(nested[:, 0], nested[:, 2])
            keep &= ~torch.isin(i * n + j, key)
    return torch.stack([i[keep], j[keep]], 1)


def project_boxes(boxes: torch.Tensor, min_size: float = 0.02) -> torch.Tensor:
    """Nearest valid boxes by size and centre: sizes in [min_size, 1], then shifted (never
    shrunk) to lie inside [0, 1]."""
    lo, hi = boxes[:, :2], boxes[:, 2:]
    size = (hi - lo).clamp(min=min_size, max=1.0)
    centre = torch.minimum(torch.maximum((lo + hi) / 2, size / 2), 1 - size / 2)
    return torch.cat([centre - size / 2, centre + size / 2], 1)


def pairwise_iou(boxes: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(P,) IoU of the box pairs ``pairs`` (P, 2) of ``boxes`` (O, 4), differentiable."""
    a, b = boxes[pairs[:, 0]], boxes[pairs[:, 1]]
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-6)


def refine_boxes(boxes: torch.Tensor, triples: torch.Tensor, predicate_names: Sequence[str],
                 fixed: torch.Tensor | None = None, mask_probs: torch.Tensor | None = None, steps: int = 50,
                 lr: float = 0.05, margin: float = 0.02, min_size: float = 0.02,
                 apart: torch.Tensor | None = None, max_iou: float = 1.0) -> torch.Tensor:
    """A few projected gradient steps on the free boxes lowering :func:`relation_hinge`.

    ``fixed`` (O,) bool: boxes returned bit for bit (pinned boxes, ``__image__``); ``mask_probs``
    (O, M, M): relations are judged on mask centroids (their place in the box is kept). Free boxes
    stay inside [0, 1] with sides >= ``min_size``. ``apart`` (P, 2) box pairs (things of one image)
    whose IoU above ``max_iou`` is lowered too during the first ``steps`` steps, by moving the
    boxes (never resizing them), then up to ``steps`` more repair relations alone: a layout net
    regresses towards the mean place, so its things pile up where real ones spread.
    Stops early once every hinge is zero. Returns new boxes (O, 4) in ``boxes``' dtype; gradients
    do not flow through the refinement.
    """
    _check(boxes, triples)
    if steps < 0 or lr <= 0 or not 0 < min_size <= 1 or not 0 <= max_iou:
        raise GraphError(f"refine_boxes: need steps >= 0, lr > 0, 0 < min_size <= 1 and max_iou >= 0, "
                         f"got {steps}, {lr}, {min_size}, {max_iou}")
    if apart is not None and (apart.dim() != 2 or apart.shape[1] != 2):
        raise GraphError(f"refine_boxes: apart must have shape (P, 2), got {tuple(apart.shape)}")
    separating = apart is not None and apart.numel() > 0 and max_iou < 1
    original = boxes.detach()
    fixed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device) if fixed is None else fixed.bool()
    if fixed.shape != (boxes.shape[0],):
        raise GraphError(f"refine_boxes: fixed must have shape ({boxes.shape[0]},), got {tuple(fixed.shape)}")
    fractions = mask_centre_fractions(mask_probs.detach().float()) if mask_probs is not None else None
    free = ~fixed[:, None]
    current = torch.where(free, project_boxes(original.float(), min_size), original.float())
    # With things to spread: first both terms, then (if a relation is still broken) relations alone,
    # so the spreading never costs a relation.
    with torch.enable_grad():
        for step in range(2 * steps if separating else steps):
            spreading = separating and step < steps
            x = current.clone().requires_grad_(True)
            loss = relation_hinge(x, triples, predicate_names, fractions, margin).sum()
            excess = torch.relu(pairwise_iou(x, apart) - max_iou).sum() if spreading else x.new_zeros(())
            if float(loss.detach()) == 0.0 and float(excess.detach()) == 0.0:
                break
            grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
            grad = torch.zeros_like(x) if grad is None else grad
            if excess.requires_grad:
                (g,) = torch.autograd.grad(excess, x)
                shift = (g[:, :2] + g[:, 2:]) / 2  # the overlap's pull as a translation: sizes stay
                grad = grad + torch.cat([shift, shift], 1)
            stepped = project_boxes((x - lr * grad).detach(), min_size)
            current = torch.where(free, stepped, current)
    return torch.where(free, current.to(original.dtype), original)


__all__ = ["GEOMETRIC_KINDS", "predicate_kinds", "mask_centre_fractions", "centres_of", "relation_hinge",
           "project_boxes", "pairwise_iou", "thing_pairs", "refine_boxes"]
