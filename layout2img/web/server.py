"""``layout2img serve``: a JSON API and one static page around a loaded model.

    GET  /               the editor page (``static/index.html``, ``app.js``, ``style.css``)
    GET  /api/info       vocabulary, image size, whether text is supported, limits
    POST /api/generate   {"graph": {...}, "seed": 0, "style_seeds": [...]}
                         -> {"image": "data:image/png;base64,...", "layout_image": ..., "boxes": ...}

The graph is the sg2im form; its ``boxes`` may hold ``null`` for objects whose box is
predicted (the page pins a box when the user drags it). ``style_seeds`` gives each object
its own style code, so one object can be restyled while the others keep theirs.

Every model call holds one lock (requests take turns on the model); at most ``MAX_WAITING``
generate requests wait for it, more get 429. Bodies over ``MAX_BODY`` get 413, malformed JSON
or graphs 400 with the validator's lines, unknown paths 404; an unexpected failure is a 500
for that request only. The server binds 127.0.0.1 unless told otherwise and, when bound to a
loopback address, answers only requests addressed to a loopback name (a page on another site
cannot reach it through DNS rebinding) and only JSON POSTs (which browsers do not send
cross-site without a CORS preflight that this server never grants).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, GraphError, Layout2ImgError

STATIC_DIR = Path(__file__).with_name("static")
#: URL path -> (file in static/, content type). Nothing else is served from disk.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_BODY = 64 * 1024
#: A refused body up to this size is read and dropped so the client gets the answer (see _discard_body).
DRAIN_LIMIT = 4 * 1024 * 1024
MAX_WAITING = 16
MAX_SEED = 2**63 - 1
REQUEST_FIELDS = ("graph", "seed", "style_seeds")
#: Side of the layout pictures the page shows under its boxes.
PICTURE_SIDE = 256
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """A request the server refuses: an HTTP status, one line, and optionally every problem."""

    def __init__(self, status: int, message: str, lines: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = int(status), message
        self.lines = list(lines or [])
        self.headers = dict(headers or {})


def _png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _seed(v: Any, what: str) -> int:
    if not _is_int(v) or not 0 <= v <= MAX_SEED:
        raise RequestError(400, f"{what} must be an integer between 0 and 2**63-1, got {json.dumps(v)[:40]}")
    return v


def _valid_box(box) -> list[float]:
    """A predicted box as a valid graph box (clamped to [0, 1], at least 1e-3 wide and high)."""
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
    x0, y0 = min(x0, 1 - 1e-3), min(y0, 1 - 1e-3)
    return [x0, y0, max(x1, x0 + 1e-3), max(y1, y0 + 1e-3)]


class ModelService:
    """A model behind one lock, and the logic of the API's requests (no HTTP here)."""

    def __init__(self, model, max_objects: int | None = None, checkpoint: str | None = None,
                 max_waiting: int = MAX_WAITING):
        from ..graph import DEFAULT_MAX_OBJECTS

        self.model = model
        self.checkpoint = checkpoint
        self.max_objects = DEFAULT_MAX_OBJECTS if max_objects is None else max_objects
        self.max_waiting = max_waiting
        self.lock = threading.Lock()
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._predicted: OrderedDict[str, list[list[float]]] = OrderedDict()  # graph structure -> boxes

    @property
    def has_text(self) -> bool:
        return self.model.text_encoder is not None

    def info(self) -> dict:
        from .. import __version__
        from ..vocab import IMAGE_OBJECT, IN_IMAGE

        vocab = self.model.vocab
        return {
            "name": "layout2img", "version": __version__, "checkpoint": self.checkpoint,
            "training_step": self.model.metadata.get("training_step"),
            "vocab": vocab.name,
            "objects": [n for n in vocab.object_names if n != IMAGE_OBJECT],
            "predicates": [p for p in vocab.predicate_names if p != IN_IMAGE],
            "image_size": self.model.image_size,
            "style": self.model.style_dim > 0,
            "text": self.has_text,
            "text_reason": None if self.has_text else "this model has no text encoder (it was trained without text)",
            "region_edit": False,
            "region_edit_reason": "region editing with text is not available in this version",
            "max_objects": self.max_objects, "max_body": MAX_BODY,
        }

    # -- /api/generate -------------------------------------------------------------------------
    def parse(self, request: Any):
        """(graph without boxes, pinned boxes or None, seed, style seeds or None, warnings)."""
        from ..graph import validate_data

        if not isinstance(request, dict):
            raise RequestError(400, "the request must be a JSON object with a 'graph'")
        unknown = [k for k in request if k not in REQUEST_FIELDS]
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0]!r} (known: {', '.join(REQUEST_FIELDS)})")
        if "graph" not in request:
            raise RequestError(400, "missing 'graph' (a scene graph in sg2im form)")
        data = request["graph"]
        if not isinstance(data, dict):
            raise RequestError(400, "'graph' must be one scene graph (a JSON object with 'objects')")
        seed = _seed(request.get("seed", 0), "'seed'")
        data = dict(data)
        boxes = data.pop("boxes", None)  # may hold nulls here: checked on their own below
        warnings: list[str] = []
        graphs, errors = validate_data(data, self.model.vocab, self.max_objects, source="request",
                                       warnings=warnings)
        if errors:
            raise RequestError(400, errors[0], errors)
        graph = graphs[0]
        n = graph.num_objects
        pinned = None
        if boxes is not None:
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
        style_seeds = request.get("style_seeds")
        if style_seeds is not None:
            if not isinstance(style_seeds, list) or len(style_seeds) != n:
                raise RequestError(400, f"'style_seeds' must be a list with one integer per object ({n})")
            style_seeds = [_seed(s, f"style_seeds[{i}]") for i, s in enumerate(style_seeds)]
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
        return graph, pinned, seed, style_seeds, warnings

    def generate(self, request: Any) -> dict:
        graph, pinned, seed, style_seeds, warnings = self.parse(request)
        with self._turn():
            started = time.perf_counter()
            result, boxes = self._run(graph, pinned, seed, style_seeds)
            return self._response(graph, result, boxes, pinned, seed, style_seeds, warnings,
                                  time.perf_counter() - started)

    @contextlib.contextmanager
    def _turn(self):
        """Hold the model lock; refuse (429) rather than queue without bound."""
        with self._waiting_lock:
            if self._waiting >= self.max_waiting:
                raise RequestError(429, "the server is busy (too many requests waiting); try again",
                                   headers={"Retry-After": "1"})
            self._waiting += 1
        try:
            with self.lock:
                yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _structure_key(self, graph) -> str:
        return json.dumps([graph.objects, graph.relationships, graph.descriptions, graph.caption])

    def _run(self, graph, pinned, seed: int, style_seeds):
        """Generate under the lock; boxes the user pinned are kept, the others predicted."""
        from ..generate import object_style_codes

        codes = None if style_seeds is None else object_style_codes(self.model, graph.objects, style_seeds)
        kwargs = {"seed": seed, "return_output": True, "style_codes": None if codes is None else [codes]}
        n = graph.num_objects
        key = self._structure_key(graph)
        if pinned is not None and any(b is None for b in pinned):
            # Box prediction does not depend on given boxes, so the free objects get the boxes they
            # would get with no pins at all: cached from the last request with this structure.
            predicted = self._predicted.get(key)
            if predicted is None:
                out = self.model.generate([graph], **kwargs)
                predicted = self._remember(key, out.boxes[:n])
            filled = graph.copy()
            for i in range(n):
                filled.set_box(i, pinned[i] if pinned[i] is not None else _valid_box(predicted[i]))
            graph = filled
        elif pinned is not None:
            graph = graph.copy()
            for i in range(n):
                graph.set_box(i, pinned[i])
        out = self.model.generate([graph], **kwargs)
        if graph.boxes is None:
            self._remember(key, out.boxes[:n])
        return out, out.boxes[:n].cpu()

    def _remember(self, key: str, boxes) -> list[list[float]]:
        value = boxes.detach().cpu().tolist()
        self._predicted[key] = value
        self._predicted.move_to_end(key)
        while len(self._predicted) > 128:
            self._predicted.popitem(last=False)
        return value

    def _response(self, graph, out, boxes, pinned, seed, style_seeds, warnings, seconds) -> dict:
        from ..generate import layout_picture, to_image
        from ..visualize import draw_layout, label_color

        n = graph.num_objects
        masks = out.masks[:n].detach().cpu()
        colors = [label_color(name) for name in graph.objects]
        shapes = draw_layout(None, boxes, labels=None, masks=masks, colors=colors, width=0, size=PICTURE_SIDE,
                             min_side=PICTURE_SIDE, mask_alpha=0.55)
        return {
            "image": _png_data_url(to_image(out.images[0])),
            "layout_image": _png_data_url(layout_picture(boxes, masks, graph.objects, PICTURE_SIDE)),
            "masks_image": _png_data_url(shapes),
            "boxes": [[round(float(v), 4) for v in b] for b in boxes.tolist()],
            "pinned": [b is not None for b in pinned] if pinned is not None else [False] * n,
            "colors": ["#%02x%02x%02x" % c for c in colors],
            "objects": graph.objects,
            "seed": seed,
            "style_seeds": style_seeds,
            "warnings": warnings,
            "ms": round(seconds * 1000, 1),
        }


# -- HTTP ------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host name of a Host header or an Origin URL, without the port."""
    if "://" in header:
        return (urlsplit(header).hostname or "").lower()
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


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
            elif path == "/api/generate":
                if method != "POST":
                    raise RequestError(405, f"{method} {path}: use POST", headers={"Allow": "POST"})
                self._send_json(200, self.server.service.generate(self._read_json()))
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

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = self.headers.get("Host")
        if host is not None and not _is_loopback(_host_name(host)):
            raise RequestError(403, f"Host {host[:100]!r} is not allowed (this server answers loopback names only)")
        origin = self.headers.get("Origin")
        if origin is not None and origin != "null" and not _is_loopback(_host_name(origin)):
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
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(400, f"request body is not UTF-8 (byte {e.start})") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError(400, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except (RecursionError, ValueError) as e:
            raise RequestError(400, f"malformed JSON: {str(e)[:100] or 'nested too deeply'}") from None

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
    """A ThreadingHTTPServer that holds the service, its static files and a tally of statuses."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, service: ModelService, quiet: bool = False, log=None,
                 max_body: int = MAX_BODY):
        self.service = service
        self.quiet = quiet
        self.max_body = max_body
        self.log_file = log if log is not None else sys.stderr
        self.statuses: Counter[int] = Counter()
        self._log_lock = threading.Lock()
        self.static = {name: (STATIC_DIR / name).read_bytes() for name, _ in set(STATIC_FILES.values())}
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.loopback_only = _is_loopback(address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

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
                quiet: bool = False, log=None, max_body: int = MAX_BODY,
                max_waiting: int = MAX_WAITING) -> EditorServer:
    """A server for ``model`` bound to ``host:port`` (port 0: any free port); call ``serve_forever``."""
    service = ModelService(model, checkpoint=checkpoint, max_waiting=max_waiting)
    try:
        return EditorServer((host, port), service, quiet=quiet, log=log, max_body=max_body)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


# -- the command -------------------------------------------------------------------------------
def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("serve", help="the interactive scene-graph editor in a web page",
                       description="Serve a web page to build a scene graph, drag its boxes and see the image "
                                   "update. Listens on 127.0.0.1 (this machine only) unless --host says otherwise.")
    s.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. runs/NAME/checkpoints/latest)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    s.add_argument("--quiet", action="store_true", help="log only failures, not every request")
    s.set_defaults(func=run)
    return s


def run(args) -> int:
    from ..generate import load_model

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected 0..65535")
    model = load_model(args.checkpoint, args.device)
    server = make_server(model, args.host, args.port, checkpoint=str(args.checkpoint), quiet=args.quiet)
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
