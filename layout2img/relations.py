"""Geometric relations between objects, by sg2im's rules.

Box containment gives ``inside`` / ``surrounding``; otherwise the angle of the vector between
the two objects' centres (mask centroids when known, else box centres; y points down) gives
``left of``, ``above``, ``right of`` or ``below``. Datasets use it to make triples; the
evaluation uses it to check that a predicted layout satisfies the input relations.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

# Each relation and its mirror image under a horizontal flip.
HFLIP_PREDICATES = {"left of": "right of", "right of": "left of"}


def box_center(box: Sequence[float]) -> tuple[float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 + x1) / 2, (y0 + y1) / 2


def geometric_relation(
    box_s: Sequence[float],
    box_o: Sequence[float],
    center_s: Sequence[float] | None = None,
    center_o: Sequence[float] | None = None,
) -> str:
    """The sg2im relation of subject ``s`` to object ``o`` (boxes ``[x0, y0, x1, y1]``)."""
    sx0, sy0, sx1, sy1 = (float(v) for v in box_s)
    ox0, oy0, ox1, oy1 = (float(v) for v in box_o)
    if sx0 < ox0 and sx1 > ox1 and sy0 < oy0 and sy1 > oy1:
        return "surrounding"
    if sx0 > ox0 and sx1 < ox1 and sy0 > oy0 and sy1 < oy1:
        return "inside"
    cs = center_s if center_s is not None else box_center(box_s)
    co = center_o if center_o is not None else box_center(box_o)
    theta = math.atan2(float(cs[1]) - float(co[1]), float(cs[0]) - float(co[0]))
    if theta >= 3 * math.pi / 4 or theta <= -3 * math.pi / 4:
        return "left of"
    if theta < -math.pi / 4:
        return "above"
    if theta < math.pi / 4:
        return "right of"
    return "below"


def relation_holds(predicate: str, box_s, box_o, center_s=None, center_o=None) -> bool | None:
    """Whether the geometry satisfies ``predicate``; None for a non-geometric predicate."""
    if predicate not in ("left of", "right of", "above", "below", "inside", "surrounding"):
        return None
    return geometric_relation(box_s, box_o, center_s, center_o) == predicate


def sample_relations(
    boxes: Sequence[Sequence[float]],
    rng: random.Random,
    centers: Sequence[Sequence[float]] | None = None,
) -> list[tuple[int, str, int]]:
    """sg2im's sampling: for each object one random partner, in a random direction.

    Returns ``(subject, predicate_name, object)`` with indices into ``boxes``. The same ``rng``
    state gives the same triples. ``__in_image__`` triples are not included (the caller adds
    them when it appends the ``__image__`` node).
    """
    n = len(boxes)
    triples = []
    if n < 2:
        return triples
    for cur in range(n):
        other = rng.choice([j for j in range(n) if j != cur])
        s, o = (cur, other) if rng.random() > 0.5 else (other, cur)
        cs = centers[s] if centers is not None else None
        co = centers[o] if centers is not None else None
        triples.append((s, geometric_relation(boxes[s], boxes[o], cs, co), o))
    return triples
