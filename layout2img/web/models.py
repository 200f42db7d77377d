"""The editor API's request and answer models (pydantic): what ``/openapi.json`` and ``/docs`` describe.

Requests are checked here field by field (types, ranges, unknown fields), each problem one line
naming its field (:func:`error_lines`); what depends on the model or the graph (the vocabulary,
the number of objects, whether the model reads text) is checked by :mod:`.service`. The graph
itself is checked by the project's graph validator, which names every bad object and relation,
so here it only has to be one JSON object.
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

MAX_SEED = 2**63 - 1
#: The largest magnitude of one value of an explicit style code (codes are about N(0, I)).
MAX_CODE_VALUE = 100.0
MAX_TEXT = 200
MAX_NEGATIVES = 8
MAX_STEPS = 200
MAX_RESTARTS = 12


def _shown(v: Any) -> str:
    return json.dumps(v, default=str)[:40]


def _integer(v: Any) -> int | None:
    """``v`` as an int, or None: an int that is not a bool, or a float with no fraction (JSON
    Schema's integers include 3.0)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v if isinstance(v, int) else None


def _seed(v: Any) -> int:
    n = _integer(v)
    if n is None or not 0 <= n <= MAX_SEED:
        raise ValueError(f"must be an integer between 0 and 2**63-1, got {_shown(v)}")
    return n


def _int_in(low: int, high: int):
    def check(v: Any) -> Any:
        n = _integer(v)
        if v is not None and (n is None or not low <= n <= high):
            raise ValueError(f"must be an integer from {low} to {high}, got {_shown(v)}")
        return n
    return check


def _code_value(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > MAX_CODE_VALUE:
        raise ValueError(f"must be a finite number within +-{MAX_CODE_VALUE:g}, got {_shown(v)}")
    return float(v)


def _one_graph(v: Any) -> Any:
    if not isinstance(v, dict):
        raise ValueError("must be one scene graph (a JSON object with 'objects')")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_TEXT:
        raise ValueError(f"must be a non-empty string of at most {MAX_TEXT} characters "
                         "(what the region should show, e.g. \"a green circle\")")
    return " ".join(v.split())


def _negatives(v: Any) -> list[str]:
    if (not isinstance(v, list) or len(v) > MAX_NEGATIVES
            or not all(isinstance(t, str) and t.strip() and len(t) <= MAX_TEXT for t in v)):
        raise ValueError(f"must be a list of at most {MAX_NEGATIVES} non-empty strings (texts the region "
                         "should not match)")
    return [" ".join(t.split()) for t in v]


def _target(v: Any) -> Any:
    if v is None or _integer(v) is not None:
        if v is not None and _integer(v) < 0:
            raise ValueError(f"{_shown(v)}: an object index is >= 0")
        return None if v is None else _integer(v)
    if isinstance(v, list):
        ok = len(v) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                 for x in v)
        if not ok or not (0 <= v[0] < v[2] <= 1 and 0 <= v[1] < v[3] <= 1):
            raise ValueError(f"box {_shown(v)}: expected [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
                             "0 <= y0 < y1 <= 1")
        return [float(x) for x in v]
    raise ValueError("must be an object index, a box [x0, y0, x1, y1], or null (the whole image)")


def _box(v: Any) -> list[float]:
    ok = isinstance(v, list) and len(v) == 4 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok or not (0 <= v[0] < v[2] <= 1 and 0 <= v[1] < v[3] <= 1):
        raise ValueError(f"box {_shown(v)}: expected [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
                         "(fractions of the picture)")
    return [float(x) for x in v]


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > MAX_TEXT:
        raise ValueError(f"must be an object class name (a non-empty string), got {_shown(v)}")
    return v.strip()


def _picture(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("data:image/") or ";base64," not in v[:80]:
        raise ValueError(f"must be a picture as a base64 data URL (data:image/png;base64,...), got {_shown(v)}")
    return v


def _mapping(v: Any) -> dict[int, int] | None:
    if v is None:
        return None
    usage = 'must map object indices of targets to reference object indices, e.g. {"0": 2}'
    if not isinstance(v, dict):
        raise ValueError(usage)
    out: dict[int, int] = {}
    for key, ref in v.items():
        target = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10 else \
            _integer(key) if not isinstance(key, str) else None
        ref_index = _integer(ref)
        if target is None or target < 0 or ref_index is None or ref_index < 0:
            raise ValueError(f"{usage}; got {_shown(key)}: {_shown(ref)}")
        out[target] = ref_index
    return out


def _flag(v: Any) -> Any:
    if v is not None and not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


_BOX_SCHEMA = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4}
GRAPH_SCHEMA = {
    "type": "object", "title": "SceneGraph", "required": ["objects"],
    "description": "One scene graph in sg2im form (networkx node-link JSON is accepted too). `boxes` "
                   "[x0, y0, x1, y1] in [0, 1] pin objects; null leaves an object's box to the model.",
    "properties": {
        "objects": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "class names of the vocabulary"},
        "relationships": {"type": "array", "items": {"type": "array", "minItems": 3, "maxItems": 3,
                                                     "prefixItems": [{"type": "integer"}, {"type": "string"},
                                                                     {"type": "integer"}]},
                          "description": "[subject index, predicate, object index]"},
        "boxes": {"type": "array", "items": {"anyOf": [_BOX_SCHEMA, {"type": "null"}]}},
        "descriptions": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "caption": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}

def _schema(kind: str, low: float, high: float, nullable: bool = False) -> WithJsonSchema:
    """The JSON schema of a field checked by a before-validator (pydantic cannot see its bounds)."""
    schema = {"type": kind, "minimum": low, "maximum": high}
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]} if nullable else schema)


Seed = Annotated[int, BeforeValidator(_seed), _schema("integer", 0, MAX_SEED)]
OptionalSeed = Annotated[int | None, BeforeValidator(lambda v: v if v is None else _seed(v)),
                         _schema("integer", 0, MAX_SEED, nullable=True)]
Graph = Annotated[dict[str, Any], BeforeValidator(_one_graph), WithJsonSchema(GRAPH_SCHEMA)]
CodeValue = Annotated[float, BeforeValidator(_code_value), _schema("number", -MAX_CODE_VALUE, MAX_CODE_VALUE)]
Target = Annotated[int | list[float] | None, BeforeValidator(_target), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0}, _BOX_SCHEMA, {"type": "null"}],
    "description": "an object index, a box [x0, y0, x1, y1], or null for the whole image"})]


Box = Annotated[list[float], BeforeValidator(_box), WithJsonSchema(_BOX_SCHEMA)]
ObjectName = Annotated[str, BeforeValidator(_name), WithJsonSchema({"type": "string", "minLength": 1,
                                                                      "maxLength": MAX_TEXT})]
Picture = Annotated[str, BeforeValidator(_picture), WithJsonSchema({
    "type": "string", "pattern": "^data:image/[a-z.+-]+;base64,",
    "description": "the picture as a data URL, e.g. data:image/png;base64,... (the page sends a PNG "
                   "at the model's image size)"})]
ObjectMap = Annotated[dict[int, int] | None, BeforeValidator(_mapping), WithJsonSchema({
    "anyOf": [{"type": "object", "propertyNames": {"pattern": "^[0-9]+$"},
               "additionalProperties": {"type": "integer", "minimum": 0}}, {"type": "null"}],
    "description": "{target index: reference index}: these targets take that reference object's code"})]


class Strict(BaseModel):
    """A request object: unknown fields are refused with the names it knows."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                name = str(unknown[0])[:40]
                if not cls.model_fields:
                    raise ValueError(f"unknown field {name!r}: send an empty JSON object ({{}})")
                raise ValueError(f"unknown field {name!r} (known: {', '.join(cls.model_fields)})")
        return data


class SceneRequest(Strict):
    """A scene as the page shows it (``POST /api/generate``)."""

    graph: Graph
    seed: Seed = Field(0, description="the image's seed (style codes of objects without style_seeds)")
    layout_seed: OptionalSeed = Field(None, description="a layout sampler draws the free boxes from it "
                                                       "(default: seed); ignored by a box regression")
    style_seeds: list[Seed] | None = Field(None, description="one seed per object: its style code is drawn "
                                                             "from it, so one object can be restyled alone")
    style_codes: list[list[CodeValue] | None] | None = Field(
        None, description="one explicit style code (or null: use its seed) per object, e.g. an edit's")


class EditRequest(SceneRequest):
    """A scene and a text-guided edit of a region of its image (``POST /api/edit``)."""

    text: Annotated[str, BeforeValidator(_text), WithJsonSchema({"type": "string", "minLength": 1,
                                                                 "maxLength": MAX_TEXT})]
    negatives: Annotated[list[str], BeforeValidator(_negatives), WithJsonSchema({
        "type": "array", "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
        "maxItems": MAX_NEGATIVES})] = []
    target: Target
    steps: Annotated[int | None, BeforeValidator(_int_in(0, MAX_STEPS)),
                     _schema("integer", 0, MAX_STEPS, nullable=True)] = None
    restarts: Annotated[int | None, BeforeValidator(_int_in(1, MAX_RESTARTS)),
                        _schema("integer", 1, MAX_RESTARTS, nullable=True)] = None
    modulation: Annotated[bool | None, BeforeValidator(_flag)] = None


class ReferenceGraph(Strict):
    """What a reference picture shows: its objects and where each one is."""

    objects: list[ObjectName] = Field(min_length=1, description="class names of the vocabulary")
    boxes: list[Box] = Field(description="one box [x0, y0, x1, y1] per object, in [0, 1] of the picture")


class AppearanceRequest(Strict):
    """A picture whose objects' appearance a scene should take (``POST /api/appearance``)."""

    image: Picture
    reference: ReferenceGraph
    targets: list[ObjectName] = Field(description="the scene's object class names, in order")
    mapping: ObjectMap = None


class CancelRequest(Strict):
    """An empty JSON object: a cross-site form cannot send one."""


# -- answers -------------------------------------------------------------------------------------
class ErrorAnswer(BaseModel):
    error: str = Field(description="what is wrong, one line")
    errors: list[str] = Field(description="every problem found, one line each (the first is `error`)")


class Health(BaseModel):
    ok: bool


class Info(BaseModel):
    name: str
    version: str
    checkpoint: str | None
    training_step: int | None
    vocab: str
    objects: list[str]
    predicates: list[str]
    image_size: int
    style: bool
    style_dim: int
    style_source: str | None
    style_clusters: dict[str, int]
    layout_sampler: bool
    text: bool
    text_reason: str | None
    region_edit: bool
    region_edit_reason: str | None
    edit_clip: str | None
    appearance: bool
    appearance_reason: str | None
    max_objects: int
    max_body: int
    max_image_body: int = Field(description="the body limit of POST /api/appearance (it carries a picture)")
    max_batch: int


class Generated(BaseModel):
    image: str = Field(description="data:image/png;base64,...")
    layout_image: str
    masks_image: str
    boxes: list[list[float]]
    pinned: list[bool]
    colors: list[str]
    objects: list[str]
    seed: int
    layout_seed: int
    style_seeds: list[int] | None
    warnings: list[str]
    ms: float = Field(description="milliseconds the model took for the batch this request ran in")
    batch: int = Field(description="how many requests that model call drew (1: alone)")


class Appearance(BaseModel):
    codes: list[list[float] | None] = Field(
        description="one style code per target object: the code of the reference object it maps to, else of "
                    "a reference object of its class (the k-th of a class the k-th, cycling), else null")
    reference_codes: list[list[float]] = Field(description="each reference object's code, encoded from the picture")
    ms: float = Field(description="milliseconds the encoding took")


class StyleCluster(BaseModel):
    index: int
    code: list[float]
    color: str = Field(description="#rrggbb: the mean colour of the class drawn with this code")


class Styles(BaseModel):
    object: str
    clusters: list[StyleCluster]


class EditJob(BaseModel):
    job: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    error: str | None
    cancel_requested: bool
    seconds: float
    restart: int | None
    restarts: int | None
    step: int | None
    steps: int | None
    clip: float | None
    best_clip: float | None
    image: str | None = Field(None, description="when done: the edited image")
    style_codes: list[list[float]] | None = Field(None, description="when done: the codes to send back")
    improved: bool | None = None
    clip_before: float | None = None
    clip_after: float | None = None


def error_lines(errors: list[dict]) -> list[str]:
    """pydantic's (or FastAPI's) validation errors as one line each, naming the field."""
    lines = []
    for e in errors:
        loc = list(e.get("loc", ()))
        kind, msg = e.get("type", ""), str(e.get("msg", "invalid"))
        if kind == "json_invalid":
            where = f" at character {loc[1] + 1}" if len(loc) > 1 and isinstance(loc[1], int) else ""
            lines.append(f"request body: malformed JSON{where}: {(e.get('ctx') or {}).get('error', msg)}")
            continue
        place = loc.pop(0) if loc and loc[0] in ("body", "query", "path") else "body"
        field = ""
        for p in loc:
            field += f"[{p}]" if isinstance(p, int) else (f".{p}" if field else str(p))
        if place != "body":  # a URL's part: say which
            lines.append(f"{'missing ' if kind == 'missing' else ''}{place} parameter {field!r}"
                         f"{'' if kind == 'missing' else ': ' + msg.removeprefix('Value error, ')}")
        elif kind == "missing":
            lines.append(f"missing {field!r}")
        elif kind in ("model_attributes_type", "model_type", "dict_type") and not field:
            lines.append("the request must be a JSON object")
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
            lines.append(f"{field!r} {text}" if field else text)
        else:
            lines.append(f"{field!r}: {msg}" if field else f"request: {msg}")
    return lines or ["invalid request"]
