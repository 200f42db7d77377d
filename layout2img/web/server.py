"""The editor served by uvicorn: :func:`build_app` (a model and the server's options -> the app)
and :class:`EditorServer` (the app on a socket of its own, in the foreground or on a thread).

The socket is bound here, before uvicorn starts, so that ``--port 0`` has a port to print and a
busy port is one line (``cannot listen on HOST:PORT``). A server bound to a loopback address
answers only requests addressed to a loopback name (:class:`~.guard.Guard`).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import TextIO

from ..errors import ConfigError
from .appearance import MAX_IMAGE_BODY
from .edits import EditJobs, check_edit_options
from .guard import AccessLog
from .protocol import is_loopback
from .scheduler import MAX_BATCH, MAX_WAIT
from .service import MAX_BODY, MAX_WAITING, ModelService

MAX_EDITS = 1
EDIT_QUEUE = 2
#: Seconds a stopping server waits for requests in flight before it drops them.
GRACEFUL_SECONDS = 5


def build_app(model, *, checkpoint: str | None = None, clip=None, clip_spec: str | None = None,
              style: str = "auto", loopback_only: bool = True, max_body: int = MAX_BODY,
              max_image_body: int = MAX_IMAGE_BODY, max_waiting: int = MAX_WAITING, max_edits: int = MAX_EDITS,
              edit_queue: int = EDIT_QUEUE, edit_options: dict | None = None, max_batch: int = MAX_BATCH,
              batch_wait: float = MAX_WAIT,
              quiet: bool = False, log: TextIO | None = None):
    """The editor's FastAPI app for ``model``.

    ``clip``: a :class:`~layout2img.models.text.TextEncoder` that guides region edits (default
    the model's own text encoder; without either, editing is off). ``max_edits`` edits run at
    once and ``edit_queue`` more wait; further ones get 429. ``edit_options``: keyword arguments
    of :func:`~layout2img.editing.edit_image` for every edit (``steps``, ``restarts``, ``lr``,
    ``strength``, ...); a request's own ``steps``, ``restarts`` and ``modulation`` win. ``style``:
    how style seeds draw codes (``--style``: auto, cluster or sample). ``max_batch`` generate
    requests at most share one model call, gathered for at most ``batch_wait`` seconds; a request
    body may hold ``max_body`` bytes, a picture sent to /api/appearance ``max_image_body``;
    ``max_waiting`` requests may wait for the model, more get 429. ``log``: where request lines
    (not with ``quiet``) and failures go (default stderr)."""
    from .app import create_app

    if not isinstance(max_edits, int) or max_edits < 1:
        raise ConfigError(f"--max-edits {max_edits}: expected an integer >= 1")
    if not isinstance(edit_queue, int) or edit_queue < 0:
        raise ConfigError(f"edit_queue {edit_queue}: expected an integer >= 0")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"--max-batch {max_batch}: expected an integer >= 1")
    if not 0 <= batch_wait <= 1:
        raise ConfigError(f"--batch-wait-ms {batch_wait * 1000:g}: expected 0 to 1000 milliseconds")
    defaults = check_edit_options(edit_options or {})
    service = ModelService(model, checkpoint=checkpoint, max_waiting=max_waiting, clip=clip, clip_spec=clip_spec,
                           style=style, max_batch=max_batch, max_wait=batch_wait)
    access = AccessLog(log, quiet=quiet)
    jobs = EditJobs(service, max_running=max_edits, max_queued=edit_queue, defaults=defaults,
                    log_error=access.error_text)
    return create_app(service, jobs, loopback_only=loopback_only, max_body=max_body, max_image_body=max_image_body,
                      log=access)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or ConfigError in one line."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class EditorServer:
    """``app`` served by uvicorn on ``host:port``: ``serve_forever()`` in this thread, or
    ``start()`` on a daemon thread and ``stop()``. ``loopback_only`` says whether the address is
    this machine's own (then the app should refuse other Host names: :func:`build_app` does)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.app = app
        self.socket = listen(host, port)
        self.loopback_only = is_loopback(host.strip("[]"))
        # uvicorn's own log: warnings and errors only; the app logs each request itself
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = self.socket.getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serve until stopped (Ctrl-C in the main thread: uvicorn stops, then re-raises it)."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 30.0) -> "EditorServer":
        self._thread = threading.Thread(target=self.serve_forever, name="layout2img-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the editor server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_SECONDS + 10)
        self.socket.close()
