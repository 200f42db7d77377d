"""Datasets from the ``data:`` section of a run config: the kind's builder in the one registry,
:data:`layout2img.config.schema.DATASETS`."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from ..config import DATASETS
from ..errors import ConfigError

# Keys of the data section that are not dataset constructor arguments.
_RUN_KEYS = {"dataset", "root", "num_workers", "hflip", "train", "val", "prepare", "cache_images"}


def build_dataset(data_cfg: Mapping[str, Any], split: str, seed: int = 0):
    """The dataset for ``split`` ('train' or 'val') described by a config's ``data`` section.

    Common keys (``image_size``, ``mask_size``, protocol knobs) apply to both splits; the
    ``train:`` / ``val:`` sub-sections hold per-split paths and overrides.
    """
    cfg = dict(data_cfg)
    kind = cfg.get("dataset")
    if split not in ("train", "val"):
        raise ConfigError(f"data: unknown split {split!r} (train or val)")
    if kind not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {kind!r} ({', '.join(DATASETS)})")
    common = {k: v for k, v in cfg.items() if k not in _RUN_KEYS}
    common.update(dict(cfg.get(split) or {}))
    module, _, function = DATASETS[kind].builder.partition(":")
    return getattr(importlib.import_module(module), function)(cfg, split, seed, common)


def build_shapes(cfg: dict, split: str, seed: int, common: dict):
    """The Shapes split under ``cfg['root']``, written first when ``prepare`` is set."""
    from .shapes import ShapesDataset, ensure_shapes

    prep = dict(cfg.get("prepare") or {})
    root = ensure_shapes(Path(cfg["root"]), **prep) if prep else Path(cfg["root"])
    return ShapesDataset(root, split=split, seed=seed, **common)


def build_coco(cfg: dict, split: str, seed: int, common: dict):
    """A COCO-Stuff split (its files in ``common``, from the split's sub-section)."""
    from .coco import CocoSceneGraphDataset

    return CocoSceneGraphDataset(seed=seed, **common)


def build_vg(cfg: dict, split: str, seed: int, common: dict):
    """A Visual Genome split (its HDF5 file in ``common``, from the split's sub-section)."""
    from .vg import VisualGenomeDataset

    return VisualGenomeDataset(seed=seed, **common)
