"""File I/O: atomic writes, the one JSON reader, and the one checkpoint-folder format.

Atomic writes go to a temp file in the same folder, fsync, then rename: a reader (or a run killed
with SIGKILL) sees the old file or the new one, never half of one. :func:`read_json` is the JSON
reader every module uses (:func:`parse_json` for JSON that is not a file); :func:`load_weights`
the one safetensors reader and :func:`check_state` the one state-dict check of every checkpoint
loader; :class:`PretrainedMixin` the one ``config.json`` + ``model.safetensors`` folder every
saved component is written as.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

from .errors import WriteError, os_error_of
from .version import __version__

#: The suffixes that make an output path an image file (``generate``, ``edit``); :mod:`PIL` picks
#: the format from the suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


#: errnos that mean the storage refused the bytes. ``atomic_dir`` turns these into a WriteError
#: from any code in its body (which may also read); ``atomic_path`` turns every OSError into
#: one, as its body only writes.
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EIO")
                           if hasattr(errno, name))


def _discard(path: Path | None) -> None:
    """Remove a temporary file or folder if it is there."""
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except OSError:
            pass


def _final_name(written: str | Path, tmp: Path, final: Path) -> Path:
    """Where ``written`` (a path inside the temporary folder ``tmp``) would have ended up: under ``final``."""
    try:
        return final / Path(written).relative_to(tmp)
    except ValueError:
        return Path(written)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Any OSError (disk full, read-only, no permission), in the body or in the rename, removes
    the temporary and becomes a one-line :class:`~layout2img.errors.WriteError` naming ``path``."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp (and some writers, e.g. safetensors) make 0600; a saved file gets the umask's
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        _discard(tmp)
        tmp = None
        raise WriteError.from_exception(path, e) from None
    finally:
        _discard(tmp)


def read_json(path: str | Path, what: str = "file", error: Callable[[str], Exception] | None = None) -> Any:
    """Parse a JSON file; every failure is one ``error`` line naming the file (and line:column).

    ``what`` names the file in the messages ("vocabulary file"); ``error`` makes the exception
    from the message (default :class:`DataError`). A UTF-8 byte-order mark is skipped.
    """
    from .errors import DataError

    error = error or DataError
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: {what} is a folder, expected a JSON file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except PermissionError:
        raise error(f"{path}: {what}: permission denied") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    return parse_json(raw, str(path), what, error)


def parse_json(data: bytes | str, source: str, what: str = "file",
               error: Callable[[str], Exception] | None = None) -> Any:
    """Parse JSON text or UTF-8 bytes that came from ``source`` (a file name, "request body");
    every failure is one ``error`` line naming ``source`` and, where there is one, line:column."""
    from .errors import DataError

    error = error or DataError
    if isinstance(data, bytes):
        raw = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a BOM, as some editors write
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            raise error(f"{source}:{line}:{col}: not UTF-8 text in {what} (byte 0x{raw[e.start]:02x})") from None
    if not data.strip():
        raise error(f"{source}: {what} is empty (expected JSON)")
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise error(f"{source}:{e.lineno}:{e.colno}: malformed JSON in {what}: {e.msg}") from None
    except RecursionError:
        raise error(f"{source}: malformed JSON in {what}: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise error(f"{source}: malformed JSON in {what}: {str(e)[:100]}") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` (e.g. ``img.save``, ``safetensors.save_file``) and rename on success;
    a failed write (safetensors' own error type included) is a WriteError naming ``path``."""
    with atomic_path(path) as tmp:
        try:
            save(tmp)
        except Exception as e:
            os_error = os_error_of(e)
            if os_error is None or os_error is e:
                raise
            raise os_error from None


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole folder under a temporary name, then rename it into place.

    With ``overwrite`` an existing folder is swapped out (renamed aside, then removed), so
    ``path`` is always either the complete old folder or the complete new one. A write that
    fails inside (a WriteError, or an OSError of :data:`STORAGE_ERRNOS`) removes the temporary
    folder and is a WriteError naming the file as it would have been under ``path``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as e:
        _discard(tmp)
        raise WriteError.from_exception(path, e) from None
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
        old: Path | None = None
        try:
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
            os.replace(tmp, path)
        except OSError as e:
            if old is not None and (old / "x").exists():
                os.replace(old / "x", path)  # put the complete old folder back
            _discard(tmp)
            _discard(old)
            raise WriteError.from_exception(path, e) from None
        _discard(old)
        _fsync_dir(path.parent)
    except WriteError as e:
        _discard(tmp)
        raise WriteError.from_exception(_final_name(e.path, tmp, path), e) from None
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        _discard(tmp)
        raise WriteError.from_exception(_final_name(e.filename, tmp, path) if e.filename else path, e) from None
    finally:
        _discard(tmp)


@contextlib.contextmanager
def exclusive_output(path: str | Path, what: str) -> Iterator[None]:
    """Hold ``<path>.lock`` (this process's id in it) while ``path`` and what goes beside it are
    written: a second writer of the same output is refused in one line instead of silently
    replacing the first one's files under it. A lock whose process has died is taken over."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
                os.kill(holder, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its writer is gone
                continue
            except PermissionError:
                pass  # alive, another user's
            raise WriteError(f"{what} {path}: another process (pid {holder}) is writing it now; wait for it or "
                             f"choose another path", path=str(path), reason="in use") from None
        except OSError as e:
            raise WriteError.from_exception(lock, e) from None
    else:
        raise WriteError(f"{what} {path}: cannot take {lock}", path=str(lock), reason="in use")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


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


# -- checkpoint folders --------------------------------------------------------------------------
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
#: Keys of ``config.json`` written by :class:`PretrainedMixin` itself (not the component's config).
PRETRAINED_META_KEYS = ("model_class", "format_version", "layout2img_version", "metadata")


class PretrainedMixin:
    """``save_pretrained(dir, metadata)`` / ``from_pretrained(dir)`` for an ``nn.Module``: a folder
    with ``config.json`` (the component's config, its ``model_class``, ``format_version``,
    ``layout2img_version`` and ``metadata``) and ``model.safetensors`` (no pickle), plus any extra
    files the component writes. Saving is atomic (the folder is built under a temporary name and
    renamed into place); loading is strict, and every problem is one :class:`CheckpointError`
    line naming the file.

    To adopt it, a class sets

    * ``MODEL_CLASS`` - the name ``config.json`` records and loading checks;
    * ``FORMAT_VERSION`` - the folder format it writes (bump it when old code could not read a
      new folder); it reads every version up to this one (a folder without the key is version 1)
      and refuses newer ones, naming the version;
    * ``FOLDER_KIND`` - how errors name the folder (``"checkpoint folder"``, ``"CLIP folder"``);
    * ``EXTRA_FILES`` - more files that must be there (e.g. ``("vocab.json",)``);

    and implements ``pretrained_config(self) -> dict`` (JSON-serialisable) and the classmethod
    ``from_pretrained_config(cls, config, folder) -> instance`` (an untrained instance from that
    dict; ``folder`` is there to read extra files, with :func:`read_json`). Optional hooks:
    ``save_extra_files(self, folder)`` writes the extra files into the (temporary) folder;
    ``pretrained_state(self)`` / ``load_pretrained_state(self, state, where)`` choose the saved
    tensors (default: the whole ``state_dict()``, loaded after :func:`check_state`). The
    instance's ``metadata`` dict is restored from ``config.json``.
    """

    MODEL_CLASS: ClassVar[str]
    FORMAT_VERSION: ClassVar[int] = 1
    FOLDER_KIND: ClassVar[str] = "checkpoint folder"
    EXTRA_FILES: ClassVar[tuple[str, ...]] = ()
    #: The folder :meth:`from_pretrained` read (None for a model built in memory).
    pretrained_folder: Path | None = None

    # -- the hooks a component implements ------------------------------------------------------
    def pretrained_config(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement pretrained_config()")

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], folder: Path):
        raise NotImplementedError(f"{cls.__name__} must implement from_pretrained_config()")

    def save_extra_files(self, folder: Path) -> None:
        """Write files beside ``config.json`` (``folder`` is the temporary folder being built)."""

    def pretrained_state(self) -> dict[str, Any]:
        return self.state_dict()  # type: ignore[attr-defined]

    def load_pretrained_state(self, state: dict[str, Any], where: Path) -> None:
        check_state(where, self.state_dict(), state)  # type: ignore[attr-defined]
        self.load_state_dict(state, strict=True)  # type: ignore[attr-defined]

    # -- saving and loading ----------------------------------------------------------------------
    def save_pretrained(self, save_dir: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the folder ``save_dir`` (an existing one is replaced as a whole); returns it."""
        from safetensors.torch import save_file

        from .errors import ConfigError

        payload = {"model_class": self.MODEL_CLASS, "format_version": self.FORMAT_VERSION,
                   "layout2img_version": __version__, **self.pretrained_config(), "metadata": dict(metadata or {})}
        try:
            config_text = json.dumps(payload, indent=1)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"save_pretrained: metadata is not JSON-serialisable: {e}") from None
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.pretrained_state().items()}
        save_dir = Path(save_dir)
        with atomic_dir(save_dir, overwrite=True) as tmp:  # each file fsynced, then the folder renamed
            atomic_write_text(tmp / CONFIG_FILE, config_text + "\n")
            atomic_save(tmp / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
            self.save_extra_files(tmp)
        return save_dir

    @classmethod
    def read_pretrained_config(cls, folder: str | Path) -> dict[str, Any]:
        """``config.json`` of a folder, checked: complete folder, this ``MODEL_CLASS``, a
        ``format_version`` this code reads. Returns the whole payload (meta keys included)."""
        from .errors import CheckpointError

        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: {cls.FOLDER_KIND} not found")
        for name in (CONFIG_FILE, WEIGHTS_FILE, *cls.EXTRA_FILES):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder}: incomplete {cls.FOLDER_KIND}: missing {name}")
        config_path = folder / CONFIG_FILE
        payload = read_json(config_path, "config", CheckpointError)
        if not isinstance(payload, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object")
        found = payload.get("model_class")
        if found != cls.MODEL_CLASS:
            raise CheckpointError(f"{folder}: not a {cls.FOLDER_KIND}: config.json's model_class is {found!r}, "
                                  f"expected {cls.MODEL_CLASS!r}")
        version = payload.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{config_path}: format_version must be a positive integer, got {version!r}")
        if version > cls.FORMAT_VERSION:
            raise CheckpointError(
                f"{config_path}: format_version {version} is newer than this layout2img reads ({cls.MODEL_CLASS} "
                f"folders up to version {cls.FORMAT_VERSION}); it was written by layout2img "
                f"{payload.get('layout2img_version', '?')}: upgrade layout2img to load it")
        return payload

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: Any = "cpu"):
        """Load a folder written by :meth:`save_pretrained` (strict; safetensors only), in eval mode."""
        from .errors import CheckpointError, Layout2ImgError

        path = Path(path)
        payload = cls.read_pretrained_config(path)
        config = {k: v for k, v in payload.items() if k not in PRETRAINED_META_KEYS}
        try:
            obj = cls.from_pretrained_config(config, path)
        except CheckpointError:
            raise
        except Layout2ImgError as e:
            raise CheckpointError(f"{path}: {e}") from None
        obj.load_pretrained_state(load_weights(path / WEIGHTS_FILE), path / WEIGHTS_FILE)
        metadata = payload.get("metadata") or {}
        obj.metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
        obj.pretrained_folder = path  # where it came from, for messages that name it
        return obj.to(map_location).eval()
