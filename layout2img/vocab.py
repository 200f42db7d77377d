"""Vocabularies: object, predicate and attribute names and their indices.

Index 0 of the objects is always ``__image__`` and index 0 of the predicates ``__in_image__``
(sg2im's convention): the code adds that node and those triples, never the user.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

from .errors import VocabError
from .io import atomic_write_text, read_json

IMAGE_OBJECT = "__image__"
IN_IMAGE = "__in_image__"

#: The geometric predicates of sg2im's COCO relations (``relations.py`` computes them).
GEOMETRIC_PREDICATES = ("left of", "right of", "above", "below", "inside", "surrounding")

#: The embedded Shapes world (``data/shapes_render.py`` draws it). Things first, then stuff.
SHAPES_THINGS = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart")
SHAPES_STUFF = ("sky", "grass", "sea", "sand", "wall", "snow")
SHAPES_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES_SIZES = ("small", "medium", "large")


def suggest_name(name: str, names: Sequence[str]) -> str:
    """'; did you mean 'a', 'b'?' naming up to three of ``names`` close to ``name`` (special ``__`` names
    never), or '' when none is close."""
    close = difflib.get_close_matches(name, [n for n in names if not n.startswith("__")], n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@dataclass(frozen=True)
class Vocab:
    """Names and indices of a dataset's objects, predicates and (optionally) attributes."""

    object_names: tuple[str, ...]
    predicate_names: tuple[str, ...]
    attribute_names: tuple[str, ...] = ()
    name: str = "custom"
    #: How many object classes (after ``__image__``) are things; the rest are stuff. None: unknown.
    num_things: int | None = None
    _obj_index: dict = field(init=False, repr=False, compare=False)
    _pred_index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "object_names", tuple(self.object_names))
        object.__setattr__(self, "predicate_names", tuple(self.predicate_names))
        object.__setattr__(self, "attribute_names", tuple(self.attribute_names))
        if not self.object_names or self.object_names[0] != IMAGE_OBJECT:
            raise VocabError(f"vocabulary {self.name!r}: object 0 must be {IMAGE_OBJECT!r}")
        if not self.predicate_names or self.predicate_names[0] != IN_IMAGE:
            raise VocabError(f"vocabulary {self.name!r}: predicate 0 must be {IN_IMAGE!r}")
        for kind, names in (("object", self.object_names), ("predicate", self.predicate_names)):
            seen = set()
            for i, n in enumerate(names):
                if not isinstance(n, str) or not n:
                    raise VocabError(f"vocabulary {self.name!r}: {kind} {i} is not a non-empty string")
                if n in seen:
                    raise VocabError(f"vocabulary {self.name!r}: {kind} name {n!r} appears twice")
                seen.add(n)
        object.__setattr__(self, "_obj_index", {n: i for i, n in enumerate(self.object_names)})
        object.__setattr__(self, "_pred_index", {n: i for i, n in enumerate(self.predicate_names)})

    # -- lookups -------------------------------------------------------------------------------
    @property
    def num_objects(self) -> int:
        return len(self.object_names)

    @property
    def num_predicates(self) -> int:
        return len(self.predicate_names)

    def has_object(self, name: str) -> bool:
        return name in self._obj_index

    def has_predicate(self, name: str) -> bool:
        return name in self._pred_index

    def object_index(self, name: str) -> int:
        try:
            return self._obj_index[name]
        except KeyError:
            raise VocabError(
                f"unknown object {name!r} in vocabulary {self.name!r}{suggest_name(name, self.object_names)}"
            ) from None

    def predicate_index(self, name: str) -> int:
        try:
            return self._pred_index[name]
        except KeyError:
            raise VocabError(
                f"unknown predicate {name!r} in vocabulary {self.name!r}"
                f"{suggest_name(name, self.predicate_names)}"
            ) from None

    def suggest_object(self, name: str) -> str:
        """'; did you mean ...?' for an unknown object name, or ''."""
        return suggest_name(name, self.object_names)

    def suggest_predicate(self, name: str) -> str:
        return suggest_name(name, self.predicate_names)

    def is_stuff(self, index: int) -> bool:
        return self.num_things is not None and index > self.num_things

    # -- serialisation (sg2im's vocab.json layout, so sg2im vocab files load as they are) -------
    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "object_idx_to_name": list(self.object_names),
            "object_name_to_idx": {n: i for i, n in enumerate(self.object_names)},
            "pred_idx_to_name": list(self.predicate_names),
            "pred_name_to_idx": {n: i for i, n in enumerate(self.predicate_names)},
        }
        if self.attribute_names:
            d["attribute_idx_to_name"] = list(self.attribute_names)
            d["attribute_name_to_idx"] = {n: i for i, n in enumerate(self.attribute_names)}
        if self.num_things is not None:
            d["num_things"] = self.num_things
        return d

    @classmethod
    def from_dict(cls, d: dict, name: str | None = None) -> "Vocab":
        if not isinstance(d, dict):
            raise VocabError(f"vocabulary {name or '?'}: expected a JSON object, got {type(d).__name__}")
        name = name or d.get("name", "custom")
        try:
            objects = d.get("object_idx_to_name") or d["objects"]
            preds = d.get("pred_idx_to_name") or d["predicates"]
        except KeyError as e:
            raise VocabError(
                f"vocabulary {name}: missing {e.args[0]!r} (need object_idx_to_name and pred_idx_to_name)"
            ) from None
        objects, preds = list(objects), list(preds)
        # Plain name lists without the special entries are accepted; the code adds them.
        if objects and objects[0] != IMAGE_OBJECT:
            objects.insert(0, IMAGE_OBJECT)
        if preds and preds[0] != IN_IMAGE:
            preds.insert(0, IN_IMAGE)
        attrs = d.get("attribute_idx_to_name") or d.get("attributes") or ()
        # sg2im's VG vocab has near-duplicate attributes ('white' and 'white '); keep them verbatim.
        return cls(objects, preds, tuple(attrs), name=name, num_things=d.get("num_things"))

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocab":
        return cls.from_dict(read_json(path, "vocabulary file", VocabError), name=str(path))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    # -- the built-in vocabularies -------------------------------------------------------------
    @classmethod
    def coco_stuff(cls, include_other: bool = False) -> "Vocab":
        """The 182 COCO-Stuff labels; index == COCO category id (1-91 things, 92-182 stuff)."""
        return _coco_stuff(include_other)

    @classmethod
    def visual_genome(cls) -> "Vocab":
        """sg2im's Visual Genome vocabulary: 179 objects, 46 predicates, 80 attributes."""
        return _visual_genome()

    @classmethod
    def shapes(cls) -> "Vocab":
        """The embedded Shapes world: 8 geometric things, 6 stuff backgrounds, colours as attributes."""
        return cls(
            (IMAGE_OBJECT, *SHAPES_THINGS, *SHAPES_STUFF),
            (IN_IMAGE, *GEOMETRIC_PREDICATES),
            SHAPES_COLORS + SHAPES_SIZES,
            name="shapes",
            num_things=len(SHAPES_THINGS),
        )

    @classmethod
    def by_name(cls, name: str) -> "Vocab":
        """'coco-stuff' | 'coco' | 'vg' | 'visual-genome' | 'shapes' | a path to a vocab.json."""
        key = name.lower().replace("_", "-")
        if key in ("coco-stuff", "coco", "cocostuff"):
            return cls.coco_stuff()
        if key in ("vg", "visual-genome", "visualgenome"):
            return cls.visual_genome()
        if key == "shapes":
            return cls.shapes()
        if Path(name).suffix == ".json" or Path(name).exists():
            return cls.from_file(name)
        raise VocabError(f"unknown vocabulary {name!r}: use coco-stuff, vg, shapes or a path to a vocab.json")


@lru_cache(maxsize=2)
def _coco_stuff(include_other: bool) -> Vocab:
    text = resources.files("layout2img.resources").joinpath("cocostuff-labels.txt").read_text("utf-8")
    names = [IMAGE_OBJECT]
    for line in text.splitlines():
        idx, _, label = line.partition(":")
        if line.strip() and int(idx) > 0:
            assert int(idx) == len(names), "cocostuff-labels.txt must list ids 1..182 in order"
            names.append(label.strip())
    if include_other:
        names.append("other")  # COCO-Stuff category 183
    return Vocab(names, (IN_IMAGE, *GEOMETRIC_PREDICATES), name="coco-stuff", num_things=91)


@lru_cache(maxsize=1)
def _visual_genome() -> Vocab:
    with resources.as_file(resources.files("layout2img.resources") / "vg-vocab-sg2im.json") as path:
        return Vocab.from_dict(read_json(path, "Visual Genome vocabulary", VocabError), name="vg")
