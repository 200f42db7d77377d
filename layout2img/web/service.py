"""The editor's model service: a request's scene, the model's turns, and /api/generate (no HTTP here).

A request (:class:`~.models.SceneRequest`) describes one scene as the page shows it: ``graph``
(sg2im form; its ``boxes`` may hold ``null`` for objects whose box is predicted), ``seed``,
``layout_seed`` (a layout sampler draws the free boxes from it, around the pinned ones; default:
``seed``; "New layout" on the page sends another), ``style_seeds`` (one integer per object: its
style code is drawn from it, so one object can be restyled alone) and ``style_codes`` (one
explicit code or ``null`` per object: codes an edit found, which override the seeds). Seeds draw
codes as the server's ``--style`` says (a random one of the class's fitted style clusters, or
N(0, I)); ``/api/styles`` gives each class's clusters with a colour swatch apiece (:mod:`.styles`).

Generate requests that arrive together run as one batch of the model (:class:`~.scheduler.Batcher`):
each request's layout and style codes are settled alone first, exactly as without company, and
only the drawing is shared. Requests whose codes come from their ``seed`` (no ``style_seeds``)
draw them inside the model call from one random generator, so they run alone. Generate
batches and edit steps take turns on the model (:class:`~.scheduler.ModelTurns`).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import GraphError
from .models import SceneRequest
from .protocol import RequestError, png_data_url
from .appearance import MAX_IMAGE_BODY, appearance_reason
from .scheduler import MAX_BATCH, MAX_WAIT, Batcher, ModelTurns

MAX_BODY = 64 * 1024
MAX_WAITING = 16
#: Side of the layout pictures the page shows under its boxes.
PICTURE_SIDE = 256


def valid_box(box) -> list[float]:
    """A predicted box as a valid graph box (clamped to [0, 1], at least 1e-3 wide and high)."""
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
    x0, y0 = min(x0, 1 - 1e-3), min(y0, 1 - 1e-3)
    return [x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)]


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
                 max_waiting: int = MAX_WAITING, clip=None, clip_spec: str | None = None, style: str = "auto",
                 max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT):
        from ..pipeline.inputs import resolve_style_source
        from ..graph import DEFAULT_MAX_OBJECTS
        from .styles import StyleSwatches

        self.model = model
        self.checkpoint = checkpoint
        #: How seeds draw style codes: 'cluster' or 'sample' (``--style``, resolved for this model).
        self.style_source = resolve_style_source(model, style, checkpoint)
        self.swatches = StyleSwatches(model)
        self.clip = clip  # a TextEncoder given by `serve --clip` (guides edits), or None
        self.clip_spec = clip_spec
        self.max_objects = DEFAULT_MAX_OBJECTS if max_objects is None else max_objects
        self.max_waiting = max_waiting
        self.max_image_body = MAX_IMAGE_BODY  # /api/appearance's body limit (create_app sets the app's)
        self.turns = ModelTurns()
        self.batcher = Batcher(self.turns, self._run_batch, max_batch=max_batch, max_wait=max_wait)
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._predicted: OrderedDict[str, list[list[float]]] = OrderedDict()  # graph structure -> boxes

    @property
    def waiting(self) -> int:
        """Requests admitted and not yet answered (at most ``max_waiting``)."""
        with self._waiting_lock:
            return self._waiting

    @property
    def has_text(self) -> bool:
        return self.model.text_encoder is not None

    @property
    def can_edit(self) -> bool:
        return self.clip is not None or self.has_text

    def info(self) -> dict:
        from ..version import __version__
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
            "appearance": appearance_reason(self.model) is None,
            "appearance_reason": appearance_reason(self.model),
            "max_objects": self.max_objects, "max_body": MAX_BODY, "max_image_body": self.max_image_body,
            "max_batch": self.batcher.max_batch,
        }

    # -- parsing ---------------------------------------------------------------------------------
    def parse_scene(self, request: SceneRequest) -> Scene:
        """The scene of a request whose fields pydantic has checked (RequestError 400 for what
        depends on the model or the graph: the vocabulary, the number of objects, text)."""
        from ..graph import validate_data

        data = dict(request.graph)
        boxes = data.pop("boxes", None)  # may hold nulls here: checked on their own below
        warnings: list[str] = []
        graphs, errors = validate_data(data, self.model.vocab, self.max_objects, source="request",
                                       warnings=warnings)
        if errors:
            raise RequestError(400, errors[0], errors)
        graph = graphs[0]
        n = graph.num_objects
        pinned = self._pinned_boxes(graph, boxes)
        style_seeds = request.style_seeds
        if style_seeds is not None and len(style_seeds) != n:
            raise RequestError(400, f"'style_seeds' must be a list with one integer per object ({n})")
        style_codes = self._style_codes(request.style_codes, n, style_seeds is not None)
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
        layout_seed = request.seed if request.layout_seed is None else request.layout_seed
        return Scene(graph, pinned, request.seed, style_seeds, style_codes, warnings, layout_seed)

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

    def _style_codes(self, codes: list | None, n: int, have_seeds: bool) -> list | None:
        if codes is None:
            return None
        dim = self.model.style_dim
        if dim == 0:
            raise RequestError(400, "'style_codes': this model has no style codes (style_dim 0)")
        if len(codes) != n:
            raise RequestError(400, f"'style_codes' must be a list with one code (or null) per object ({n})")
        for i, code in enumerate(codes):
            if code is None and not have_seeds:
                raise RequestError(400, f"style_codes[{i}] is null: give 'style_seeds' for the objects "
                                        "without a code")
            if code is not None and len(code) != dim:
                raise RequestError(400, f"style_codes[{i}] must be a list of {dim} finite numbers, got {len(code)}")
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
    def generate(self, request: SceneRequest) -> dict:
        scene = self.parse_scene(request)
        with self._admitted():
            drawn, size = self.batcher.submit(self._batch_key(scene), scene)
        return self._response(scene, drawn, size)

    def _batch_key(self, scene: Scene):
        """What one model call's scenes must share. Explicit codes leave the call's random
        generator to the layout sampler's noise, which follows ``seed``; codes drawn from the seed
        would come from one generator shared by the batch, so such a scene runs alone."""
        if scene.style_seeds is None and scene.style_codes is None and self.model.style_dim > 0:
            return self.batcher.solo_key()
        return ("seed", scene.seed if self.model.samples_layouts else None)

    def _run_batch(self, scenes: Sequence[Scene]) -> list:
        """One model call for scenes that share a batch key (a request turn held): per scene
        ``(image, boxes, visible weights, seconds)`` or the exception that scene raised."""
        started = time.perf_counter()
        outcomes: list[Any] = [None] * len(scenes)
        ready = []  # (index, graph, codes) of the scenes whose layout is settled
        for i, scene in enumerate(scenes):
            try:
                codes = self.scene_codes(scene)
                ready.append((i, self.layout_graph(scene, codes), codes))
            except Exception as e:  # that scene's failure, not its companions'
                outcomes[i] = e
        if not ready:
            return outcomes
        graphs = [graph for _, graph, _ in ready]
        codes = None if ready[0][2] is None else [c for _, _, c in ready]
        try:
            out = self.model.generate(graphs, seed=scenes[ready[0][0]].seed, return_output=True,
                                      style_codes=codes, style_source=self.style_source)
        except Exception:
            if len(scenes) == 1:
                raise
            return [self._alone(scene) for scene in scenes]  # only the culprit fails
        seconds = time.perf_counter() - started
        visible = out.visible_weights()  # the layout pictures show what the generator got
        row = 0
        for k, (i, graph, _) in enumerate(ready):
            n = graph.num_objects
            boxes, weights = out.boxes[row:row + n].detach().cpu(), visible[row:row + n].detach().cpu()
            row += n + 1  # each graph's __image__ follows its objects
            if scenes[i].pinned is None:
                self._remember(self._structure_key(scenes[i].graph), boxes)
            outcomes[i] = (out.images[k].detach().cpu(), boxes, weights, seconds)
        return outcomes

    # -- /api/styles -----------------------------------------------------------------------------
    def styles(self, name: Any) -> dict:
        """The style clusters of object class ``name``, each with its code and swatch colour."""
        if not isinstance(name, str) or not name:
            raise RequestError(400, "give the object class: /api/styles?object=NAME")
        with self.model_turn():
            return self.swatches.for_class(name)

    def _alone(self, scene: Scene):
        try:
            return self._run_batch([scene])[0]
        except Exception as e:
            return e

    @contextlib.contextmanager
    def model_turn(self):
        """A request's own turn on the model (admitted first)."""
        with self._admitted(), self.turns.request():
            yield

    @contextlib.contextmanager
    def _admitted(self):
        """Count a request in; refuse (429) rather than queue without bound."""
        with self._waiting_lock:
            if self._waiting >= self.max_waiting:
                raise RequestError(429, "the server is busy (too many requests waiting); try again",
                                   headers={"Retry-After": "1"})
            self._waiting += 1
        try:
            yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _response(self, scene: Scene, drawn: tuple, batch: int) -> dict:
        """The answer to a generate request, drawn off the model's turn (pictures and PNGs)."""
        from ..generate import layout_picture, to_image
        from ..visualize import draw_layout, label_color

        image, boxes, weights, seconds = drawn
        graph, pinned = scene.graph, scene.pinned
        n = graph.num_objects
        colors = [label_color(name) for name in graph.objects]
        shapes = draw_layout(None, boxes, labels=None, image_masks=weights, colors=colors, width=0, size=PICTURE_SIDE,
                             min_side=PICTURE_SIDE, mask_alpha=0.55)
        return {
            "image": png_data_url(to_image(image)),
            "layout_image": png_data_url(layout_picture(boxes, weights, graph.objects, PICTURE_SIDE)),
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
            "batch": batch,
        }
