"""Text-guided edit jobs for the editor: parsed on the request thread, run by a small worker pool.

    POST /api/edit              a scene (as /api/generate) + {"text", "negatives", "target", ...}
                                -> 202 {"job": ID, "state": "queued", ...}
    GET  /api/edit/ID           -> {"state", "restart", "restarts", "step", "steps", "clip",
                                    "best_clip", ...; when done "image", "style_codes", "improved"}
    POST /api/edit/ID/cancel    -> the job, its cancellation requested

An edit runs for seconds, so it never runs on a request thread: ``max_running`` workers take
jobs in order, at most ``max_queued`` more wait, and a further job is refused with 429. A running
edit takes the model in background turns and pauses after every step while a generate request
waits (:class:`~layout2img.web.scheduler.ModelTurns`). Finished jobs are kept ``keep_seconds``
(at most ``keep_finished`` of them) for the page to read, then forgotten.
"""
from __future__ import annotations

import math
import secrets
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, EditCancelled, Layout2ImgError
from .models import MAX_RESTARTS, MAX_STEPS
from .models import EditRequest as EditBody
from .protocol import RequestError, png_data_url
from .service import ModelService, Scene

FINISHED = ("done", "failed", "cancelled")


@dataclass
class EditRequest:
    """A parsed POST /api/edit: the scene and the edit's own arguments."""

    scene: Scene
    text: str
    negatives: list[str]
    target: int | list[float] | None  # an object index, a box, or None: the whole image
    options: dict  # keyword arguments of edit_image: the server's defaults and the request's own


@dataclass
class EditJob:
    """One edit: its request, state (queued, running, done, failed, cancelled), progress and result."""

    id: str
    request: EditRequest
    state: str = "queued"
    progress: dict = field(default_factory=dict)  # the edit's last callback info
    result: dict | None = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> dict:
        now = time.monotonic()
        end = self.finished if self.finished is not None else now
        out = {"job": self.id, "state": self.state, "error": self.error,
               "cancel_requested": self.cancel.is_set(),
               "seconds": round(end - (self.started if self.started is not None else end), 2)}
        for key in ("restart", "restarts", "step", "steps", "clip", "best_clip"):
            value = self.progress.get(key)
            if isinstance(value, float):
                value = round(value, 4) if math.isfinite(value) else None
            out[key] = value
        if self.result is not None:
            out.update(self.result)
        return out


def parse_edit(service: ModelService, request: EditBody, defaults: dict | None = None) -> EditRequest:
    """An edit request whose fields pydantic has checked, or RequestError 400 for what depends on
    the graph or the model; its options are ``defaults`` (keyword arguments of ``edit_image``)
    updated with the request's own."""
    scene = service.parse_scene(request)
    n = scene.graph.num_objects
    target = request.target
    if isinstance(target, int) and not target < n:
        raise RequestError(400, f"'target' {target}: the graph has {n} objects (0-{n - 1})")
    options: dict[str, Any] = dict(defaults or {})
    for name in ("steps", "restarts", "modulation"):
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    if service.model.style_dim == 0 and not options.get("modulation"):
        raise RequestError(400, "'modulation' must be true: this model has no style codes to edit")
    return EditRequest(scene, request.text, list(request.negatives), target, options)


def check_edit_options(options: dict) -> dict:
    """``edit_options`` for :func:`~.server.build_app`: keyword arguments of ``edit_image`` that a server
    may fix (not those each request or the server itself gives), steps and restarts in bounds."""
    import inspect

    from ..editing import edit_image

    fixed_per_request = {"model", "graph", "text", "seed", "target", "negatives", "clip", "style_codes",
                         "progress", "callback"}
    known = [p for p in inspect.signature(edit_image).parameters if p not in fixed_per_request]
    for key, value in options.items():
        if key not in known:
            raise ConfigError(f"edit option {key!r}: not one of {', '.join(known)}")
    for key, low, high in (("steps", 0, MAX_STEPS), ("restarts", 1, MAX_RESTARTS)):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise ConfigError(f"--edit-{key} {value}: expected an integer from {low} to {high}")
    return {k: v for k, v in options.items() if v is not None}


class EditJobs:
    """The edit jobs of one server: submit, read, cancel; a bounded pool runs them."""

    def __init__(self, service: ModelService, max_running: int = 1, max_queued: int = 2,
                 defaults: dict | None = None, keep_seconds: float = 300.0, keep_finished: int = 16,
                 log_error: Callable[[str], None] | None = None):
        if max_running < 1 or max_queued < 0:
            raise ValueError("max_running must be >= 1 and max_queued >= 0")
        self.service = service
        self.defaults = dict(defaults or {})  # edit_image options for every edit (check_edit_options)
        self.max_running, self.max_queued = max_running, max_queued
        self.keep_seconds, self.keep_finished = keep_seconds, keep_finished
        self.log_error = log_error or (lambda text: None)
        self._jobs: dict[str, EditJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="layout2img-edit")
        self._closed = False

    def submit(self, request: EditBody) -> dict:
        edit = parse_edit(self.service, request, self.defaults)  # a bad request is told so, CLIP or not
        if not self.service.can_edit:
            raise RequestError(409, "region editing is not available: this model has no text encoder "
                                    "(start the server with --clip DIR)")
        with self._lock:
            self._expire()
            active = sum(job.state not in FINISHED for job in self._jobs.values())
            if self._closed:
                raise RequestError(503, "the server is stopping: no new edits")
            if active >= self.max_running + self.max_queued:
                raise RequestError(429, f"too many edits at once ({active} running or waiting, the limit); "
                                        "try again when one has finished", headers={"Retry-After": "2"})
            job = EditJob(secrets.token_hex(8), edit)
            self._jobs[job.id] = job
            self._pool.submit(self._run, job)
            return job.snapshot()

    def get(self, job_id: str) -> dict:
        with self._lock:
            self._expire()
            return self._job(job_id).snapshot()

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            job = self._job(job_id)
            if job.state not in FINISHED:
                job.cancel.set()
                if job.state == "queued":  # its worker will skip it
                    self._finish(job, "cancelled")
            return job.snapshot()

    def close(self) -> None:
        """Cancel every job and stop the workers (running edits stop at their next step)."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _job(self, job_id: str) -> EditJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise RequestError(404, f"edit job {job_id[:40]!r} not found (finished jobs are kept "
                                    f"{self.keep_seconds:g} s)")
        return job

    def _finish(self, job: EditJob, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.monotonic()

    def _expire(self) -> None:
        """Forget finished jobs past their time, and the oldest beyond ``keep_finished``."""
        now = time.monotonic()
        finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: j.finished)
        for k, job in enumerate(finished):
            if now - job.finished > self.keep_seconds or len(finished) - k > self.keep_finished:
                del self._jobs[job.id]

    # -- the worker ------------------------------------------------------------------------------
    def _run(self, job: EditJob) -> None:
        with self._lock:
            if job.cancel.is_set():
                return
            job.state, job.started = "running", time.monotonic()
        try:
            result = self._edit(job)
        except EditCancelled:
            with self._lock:
                self._finish(job, "cancelled")
        except Layout2ImgError as e:
            with self._lock:
                self._finish(job, "failed", str(e))
        except Exception:  # a bug: this job fails, the server goes on
            self.log_error(traceback.format_exc())
            with self._lock:
                self._finish(job, "failed", "internal error while editing (see the server's log)")
        else:
            with self._lock:
                job.result = result
                self._finish(job, "done")

    def _edit(self, job: EditJob) -> dict:
        from ..editing import edit_image
        from ..generate import to_image

        service, edit = self.service, job.request
        turns = service.turns

        def on_step(info: dict) -> bool:
            job.progress = dict(info)
            turns.pause()  # a waiting generate request goes first
            return not job.cancel.is_set()

        with turns.background():
            if job.cancel.is_set():
                raise EditCancelled("edit cancelled before it started")
            codes = service.scene_codes(edit.scene)
            graph = service.layout_graph(edit.scene, codes)
            if codes is None and service.model.style_dim > 0:  # the codes /api/generate draws from the seed
                drawn = service.model.generate([graph], seed=edit.scene.seed, return_output=True,
                                               style_source=service.style_source)
                codes = drawn.style_codes[:graph.num_objects]
            result = edit_image(service.model, graph, text=edit.text, seed=edit.scene.seed, target=edit.target,
                                negatives=edit.negatives, clip=service.clip, style_codes=codes,
                                progress=False, callback=on_step, **edit.options)
        codes_out = result.style_codes
        return {
            "image": png_data_url(to_image(result.image.detach().cpu())),
            "style_codes": None if codes_out is None else [[float(v) for v in row] for row in codes_out.tolist()],
            "improved": bool(result.improved),
            "clip_before": round(float(result.clip_before), 4),
            "clip_after": round(float(result.clip_after), 4),
        }
