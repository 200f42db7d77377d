"""Caption and description text for Shapes scenes ("a small red circle above a blue square, on grass")."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..relations import geometric_relation


class Thing(Protocol):
    """What a caption reads of a drawn thing (:class:`~layout2img.data.shapes_render.Thing` is one);
    a protocol, so the renderer imports this module and not the other way round."""

    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]
    mask: np.ndarray
    depth: int

    @property
    def description(self) -> str: ...

#: How each stuff region is named in its description.
STUFF_TEXT = {"sky": "the sky", "grass": "grass", "sea": "the sea", "sand": "sand", "wall": "a brick wall",
              "snow": "snow"}
_NUMBER_WORDS = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
_RELATION_WORDS = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "inside": "inside",
    "surrounding": "around",
}


def article(words: str) -> str:
    """``words`` with 'a' or 'an' in front."""
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _phrase(thing: Thing, with_size: bool) -> str:
    size = f"{thing.size} " if with_size and thing.size != "medium" else ""
    return article(f"{size}{thing.color} {thing.shape}")


def _background_phrase(names: list[str]) -> str:
    top, grounds = names[0], names[1:]
    ground = {
        (): "",
        ("grass",): "on grass",
        ("sea",): "over the sea",
        ("sand",): "on sand",
        ("snow",): "on snow",
        ("sea", "sand"): "on sand by the sea",
        ("sea", "grass"): "on grass by the sea",
    }[tuple(grounds)]
    back = "under the sky" if top == "sky" else "in front of a wall"
    return f"{ground} {back}".strip()


def _norm_box(mask: np.ndarray) -> list[float]:
    s = mask.shape[0]
    ys, xs = np.nonzero(mask)
    return [xs.min() / s, ys.min() / s, (xs.max() + 1) / s, (ys.max() + 1) / s]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    s = mask.shape[0]
    ys, xs = np.nonzero(mask)
    return (xs.mean() + 0.5) / s, (ys.mean() + 0.5) / s


def scene_captions(rng, things: list[Thing], stuff_names: list[str]) -> list[str]:
    """Full caption (two most salient things, their relation, the background), a list, a short one."""
    salient = sorted(things, key=lambda t: (-int(t.mask.sum()), t.depth))
    a = salient[0]
    # The partner: the most salient thing that does not look like ``a`` (so the caption can tell them apart).
    b = next((t for t in salient[1:] if (t.shape, t.color) != (a.shape, a.color)), salient[1])
    rel = geometric_relation(_norm_box(a.mask), _norm_box(b.mask), _centroid(a.mask), _centroid(b.mask))
    # Name the size when it tells two look-alikes apart, otherwise now and then.
    twins = lambda t: sum(o.shape == t.shape and o.color == t.color for o in things) > 1  # noqa: E731
    pa = _phrase(a, twins(a) or rng.random() < 0.5)
    pb = _phrase(b, twins(b) or rng.random() < 0.3)
    where = _background_phrase(stuff_names)
    full = f"{pa} {_RELATION_WORDS[rel]} {pb}, {where}"
    listed = [t.description for t in sorted(things, key=lambda t: t.box[0])]
    many = f"{_NUMBER_WORDS[len(things)]} shapes, {', '.join(listed[:-1])} and {listed[-1]}, {where}"
    short = f"{a.description} {_RELATION_WORDS[rel]} {b.description}"
    return [full, many, short]

