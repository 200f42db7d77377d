"""Where a run's checkpoint is, and the run config it was trained with (for evaluate and train-classifier)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import CheckpointError, ConfigError, DataError
from ..io import read_json


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A model folder (``config.json`` inside) or a run folder (its ``checkpoints/latest``)."""
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if (p / "checkpoints").is_dir():
        from .checkpoint import latest_checkpoint

        found = latest_checkpoint(p / "checkpoints")
        if found is not None:
            return found
    raise CheckpointError(f"{p}: not a checkpoint folder (no config.json) nor a run folder with checkpoints/")


def find_run_config(checkpoint: Path) -> Path:
    """The resolved config the trainer wrote beside its checkpoints, else the one it started from."""
    real = checkpoint.resolve()
    for cand in (real.parent.parent / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if cand.is_file():
            return cand
    try:
        meta = read_json(checkpoint / "config.json", "checkpoint config").get("metadata") or {}
    except (DataError, AttributeError):  # unreadable or not an object: no hint from it
        meta = {}
    source = meta.get("config_path")
    if source and Path(source).is_file():
        return Path(source)
    raise ConfigError(f"{checkpoint}: cannot find its run config (no ../../config.yaml, no readable "
                      "metadata.config_path); pass --config")


def load_run_config(checkpoint: Path, config: str | os.PathLike | None = None, overrides: Iterable[str] = ()):
    """(run config with ``overrides``, its path): ``config`` given, else :func:`find_run_config`."""
    from ..config import load_config

    path = Path(config) if config is not None else find_run_config(checkpoint)
    return load_config(path, list(overrides)), path
