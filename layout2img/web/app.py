"""The editor's web app (FastAPI): :func:`create_app` around a :class:`~.service.ModelService`.

    GET  /                      the editor page (``static/index.html``, ``app.js``, ``edit.js``,
                                ``styles.js``, ``style.css``)
    GET  /api/info              vocabulary, image size, style clusters, whether text and region editing work
    GET  /api/health            {"ok": true}
    GET  /api/styles?object=C   class C's style clusters: {"clusters": [{"index", "code", "color"}, ...]}
    POST /api/generate          a scene (:class:`~.models.SceneRequest`) -> the image, layout pictures, boxes
    POST /api/edit              a scene + {"text", "negatives", "target", ...} -> 202 {"job": ID, ...}
    GET  /api/edit/{job}        the edit's state and progress; when done its image and style codes
    POST /api/edit/{job}/cancel {} -> the edit, its cancellation requested
    POST /api/appearance        a picture, what it shows where, the scene's objects -> style codes (:mod:`.appearance`)
    GET  /openapi.json, /docs   the API's description (pydantic models of :mod:`.models`)

Every refusal is a 4xx with ``{"error": one line, "errors": [every line]}``: 400 for a bad field
(named) or graph (the validator's lines), 403 for a foreign Host or Origin, 404, 405, 409 for
what this model cannot do, 413 for a body over ``max_body`` (``max_image_body`` for /api/appearance),
415 for a POST that is not JSON, 429 when busy; a bug is a 500 for that request only, its traceback in the server's log.
"""
from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import Layout2ImgError
from .appearance import MAX_IMAGE_BODY, appearance
from .edits import EditJobs
from .guard import AccessLog, Guard, error_answer
from .models import Appearance, AppearanceRequest, CancelRequest, EditJob, EditRequest, ErrorAnswer, Generated, Health
from .models import Info, SceneRequest, Styles
from .models import error_lines
from .protocol import RequestError
from .service import MAX_BODY, ModelService

STATIC_DIR = Path(__file__).with_name("static")
#: URL path -> (file in static/, content type). Nothing else is served from disk.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/edit.js": ("edit.js", "text/javascript; charset=utf-8"),
    "/styles.js": ("styles.js", "text/javascript; charset=utf-8"),
    "/appearance.js": ("appearance.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
REFUSALS = {status: {"model": ErrorAnswer} for status in (400, 403, 413, 415, 429)}


class EditorApp(FastAPI):
    """FastAPI with :class:`~.guard.Guard` outside all of its own middleware: the guard answers
    before anything reads a body, and sees every answer (its headers, its status for the log)."""

    def __init__(self, guard: Guard, **kwargs):
        self.guard = guard
        super().__init__(**kwargs)

    def build_middleware_stack(self):
        self.guard.app = super().build_middleware_stack()
        return self.guard


def create_app(service: ModelService, jobs: EditJobs | None = None, *, loopback_only: bool = True,
               max_body: int = MAX_BODY, max_image_body: int = MAX_IMAGE_BODY,
               log: AccessLog | None = None) -> FastAPI:
    """The editor's app for ``service`` and its edit ``jobs`` (default: one edit at a time, two
    waiting). ``loopback_only``: answer only requests addressed to a loopback name (set it when
    the server listens on a loopback address: a web page elsewhere then cannot reach it through
    DNS rebinding). Request bodies may hold ``max_body`` bytes, /api/appearance's (a picture)
    ``max_image_body``. ``app.state`` holds ``service``, ``jobs`` and ``log`` (statuses and lines)."""
    from ..version import __version__

    jobs = jobs if jobs is not None else EditJobs(service)
    log = log if log is not None else AccessLog()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        jobs.close()  # running edits stop at their next step

    limits = {"/api/appearance": max_image_body}  # path -> its body limit, where not max_body
    service.max_image_body = max_image_body
    app = EditorApp(Guard(None, loopback_only=loopback_only, log=log, max_body=max_body, limits=limits),
                    title="layout2img editor", version=__version__, lifespan=lifespan, max_body_size=max_body,
                    description="Scene graph -> layout -> image, and text-guided edits of regions of it.",
                    docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.service, app.state.jobs, app.state.log, app.state.max_body = service, jobs, log, max_body
    _add_error_handlers(app, log, max_body, limits)
    _describe_vocabulary(app, service)

    static = {name: (STATIC_DIR / name).read_bytes() for name, _ in set(STATIC_FILES.values())}
    for path, (name, kind) in STATIC_FILES.items():
        def page(body=static[name], kind=kind) -> Response:
            return Response(body, media_type=kind)
        app.add_api_route(path, page, methods=["GET", "HEAD"], include_in_schema=False, name=f"static {name}")

    @app.get("/api/info", response_model=Info, summary="What the model knows and can do")
    def info() -> dict:
        return service.info()

    @app.get("/api/health", response_model=Health, summary="Whether the server answers")
    def health() -> dict:
        return {"ok": True}

    @app.get("/api/styles", response_model=Styles, responses={400: REFUSALS[400], 409: {"model": ErrorAnswer}},
             summary="A class's style clusters with a colour swatch each")
    def styles(object_: str = Query(alias="object", max_length=200,
                                    description="an object class of the vocabulary")) -> dict:
        return service.styles(object_)

    @app.post("/api/generate", response_model=Generated, responses=REFUSALS,
              summary="Draw the image of a scene (concurrent requests share one model batch)")
    def generate(request: SceneRequest) -> dict:
        return service.generate(request)

    @app.post("/api/edit", status_code=202, response_model=EditJob, response_model_exclude_unset=True,
              responses={**REFUSALS, 409: {"model": ErrorAnswer}}, summary="Start a text-guided edit of a region")
    def edit(request: EditRequest) -> dict:
        return jobs.submit(request)

    @app.get("/api/edit/{job}", response_model=EditJob, response_model_exclude_unset=True,
             responses={404: {"model": ErrorAnswer}}, summary="An edit's state, progress and (when done) result")
    def edit_state(job: str) -> dict:
        return jobs.get(job)

    @app.post("/api/edit/{job}/cancel", response_model=EditJob, response_model_exclude_unset=True,
              responses={**REFUSALS, 404: {"model": ErrorAnswer}}, summary="Stop an edit")
    def edit_cancel(job: str, request: CancelRequest) -> dict:
        return jobs.cancel(job)

    @app.post("/api/appearance", response_model=Appearance, responses={**REFUSALS, 409: {"model": ErrorAnswer}},
              max_body_size=max_image_body,
              summary="Style codes from a picture: each scene object takes the code of a reference object")
    def appearance_codes(request: AppearanceRequest) -> dict:
        return appearance(service, request)

    return app


def _add_error_handlers(app: FastAPI, log: AccessLog, max_body: int, limits: dict[str, int]) -> None:
    """Every refusal as ``{"error", "errors"}``; no traceback ever reaches a client."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError) -> JSONResponse:
        return error_answer(e.status, e.message, e.lines, e.headers)

    @app.exception_handler(Layout2ImgError)
    async def user_error(request: Request, e: Layout2ImgError) -> JSONResponse:  # one the parsing did not foresee
        return error_answer(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        lines = error_lines(list(e.errors()))
        return error_answer(400, lines[0], lines)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        path, method = request.url.path[:200], request.method
        if e.status_code == 404:
            message = f"{path}: not found"
        elif e.status_code == 405:
            allow = (e.headers or {}).get("Allow", "")
            message = f"{method} {path}: use {' or '.join(m.strip() for m in allow.split(',') if m.strip() != 'HEAD')}"
        elif e.status_code == 413:
            message = f"request body is larger than the limit of {limits.get(request.url.path, max_body)} bytes"
        elif isinstance(e.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body"
            message = f"request body: not UTF-8 text (byte 0x{e.__cause__.object[e.__cause__.start]:02x})"
        elif isinstance(e.__cause__, RecursionError):
            message = "request body: JSON nested too deeply"
        else:
            message = str(e.detail)
        return error_answer(e.status_code, message, headers=e.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:  # this request fails, the server goes on
        log.error_text("".join(traceback.format_exception(e)))
        return error_answer(500, "internal error while handling the request (see the server's log)")


def _describe_vocabulary(app: FastAPI, service: ModelService) -> None:
    """/openapi.json names the served model's classes and predicates (and its object limit) in the
    graph's schema, so /docs lists them and schema-driven clients send graphs it can draw."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema, info = build(), service.info()
            components = schema["components"]["schemas"]
            for name in ("SceneRequest", "EditRequest"):
                graph = components[name]["properties"]["graph"]["properties"]
                graph["objects"].update(maxItems=service.max_objects)
                graph["objects"]["items"]["enum"] = info["objects"]
                graph["relationships"]["items"]["prefixItems"][1]["enum"] = info["predicates"]
            for names in (components["ReferenceGraph"]["properties"]["objects"],
                          components["AppearanceRequest"]["properties"]["targets"]):
                names.update(maxItems=service.max_objects)
                names["items"]["enum"] = info["objects"]
            for parameter in schema["paths"]["/api/styles"]["get"]["parameters"]:
                parameter["schema"]["enum"] = info["objects"]
        return app.openapi_schema

    app.openapi = openapi
