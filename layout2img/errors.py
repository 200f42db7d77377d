"""One exception family for everything a user can get wrong.

The CLI catches ``Layout2ImgError``, prints ``str(err)`` (one line) and exits 2, or 1 for a
``WriteError`` (the input was fine, writing the output failed); anything else is a bug in
layout2img and keeps its traceback.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


class Layout2ImgError(Exception):
    """Base of every error caused by input, configuration or files (never by a bug)."""


class GraphError(Layout2ImgError, ValueError):
    """A scene graph is malformed (file, graph index, object or relation index in the message)."""


class VocabError(Layout2ImgError, KeyError):
    """A name is not in the vocabulary, or a vocabulary file is malformed."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line
        return str(self.args[0]) if self.args else ""


class DataError(Layout2ImgError):
    """A dataset file or folder is missing or malformed."""


class ConfigError(Layout2ImgError, ValueError):
    """A configuration value is missing or invalid."""


class CheckpointError(Layout2ImgError):
    """A checkpoint folder is missing, incomplete or inconsistent."""


class EditCancelled(Layout2ImgError):
    """A text-guided edit was stopped by its progress callback (restart and step in the message)."""


#: What a one-line data error during training adds: where to get the list of every bad file.
CHECK_HINT = "run `layout2img check-data` with this run's --config and overrides to list every bad file"


class WriteError(Layout2ImgError):
    """An output could not be written (disk full, read-only, no permission): the CLI exits 1.

    One line naming the path (the final name, never a temporary one), the reason and the free
    space on that filesystem; ``path``, ``reason``, ``errno`` and ``free`` (bytes, or None) keep
    the parts. Made by :meth:`from_exception`; the writers in :mod:`layout2img.io` raise it after
    removing their temporary, so nothing half-written is left behind.
    """

    def __init__(self, message: str, *, path: str, reason: str, errno: int | None = None,
                 free: int | None = None):
        super().__init__(message)
        self.path, self.reason, self.errno, self.free = path, reason, errno, free

    @classmethod
    def from_exception(cls, path, err: BaseException) -> "WriteError":
        """``PATH: cannot write (REASON); N MiB free on that filesystem`` for ``err`` (an OSError, the
        error a writer library wrapped one in, or a WriteError about another path)."""
        if isinstance(err, WriteError):
            reason, code = err.reason, err.errno
        else:
            os_err = os_error_of(err)
            code = os_err.errno if os_err is not None else None
            reason = ((os_err.strerror or str(os_err)) if os_err is not None else
                      (str(err).splitlines() or [type(err).__name__])[0])
        free = free_space(path)
        room = f"{human_bytes(free)} free on that filesystem" if free is not None else "free space unknown"
        return cls(f"{path}: cannot write ({reason}); {room}", path=str(path), reason=reason, errno=code, free=free)

    def with_note(self, note: str) -> "WriteError":
        """The same error with ``; note`` appended to its line (e.g. which checkpoint is intact)."""
        return WriteError(f"{self}; {note}", path=self.path, reason=self.reason, errno=self.errno, free=self.free)


# safetensors (Rust) reports the OS error inside its own message: "... (os error 28)"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)|code: (\d+)")


def os_error_of(err: BaseException) -> OSError | None:
    """``err`` when it is an OSError; the OSError a writer library wrapped in its own error type
    (safetensors' ``SafetensorError``); None when ``err`` is not about the file system."""
    if isinstance(err, OSError):
        return err
    if type(err).__name__ == "SafetensorError" and (m := _RUST_OS_ERROR.search(str(err))):
        code = int(m.group(1) or m.group(2))
        return OSError(code, os.strerror(code))
    return None


def free_space(path) -> int | None:
    """Bytes this user may still write on the filesystem holding ``path`` (or its nearest existing
    parent); None when not even that can be asked."""
    p = Path(os.path.abspath(path))
    for q in (p, *p.parents):
        try:
            return shutil.disk_usage(q).free
        except OSError:
            continue
    return None


def human_bytes(n: float) -> str:
    """``512 B``, ``3.2 MiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"
