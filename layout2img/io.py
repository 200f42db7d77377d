"""Atomic file writes: a temp file in the same folder, fsync, then rename.

A reader (or a run killed with SIGKILL) sees the old file or the new one, never half of one.
Also the one safetensors reader (:func:`load_weights`) and the one state-dict check
(:func:`check_state`) that every checkpoint loader uses.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp (and some writers, e.g. safetensors) make 0600; a saved file gets the umask's
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path: str | Path, what: str = "file", error: type[Exception] | None = None) -> Any:
    """Parse a JSON file; every failure is one ``error`` line naming the file (and line:column)."""
    from .errors import DataError

    error = error or DataError
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: {what} is a folder, expected a JSON file")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}:{e.colno}: malformed JSON in {what}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not UTF-8 JSON (byte {e.start})") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` (e.g. ``img.save``, ``safetensors.save_file``) and rename on success."""
    with atomic_path(path) as tmp:
        save(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole folder under a temporary name, then rename it into place.

    With ``overwrite`` an existing folder is swapped out (renamed aside, then removed), so
    ``path`` is always either the complete old folder or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- weights -----------------------------------------------------------------------------------
def load_weights(path: str | Path, device: str = "cpu") -> dict:
    """A safetensors file's tensors (never pickle), or a one-line CheckpointError."""
    from safetensors.torch import load_file

    from .errors import CheckpointError

    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise CheckpointError(f"{path}: cannot read: {(str(e).splitlines() or [type(e).__name__])[0]}") from None


def check_state(where: str | Path, expected: dict, found: dict, allow_missing: bool = False,
                against: str = "config.json") -> None:
    """A one-line CheckpointError naming the tensors of ``found`` that do not fit a model's
    ``expected`` state dict (the model ``against`` describes): missing (unless
    ``allow_missing``), unexpected, or of another shape."""
    from .errors import CheckpointError

    missing = [] if allow_missing else [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in found and tuple(found[k].shape) != tuple(v.shape)]

    def few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    problems = [f"{label} {len(names)} tensor(s): {few(names)}" if label != "shape mismatch" else f"{label}: {few(names)}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                if names]
    if problems:
        raise CheckpointError(f"{where}: weights do not match {against}: {'; '.join(problems)}")
