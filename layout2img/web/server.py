"""``layout2img serve``: a JSON API and one static page around a loaded model.

    GET  /                      the editor page (``static/index.html``, ``app.js``, ``style.css``)
    GET  /api/info              vocabulary, image size, style clusters, whether text and region editing work
    GET  /api/styles?object=C   class C's style clusters: {"clusters": [{"index", "code", "color"}, ...]}
    POST /api/generate          {"graph": {...}, "seed": 0, "layout_seed": 0, "style_seeds": [...],
                                 "style_codes": [...]}
                                -> {"image": "data:image/png;base64,...", "layout_image": ..., "boxes": ...}
    POST /api/edit              a scene as above + {"text", "negatives", "target"} -> 202 {"job": ID, ...}
    GET  /api/edit/ID           the edit's state and progress; when done its image and style codes
    POST /api/edit/ID/cancel    stop the edit

The scene a request describes is parsed by :mod:`.service`; edit jobs are :mod:`.edits`. Generate
requests and edit steps take turns on the model; at most ``MAX_WAITING`` generate requests wait,
more get 429, as do edits beyond ``max_edits`` running plus ``edit_queue`` waiting. Bodies over
``MAX_BODY`` get 413, malformed JSON or graphs 400 with the validator's lines, unknown paths 404;
an unexpected failure is a 500 for that request only. The server binds 127.0.0.1 unless told
otherwise and, when bound to a loopback address, answers only requests addressed to a loopback
name (a page on another site cannot reach it through DNS rebinding) and only JSON POSTs (which
browsers do not send cross-site without a CORS preflight that this server never grants).
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, Layout2ImgError
from ..io import parse_json
from ..generate import STYLE_CHOICES
from .edits import MAX_RESTARTS, MAX_STEPS, EditJobs, check_edit_options
from .protocol import RequestError, host_name, is_loopback
from .service import MAX_BODY, MAX_WAITING, ModelService

STATIC_DIR = Path(__file__).with_name("static")
#: URL path -> (file in static/, content type). Nothing else is served from disk.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/edit.js": ("edit.js", "text/javascript; charset=utf-8"),
    "/styles.js": ("styles.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: A refused body up to this size is read and dropped so the client gets the answer (see _discard_body).
DRAIN_LIMIT = 4 * 1024 * 1024
MAX_EDITS = 1
EDIT_QUEUE = 2
#: /api/edit/ID and /api/edit/ID/cancel (IDs are 16 hex digits; anything else is simply not found).
EDIT_JOB_PATH = re.compile(r"/api/edit/([^/]{1,64})(/cancel)?")
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class Handler(BaseHTTPRequestHandler):
    server: "EditorServer"
    server_version = "layout2img"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: nothing of a refused body lingers
    timeout = 30  # seconds a client may take to send its request

    # -- routing -------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        self._started = time.perf_counter()
        self._body_read = False
        try:
            self._check_host()
            path = urlsplit(self.path).path
            if path in STATIC_FILES or path in ("/api/info", "/api/health"):
                if method not in ("GET", "HEAD"):
                    raise RequestError(405, f"{method} {path}: use GET", headers={"Allow": "GET, HEAD"})
                if path == "/api/info":
                    self._send_json(200, self.server.service.info(), head=method == "HEAD")
                elif path == "/api/health":
                    self._send_json(200, {"ok": True}, head=method == "HEAD")
                else:
                    name, kind = STATIC_FILES[path]
                    self._send(200, self.server.static[name], kind, head=method == "HEAD")
            elif path == "/api/styles":
                self._require(method, path, "GET")
                name = parse_qs(urlsplit(self.path).query).get("object", [None])[0]
                self._send_json(200, self.server.service.styles(name), head=method == "HEAD")
            elif path == "/api/generate":
                self._require(method, path, "POST")
                self._send_json(200, self.server.service.generate(self._read_json()))
            elif path == "/api/edit":
                self._require(method, path, "POST")
                self._send_json(202, self.server.jobs.submit(self._read_json()))
            elif (match := EDIT_JOB_PATH.fullmatch(path)) is not None:
                job_id, cancel = match.groups()
                if cancel:
                    self._require(method, path, "POST")
                    if self._read_json() != {}:
                        raise RequestError(400, f"{path}: send an empty JSON object ({{}}) to cancel")
                    self._send_json(200, self.server.jobs.cancel(job_id))
                else:
                    self._require(method, path, "GET")
                    self._send_json(200, self.server.jobs.get(job_id), head=method == "HEAD")
            else:
                raise RequestError(404, f"{path[:200]}: not found")
        except RequestError as e:
            self._send_error(e.status, e.message, e.lines, e.headers)
        except Layout2ImgError as e:  # a user error the request parsing did not foresee
            self._send_error(400, str(e))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug: this request fails, the server goes on
            self.server.log_error_text(traceback.format_exc())
            self._send_error(500, "internal error while handling the request (see the server's log)")

    @staticmethod
    def _require(method: str, path: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            allow = "GET, HEAD" if allowed == "GET" else allowed
            raise RequestError(405, f"{method} {path}: use {allowed}", headers={"Allow": allow})

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = self.headers.get("Host")
        if host is not None and not is_loopback(host_name(host)):
            raise RequestError(403, f"Host {host[:100]!r} is not allowed (this server answers loopback names only)")
        origin = self.headers.get("Origin")
        if origin is not None and origin != "null" and not is_loopback(host_name(origin)):
            raise RequestError(403, f"Origin {origin[:100]!r} is not allowed")

    def _read_json(self) -> Any:
        kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise RequestError(415, f"Content-Type must be application/json, got {kind or 'none'!r}")
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send the body with a Content-Length (no chunked encoding)")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length is required")
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"Content-Length {length[:40]!r} is not a size") from None
        if size > self.server.max_body:
            raise RequestError(413, f"request body is {size} bytes, more than the limit of {self.server.max_body}")
        try:
            body = self.rfile.read(size)
            self._body_read = True
        except TimeoutError:
            self._body_read = True  # nothing more to read from this client
            raise RequestError(408, "timed out reading the request body") from None
        if len(body) < size:
            raise RequestError(400, f"request body ended after {len(body)} of {size} bytes")
        return parse_json(body, "request body", "the request", error=lambda message: RequestError(400, message))

    # -- answers -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str, head: bool = False,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, head: bool = False, headers=None) -> None:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", head=head, headers=headers)

    def _discard_body(self) -> None:
        """Read a refused request's body (up to a bound) before answering: closing a socket with
        unread data resets the connection, and the client would never see the answer."""
        if getattr(self, "_body_read", True) or self.command not in ("POST", "PUT", "PATCH"):
            return
        self._body_read = True
        try:
            left = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if left > DRAIN_LIMIT:
            return
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except (OSError, TimeoutError):
            pass

    def _send_error(self, status: int, message: str, lines: list[str] | None = None, headers=None) -> None:
        self._discard_body()
        try:
            self._send_json(status, {"error": message, "errors": lines or [message]}, headers=headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def send_response(self, code, message=None):
        self._status = int(code)
        super().send_response(code, message)

    def log_request(self, code="-", size="-"):
        status = getattr(self, "_status", code if isinstance(code, int) else 0)
        started = getattr(self, "_started", None)
        ms = f" {1000 * (time.perf_counter() - started):.0f}ms" if started is not None else ""
        self.server.record(int(status), f"{self.address_string()} {self.command} "
                                        f"{urlsplit(self.path or '').path[:120]} {status}{ms}")

    def log_message(self, format, *args):  # the stdlib's own messages (e.g. a malformed request line)
        self.server.log_line(f"{self.address_string()} {format % args}")


class EditorServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the service, its edit jobs, its static files and a tally
    of statuses."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, service: ModelService, quiet: bool = False, log=None,
                 max_body: int = MAX_BODY, max_edits: int = MAX_EDITS, edit_queue: int = EDIT_QUEUE,
                 edit_defaults: dict | None = None):
        self.service = service
        self.quiet = quiet
        self.max_body = max_body
        self.log_file = log if log is not None else sys.stderr
        self.statuses: Counter[int] = Counter()
        self._log_lock = threading.Lock()
        self.static = {name: (STATIC_DIR / name).read_bytes() for name, _ in set(STATIC_FILES.values())}
        # before binding: a failed bind calls server_close, which closes the jobs
        self.jobs = EditJobs(service, max_running=max_edits, max_queued=edit_queue, defaults=edit_defaults,
                             log_error=self.log_error_text)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.loopback_only = is_loopback(address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        self.jobs.close()
        super().server_close()

    def record(self, status: int, line: str) -> None:
        with self._log_lock:
            self.statuses[status] += 1
        if not self.quiet or status >= 500:
            self.log_line(line)

    def log_line(self, line: str) -> None:
        with self._log_lock:
            print(line, file=self.log_file, flush=True)

    def log_error_text(self, text: str) -> None:
        self.log_line(text.rstrip())

    def handle_error(self, request, client_address):  # an exception outside a handler's own try
        self.log_error_text(traceback.format_exc())


def make_server(model, host: str = "127.0.0.1", port: int = 7860, *, checkpoint: str | None = None,
                quiet: bool = False, log=None, max_body: int = MAX_BODY, max_waiting: int = MAX_WAITING,
                clip=None, clip_spec: str | None = None, max_edits: int = MAX_EDITS,
                edit_queue: int = EDIT_QUEUE, edit_options: dict | None = None, style: str = "auto") -> EditorServer:
    """A server for ``model`` bound to ``host:port`` (port 0: any free port); call ``serve_forever``.

    ``clip``: a :class:`~layout2img.models.text.TextEncoder` that guides region edits (default
    the model's own text encoder; without either, editing is off). ``max_edits`` edits run at
    once and ``edit_queue`` more wait; further ones get 429. ``edit_options``: keyword arguments
    of :func:`~layout2img.editing.edit_image` for every edit (``steps``, ``restarts``, ``lr``,
    ``strength``, ...); a request's own ``steps``, ``restarts`` and ``modulation`` win. ``style``:
    how style seeds draw codes (``--style``: auto, cluster or sample; see ``generate.resolve_style``)."""
    if not isinstance(max_edits, int) or max_edits < 1:
        raise ConfigError(f"--max-edits {max_edits}: expected an integer >= 1")
    if not isinstance(edit_queue, int) or edit_queue < 0:
        raise ConfigError(f"edit_queue {edit_queue}: expected an integer >= 0")
    edit_defaults = check_edit_options(edit_options or {})
    service = ModelService(model, checkpoint=checkpoint, max_waiting=max_waiting, clip=clip, clip_spec=clip_spec,
                           style=style)
    try:
        return EditorServer((host, port), service, quiet=quiet, log=log, max_body=max_body,
                            max_edits=max_edits, edit_queue=edit_queue, edit_defaults=edit_defaults)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


# -- the command -------------------------------------------------------------------------------
def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("serve", help="the interactive scene-graph editor in a web page",
                       description="Serve a web page to build a scene graph, drag its boxes, see the image "
                                   "update and edit regions of it with text. Listens on 127.0.0.1 (this "
                                   "machine only) unless --host says otherwise.")
    s.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. runs/NAME/checkpoints/latest)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    s.add_argument("--clip", default=None, metavar="DIR",
                   help="the CLIP that guides region edits, e.g. runs/clip_shapes from `layout2img train-clip` "
                        "(default: the model's own text encoder; a model without one needs this to edit)")
    s.add_argument("--max-edits", type=int, default=MAX_EDITS,
                   help=f"edits that run at once (default {MAX_EDITS}; {EDIT_QUEUE} more may wait, "
                        "further ones are refused with 429)")
    s.add_argument("--edit-steps", type=int, default=None, metavar="N",
                   help=f"optimisation steps of an edit (default: edit's own; at most {MAX_STEPS})")
    s.add_argument("--edit-restarts", type=int, default=None, metavar="N",
                   help=f"restarts of an edit (default: edit's own; at most {MAX_RESTARTS}); fewer steps and "
                        "restarts make edits faster and weaker")
    s.add_argument("--style", default="auto", choices=STYLE_CHOICES,
                   help="how objects' appearances are drawn: cluster = the fitted per-class style clusters "
                        "(`layout2img fit-styles`), sample = N(0, I), auto = clusters when fitted (default)")
    s.add_argument("--quiet", action="store_true", help="log only failures, not every request")
    s.set_defaults(func=run)
    return s


def run(args) -> int:
    from ..generate import load_model, resolve_style

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected 0..65535")
    model = load_model(args.checkpoint, args.device)
    resolve_style(model, args.style, args.checkpoint)  # before loading a CLIP for nothing
    clip = None
    if args.clip is not None:
        from ..models.text import TextEncoder

        try:
            clip = TextEncoder.load(args.clip, device=model.device).freeze()
        except Layout2ImgError as e:  # said of the loader's "text_encoder:" setting: say it of --clip
            message = str(e).removeprefix("text_encoder: ")
            raise ConfigError(f"--clip {message}" if message.startswith(args.clip)
                              else f"--clip {args.clip}: {message}") from None
    server = make_server(model, args.host, args.port, checkpoint=str(args.checkpoint), quiet=args.quiet,
                         clip=clip, clip_spec=args.clip, max_edits=args.max_edits,
                         edit_options={"steps": args.edit_steps, "restarts": args.edit_restarts}, style=args.style)
    if not server.loopback_only:
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the model",
              file=sys.stderr)
    print(f"layout2img editor on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
