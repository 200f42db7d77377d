"""Datasets and batching: every dataset yields the item dicts that ``collate`` packs (batch.py).

The dataset classes load on first use, so ``layout2img prepare shapes`` (and its worker
processes) do not pay for importing pycocotools and h5py.
"""
from .batch import Batch, collate

_LAZY = {
    "CocoSceneGraphDataset": ".coco",
    "VisualGenomeDataset": ".vg",
    "ShapesDataset": ".shapes",
    "build_dataset": ".build",
}

__all__ = ["Batch", "collate", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
