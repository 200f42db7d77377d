"""What every request to the editor passes through (an ASGI middleware) and its log.

:class:`Guard` refuses, before any route runs, requests addressed to a foreign Host or sent from a
foreign Origin when the server is loopback-only (DNS rebinding: a page elsewhere cannot reach it)
and POSTs to the API that are not JSON (415; browsers send JSON cross-site only after a CORS
preflight, which this server never grants, so a foreign page cannot make it act). It puts the
security headers (CSP, nosniff, no-store, no referrer) on every answer, refuses a body declared
larger than the limit (413), and records each request's status and time in an :class:`AccessLog`;
an exception that no handler answered becomes a 500 with one line (the traceback goes to the log).
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter
from typing import TextIO

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .protocol import host_name, is_loopback

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
#: /docs is FastAPI's Swagger UI: its script and style come from a CDN, and it starts with an inline script.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
               "style-src 'self' https://cdn.jsdelivr.net; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def error_answer(status: int, message: str, lines: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal as the page reads it: ``{"error": one line, "errors": [every line]}``."""
    return JSONResponse({"error": message, "errors": list(lines or [message])}, status_code=status,
                        headers=headers)


class AccessLog:
    """One line per request (unless ``quiet``; failures always), a tally of statuses, tracebacks."""

    def __init__(self, file: TextIO | None = None, quiet: bool = False):
        self.file, self.quiet = file, quiet
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def record(self, status: int, line: str) -> None:
        with self._lock:
            self.statuses[status] += 1
        if not self.quiet or status >= 500:
            self.line(line)

    def line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.file if self.file is not None else sys.stderr, flush=True)

    def error_text(self, text: str) -> None:
        self.line(text.rstrip())


class Guard:
    """The ASGI middleware described above, outermost around the app's routes."""

    def __init__(self, app: ASGIApp | None, loopback_only: bool = True, log: AccessLog | None = None,
                 max_body: int | None = None, limits: dict[str, int] | None = None):
        self.app, self.loopback_only, self.max_body = app, loopback_only, max_body
        self.limits = dict(limits or {})  # path -> its own body limit (instead of max_body)
        self.log = log if log is not None else AccessLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope.get("path", "")
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
                headers["Content-Security-Policy"] = DOCS_POLICY if path == "/docs" else CONTENT_SECURITY_POLICY
            await send(message)

        try:
            refusal = self.refusal(scope)
            if refusal is not None:
                await error_answer(*refusal)(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as e:  # a bug: this request fails, the server goes on
            if status:  # answered (the app's 500 handler logged it) or half-answered: nothing more to say
                return
            self.log.error_text("".join(traceback.format_exception(e)))
            await error_answer(500, "internal error while handling the request (see the server's log)")(
                scope, receive, send_with_headers)
        finally:
            client = (scope.get("client") or ("-",))[0]
            self.log.record(status, f"{client} {scope.get('method')} {path[:120]} {status} "
                                    f"{1000 * (time.perf_counter() - started):.0f}ms")

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) of a request refused before routing, or None."""
        headers = Headers(scope=scope)
        if self.loopback_only:
            host = headers.get("host")
            if host is not None and not is_loopback(host_name(host)):
                return 403, f"Host {host[:100]!r} is not allowed (this server answers loopback names only)"
            origin = headers.get("origin")
            if origin is not None and origin != "null" and not is_loopback(host_name(origin)):
                return 403, f"Origin {origin[:100]!r} is not allowed"
        if scope.get("method") == "POST" and scope.get("path", "").startswith("/api/"):
            kind = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return 415, f"Content-Type must be application/json, got {kind[:60] or 'none'!r}"
        # FastAPI's own limit counts the bytes as they come; a body declared too large is refused
        # here, unread, because FastAPI would answer it in plain text instead of this JSON
        length = headers.get("content-length", "")
        limit = self.limits.get(scope.get("path", ""), self.max_body)
        if limit is not None and length.isdigit() and int(length) > limit:
            return 413, f"request body is {int(length)} bytes, more than the limit of {limit}"
        return None
