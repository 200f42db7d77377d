"""The editor API's request rules: refusals (``RequestError``), which hosts may ask, PNG answers."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class RequestError(Exception):
    """A request the server refuses: an HTTP status, one line, and optionally every problem."""

    def __init__(self, status: int, message: str, lines: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = int(status), message
        self.lines = list(lines or [])
        self.headers = dict(headers or {})


def png_data_url(image) -> str:
    """A PIL image as a ``data:image/png;base64,...`` URL."""
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host name of a Host header or an Origin URL, without the port."""
    if "://" in header:
        try:
            return (urlsplit(header).hostname or "").lower()
        except ValueError:  # e.g. an unclosed IPv6 bracket: no host this server knows
            return ""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
