"""The editor's model service: request parsing, the model's turns, and /api/generate (no HTTP here).

A request describes one scene as the page shows it: ``graph`` (sg2im form; its ``boxes`` may
hold ``null`` for objects whose box is predicted), ``seed``, ``layout_seed`` (a layout sampler
draws the free boxes from it, around the pinned ones; default: ``seed``; "New layout" on the page
sends another), ``style_seeds`` (one integer per
object: its style code is drawn from it, so one object can be restyled alone) and
``style_codes`` (one explicit code or ``null`` per object: codes an edit found, which override
the seeds). Seeds draw codes as the server's ``--style`` says (a random one of the class's
fitted style clusters, or N(0, I)); ``/api/styles`` gives each class's clusters with a colour
swatch apiece (:mod:`.styles`). Generate requests and edit steps take turns on the model
(:class:`ModelTurns`).
"""
from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from ..errors import GraphError
from .protocol import RequestError, parse_seed, png_data_url

MAX_BODY = 64 * 1024
MAX_WAITING = 16
#: The largest magnitude of one value of an explicit style code (codes are about N(0, I)).
MAX_CODE_VALUE = 100.0
SCENE_FIELDS = ("graph", "seed", "layout_seed", "style_seeds", "style_codes")
#: Side of the layout pictures the page shows under its boxes.
PICTURE_SIDE = 256


def valid_box(box) -> list[float]:
    """A predicted box as a valid graph box (clamped to [0, 1], at least 1e-3 wide and high)."""
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
    x0, y0 = min(x0, 1 - 1e-3), min(y0, 1 - 1e-3)
    return [x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)]


class ModelTurns:
    """One model, several callers, one at a time: a waiting request (``request()``) goes before
    background work (``background()``, edit jobs), and background work that holds its turn for
    long calls ``pause()`` between steps, so a generate request waits one edit step, not a whole
    edit. Background turns are served in arrival order, so concurrent edits alternate steps."""

    def __init__(self):
        self._cond = threading.Condition()
        self._held = False
        self._requests_waiting = 0
        self._background: deque[int] = deque()  # tickets of waiting background work, in order
        self._next_ticket = 0

    @contextlib.contextmanager
    def request(self):
        with self._cond:
            self._requests_waiting += 1
            try:
                while self._held:
                    self._cond.wait()
            finally:
                self._requests_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def background(self):
        self._acquire_background()
        try:
            yield
        finally:
            self._release()

    def pause(self) -> None:
        """Let everything waiting go first, then take the turn back (call while holding one)."""
        with self._cond:
            if not self._requests_waiting and not self._background:
                return
        self._release()
        self._acquire_background()

    def _acquire_background(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._background.append(ticket)
            try:
                while self._held or self._requests_waiting or self._background[0] != ticket:
                    self._cond.wait()
            finally:
                self._background.remove(ticket)
            self._held = True
            self._cond.notify_all()  # the next ticket is first in line now

    def _release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


@dataclass
class Scene:
    """A parsed request's scene: the graph without boxes, the pinned boxes, the seeds and codes."""

    graph: Any  # SceneGraph, boxes cleared
    pinned: list | None  # one box or None per object, or None: no box pinned
    seed: int
    style_seeds: list[int] | None
    style_codes: list[list[float] | None] | None
    warnings: list[str]
    layout_seed: int = 0  # the layout sampler's seed (the regression ignores it)


class ModelService:
    """A model, its turns, and the logic of /api/generate."""

    def __init__(self, model, max_objects: int | None = None, checkpoint: str | None = None,
                 max_waiting: int = MAX_WAITING, clip=None, clip_spec: str | None = None, style: str = "auto"):
        from ..generate import resolve_style
        from ..graph import DEFAULT_MAX_OBJECTS
        from .styles import StyleSwatches

        self.model = model
        self.checkpoint = checkpoint
        #: How seeds draw style codes: 'cluster' or 'sample' (``--style``, resolved for this model).
        self.style_source = resolve_style(model, style, checkpoint)
        self.swatches = StyleSwatches(model)
        self.clip = clip  # a TextEncoder given by `serve --clip` (guides edits), or None
        self.clip_spec = clip_spec
        self.max_objects = DEFAULT_MAX_OBJECTS if max_objects is None else max_objects
        self.max_waiting = max_waiting
        self.turns = ModelTurns()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._predicted: OrderedDict[str, list[list[float]]] = OrderedDict()  # graph structure -> boxes

    @property
    def has_text(self) -> bool:
        return self.model.text_encoder is not None

    @property
    def can_edit(self) -> bool:
        return self.clip is not None or self.has_text

    def info(self) -> dict:
        from .. import __version__
        from ..vocab import IMAGE_OBJECT, IN_IMAGE

        vocab = self.model.vocab
        edit_reason = None if self.can_edit else (
            "region editing needs a CLIP: this model has no text encoder; start the server with "
            "--clip DIR (a domain CLIP from `layout2img train-clip`)")
        return {
            "name": "layout2img", "version": __version__, "checkpoint": self.checkpoint,
            "training_step": self.model.metadata.get("training_step"),
            "vocab": vocab.name,
            "objects": [n for n in vocab.object_names if n != IMAGE_OBJECT],
            "predicates": [p for p in vocab.predicate_names if p != IN_IMAGE],
            "image_size": self.model.image_size,
            "style": self.model.style_dim > 0,
            "style_dim": self.model.style_dim,
            "style_source": self.style_source if self.model.style_dim > 0 else None,
            "style_clusters": self.swatches.counts(),
            "layout_sampler": self.model.samples_layouts,
            "text": self.has_text,
            "text_reason": None if self.has_text else "this model has no text encoder (it was trained without text)",
            "region_edit": self.can_edit,
            "region_edit_reason": edit_reason,
            "edit_clip": self.clip_spec if self.clip is not None else ("the model's text encoder" if self.has_text
                                                                       else None),
            "max_objects": self.max_objects, "max_body": MAX_BODY,
        }

    # -- parsing ---------------------------------------------------------------------------------
    def parse_scene(self, request: Any, fields: tuple[str, ...] = SCENE_FIELDS) -> Scene:
        """The scene of a request whose known fields are ``fields`` (RequestError 400 otherwise)."""
        from ..graph import validate_data

        if not isinstance(request, dict):
            raise RequestError(400, "the request must be a JSON object with a 'graph'")
        unknown = [k for k in request if k not in fields]
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0]!r} (known: {', '.join(fields)})")
        if "graph" not in request:
            raise RequestError(400, "missing 'graph' (a scene graph in sg2im form)")
        data = request["graph"]
        if not isinstance(data, dict):
            raise RequestError(400, "'graph' must be one scene graph (a JSON object with 'objects')")
        seed = parse_seed(request.get("seed", 0), "'seed'")
        layout_seed = parse_seed(request.get("layout_seed", seed), "'layout_seed'")
        data = dict(data)
        boxes = data.pop("boxes", None)  # may hold nulls here: checked on their own below
        warnings: list[str] = []
        graphs, errors = validate_data(data, self.model.vocab, self.max_objects, source="request",
                                       warnings=warnings)
        if errors:
            raise RequestError(400, errors[0], errors)
        graph = graphs[0]
        n = graph.num_objects
        pinned = self._pinned_boxes(graph, boxes)
        style_seeds = request.get("style_seeds")
        if style_seeds is not None:
            if not isinstance(style_seeds, list) or len(style_seeds) != n:
                raise RequestError(400, f"'style_seeds' must be a list with one integer per object ({n})")
            style_seeds = [parse_seed(s, f"style_seeds[{i}]") for i, s in enumerate(style_seeds)]
        style_codes = self._style_codes(request.get("style_codes"), n, style_seeds is not None)
        if not self.has_text:
            texts = [t for t in graph.descriptions if t is not None and t.strip()]
            if (graph.caption or "").strip() or texts:
                what = "a caption" if (graph.caption or "").strip() else "object descriptions"
                raise RequestError(400, f"this model has no text encoder: {what} cannot be used "
                                        f"(remove the text, or serve a model trained with text)")
            # empty text fields mean nothing: drop them rather than refuse
            graph.caption = None
            for i in range(n):
                graph.set_description(i, None)
        return Scene(graph, pinned, seed, style_seeds, style_codes, warnings, layout_seed)

    @staticmethod
    def _pinned_boxes(graph, boxes) -> list | None:
        if boxes is None:
            return None
        n = graph.num_objects
        if not isinstance(boxes, list) or len(boxes) != n:
            raise RequestError(400, f"request: graph 0: 'boxes' must be a list with one box or null per "
                                    f"object ({n})")
        errors = []
        for i, box in enumerate(boxes):
            if box is not None:
                try:
                    graph.set_box(i, box)
                except GraphError as e:
                    errors.append(str(e))
        if errors:
            raise RequestError(400, errors[0], errors)
        pinned = graph.boxes
        for i in range(n):
            graph.set_box(i, None)
        return pinned

    def _style_codes(self, codes: Any, n: int, have_seeds: bool) -> list | None:
        if codes is None:
            return None
        dim = self.model.style_dim
        if dim == 0:
            raise RequestError(400, "'style_codes': this model has no style codes (style_dim 0)")
        if not isinstance(codes, list) or len(codes) != n:
            raise RequestError(400, f"'style_codes' must be a list with one code (or null) per object ({n})")
        for i, code in enumerate(codes):
            if code is None:
                if not have_seeds:
                    raise RequestError(400, f"style_codes[{i}] is null: give 'style_seeds' for the objects "
                                            "without a code")
                continue
            if (not isinstance(code, list) or len(code) != dim
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               and abs(v) <= MAX_CODE_VALUE for v in code)):
                raise RequestError(400, f"style_codes[{i}] must be a list of {dim} finite numbers within "
                                        f"+-{MAX_CODE_VALUE:g}")
        return codes

    # -- running the model (call with a turn held) ---------------------------------------------
    def scene_codes(self, scene: Scene):
        """(num_objects, style_dim) codes of the scene's seeds and explicit codes, or None
        (no seeds: ``generate`` draws them from ``seed``)."""
        import torch

        from ..generate import object_style_codes

        if scene.style_seeds is None and scene.style_codes is None:
            return None
        codes = object_style_codes(self.model, scene.graph.objects, scene.style_seeds, self.style_source) \
            if scene.style_seeds is not None else torch.zeros(scene.graph.num_objects, self.model.style_dim)
        for i, code in enumerate(scene.style_codes or []):
            if code is not None:
                codes[i] = torch.tensor(code, dtype=codes.dtype)
        return codes

    def layout_graph(self, scene: Scene, codes):
        """The graph the model draws: the pinned boxes kept, the free ones predicted. A layout
        sampler places the free ones around the pinned ones from ``layout_seed`` (every box is
        then written into the graph). For the regression, with some boxes pinned, the free ones
        get the boxes they would get with no pins at all (its boxes do not depend on given
        boxes), cached per graph structure."""
        graph, pinned = scene.graph, scene.pinned
        n = graph.num_objects
        if self.model.samples_layouts:
            layout = self.model.predict_layout([graph], seed=scene.layout_seed,
                                               pinned=None if pinned is None else [pinned])[0]
            graph = graph.copy()
            for i, box in enumerate(layout["boxes"].tolist()):
                graph.set_box(i, pinned[i] if pinned is not None and pinned[i] is not None else valid_box(box))
            return graph
        if pinned is None:
            return graph
        graph = graph.copy()
        if any(b is None for b in pinned):
            key = self._structure_key(scene.graph)
            predicted = self._predicted.get(key)
            if predicted is None:
                out = self.model.generate([scene.graph], seed=scene.seed, return_output=True,
                                          style_codes=None if codes is None else [codes],
                                          style_source=self.style_source)
                predicted = self._remember(key, out.boxes[:n])
            for i in range(n):
                graph.set_box(i, pinned[i] if pinned[i] is not None else valid_box(predicted[i]))
        else:
            for i in range(n):
                graph.set_box(i, pinned[i])
        return graph

    def _structure_key(self, graph) -> str:
        return json.dumps([graph.objects, graph.relationships, graph.descriptions, graph.caption])

    def _remember(self, key: str, boxes) -> list[list[float]]:
        value = boxes.detach().cpu().tolist()
        self._predicted[key] = value
        self._predicted.move_to_end(key)
        while len(self._predicted) > 128:
            self._predicted.popitem(last=False)
        return value

    # -- /api/generate ---------------------------------------------------------------------------
    def generate(self, request: Any) -> dict:
        scene = self.parse_scene(request)
        with self._turn():
            started = time.perf_counter()
            codes = self.scene_codes(scene)
            graph = self.layout_graph(scene, codes)
            out = self.model.generate([graph], seed=scene.seed, return_output=True,
                                      style_codes=None if codes is None else [codes], style_source=self.style_source)
            n = graph.num_objects
            if scene.pinned is None:
                self._remember(self._structure_key(scene.graph), out.boxes[:n])
            return self._response(scene, out, out.boxes[:n].cpu(), time.perf_counter() - started)

    # -- /api/styles -----------------------------------------------------------------------------
    def styles(self, name: Any) -> dict:
        """The style clusters of object class ``name``, each with its code and swatch colour."""
        if not isinstance(name, str) or not name:
            raise RequestError(400, "give the object class: /api/styles?object=NAME")
        with self._turn():
            return self.swatches.for_class(name)

    @contextlib.contextmanager
    def _turn(self):
        """A request's turn on the model; refuse (429) rather than queue without bound."""
        with self._waiting_lock:
            if self._waiting >= self.max_waiting:
                raise RequestError(429, "the server is busy (too many requests waiting); try again",
                                   headers={"Retry-After": "1"})
            self._waiting += 1
        try:
            with self.turns.request():
                yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _response(self, scene: Scene, out, boxes, seconds) -> dict:
        from ..generate import layout_picture, to_image
        from ..visualize import draw_layout, label_color

        graph, pinned = scene.graph, scene.pinned
        n = graph.num_objects
        masks = out.masks[:n].detach().cpu()
        colors = [label_color(name) for name in graph.objects]
        shapes = draw_layout(None, boxes, labels=None, masks=masks, colors=colors, width=0, size=PICTURE_SIDE,
                             min_side=PICTURE_SIDE, mask_alpha=0.55)
        return {
            "image": png_data_url(to_image(out.images[0])),
            "layout_image": png_data_url(layout_picture(boxes, masks, graph.objects, PICTURE_SIDE)),
            "masks_image": png_data_url(shapes),
            "boxes": [[round(float(v), 4) for v in b] for b in boxes.tolist()],
            "pinned": [b is not None for b in pinned] if pinned is not None else [False] * n,
            "colors": ["#%02x%02x%02x" % c for c in colors],
            "objects": graph.objects,
            "seed": scene.seed,
            "layout_seed": scene.layout_seed,
            "style_seeds": scene.style_seeds,
            "warnings": scene.warnings,
            "ms": round(seconds * 1000, 1),
        }
