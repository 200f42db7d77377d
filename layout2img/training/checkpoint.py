"""Training checkpoints: ``out_dir/checkpoints/step_NNNNNN/`` plus a ``latest`` link.

Each step folder is a complete ``SceneGraphToImage.from_pretrained`` folder (the EMA weights,
which is what sampling uses) with the training state beside it:

* ``training_state.safetensors``: every tensor of the state (raw model, optimisers, EMA,
  discriminators, RNG states), under flat keys;
* ``training_state.json``: the rest (step, epoch, data position, hyper-parameters) with
  ``{"__tensor__": key}`` placeholders for the tensors.

Nothing is unpickled. A folder is built under a temporary name and renamed into place, and
``latest`` is replaced by rename too, so a run killed at any moment leaves either the previous
checkpoint or the new one; stale temporary folders are removed by the next run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, ConfigError, WriteError
from ..io import atomic_dir, atomic_save, atomic_write_text, check_state, load_weights, read_json

STEP_DIR = re.compile(r"^step_(\d{6,})$")
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


# -- nested state <-> (flat tensors, JSON) ---------------------------------------------------
def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested dict/list state into a flat tensor dict and a JSON-able skeleton."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o, key):
        if isinstance(o, torch.Tensor):
            tensors[key] = o.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                # JSON keys are strings; remember int keys (optimiser param ids) to restore them.
                sk = f"__int__{k}" if isinstance(k, int) else str(k)
                out[sk] = walk(v, f"{key}/{k}" if key else str(k))
            return out
        if isinstance(o, (list, tuple)):
            return {"__list__": [walk(v, f"{key}/{i}") for i, v in enumerate(o)], "__tuple__": isinstance(o, tuple)}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store {type(o).__name__} at {key!r} in a checkpoint")

    return tensors, walk(obj, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(o):
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__list__" in o:
                items = [walk(v) for v in o["__list__"]]
                return tuple(items) if o.get("__tuple__") else items
            return {(int(k[7:]) if k.startswith("__int__") else k): walk(v) for k, v in o.items()}
        return o

    return walk(skeleton)


# -- the checkpoint folders ------------------------------------------------------------------
def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete step folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_JSON).exists() and (p / "model.safetensors").exists()]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``latest`` points at, or the newest complete one if the link is missing/broken."""
    root = Path(root)
    link = root / "latest"
    if link.is_symlink() or link.is_file():
        target = root / (os.readlink(link) if link.is_symlink() else link.read_text().strip())
        if (target / STATE_JSON).exists() and (target / "model.safetensors").exists():
            return target
    done = list_checkpoints(root)
    return done[-1] if done else None


def latest_note(root: str | Path) -> str:
    """What a failed write leaves to resume from: ``ROOT/latest still points to step_NNNNNN``."""
    found = latest_checkpoint(root)
    if found is None:
        return f"no checkpoint in {root} yet"
    return f"{Path(root) / 'latest'} still points to {found.name} (the run resumes from there)"


def _point_latest(root: Path, name: str) -> None:
    tmp = root / f".latest.{os.getpid()}.tmp"
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        os.symlink(name, tmp)
        os.replace(tmp, root / "latest")
    except OSError:  # filesystems without symlinks: a one-line file naming the folder
        atomic_write_text(root / "latest", name + "\n")


def remove_stale_temporaries(root: str | Path) -> None:
    """Delete half-built folders a killed run left behind (``.step_*.tmp`` / ``.old``)."""
    root = Path(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def save_checkpoint(
    root: str | Path,
    step: int,
    save_model: Callable[[Path], None],
    state: dict,
    keep_last: int | None = None,
) -> Path:
    """Write ``root/step_NNNNNN`` atomically, point ``latest`` at it and prune old ones.

    ``save_model(folder)`` writes the published model (``save_pretrained``) into the folder.
    """
    root = Path(root)
    name = step_dir_name(step)
    tensors, skeleton = flatten_state(state)
    try:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError.from_exception(root, e) from None
        with atomic_dir(root / name, overwrite=True) as tmp:  # disk full: a WriteError, no folder left
            save_model(tmp)
            atomic_save(tmp / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
            atomic_write_text(tmp / STATE_JSON, json.dumps(skeleton))
        _point_latest(root, name)
    except WriteError as e:
        raise e.with_note(latest_note(root)) from None
    if keep_last:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def load_training_state(folder: str | Path) -> dict:
    folder = Path(folder)
    for f in (STATE_JSON, STATE_TENSORS):
        if not (folder / f).exists():
            raise CheckpointError(f"{folder}: missing {f} (not a training checkpoint)")
    skeleton = read_json(folder / STATE_JSON, "training state", CheckpointError)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{folder}: unreadable training state: {str(e).splitlines()[0]}") from None
    return unflatten_state(skeleton, tensors)


def init_model_from(model, folder: Path) -> None:
    """``train.init_from``: copy a checkpoint's model weights into a new model; tensors the checkpoint
    lacks (the text layers of a model first trained without text) keep their initialisation."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"train.init_from={str(folder)!r}: no model.safetensors there (a checkpoint folder, "
                          "e.g. runs/shapes_64/checkpoints/latest)")
    state = load_weights(weights)
    try:
        check_state(weights, model.state_dict(), state, allow_missing=True, against="this config's model")
    except CheckpointError as e:
        raise ConfigError(f"train.init_from={str(folder)!r}: {e}") from None
    model.load_state_dict(state, strict=False)
