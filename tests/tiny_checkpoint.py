"""A tiny trained checkpoint (2 steps at 32 px), made once per test session and shared.

The generate, web and browser tests each ask for it; the first builds it under pytest's base
temp folder, the others find it there.
"""
from __future__ import annotations

from pathlib import Path

from conftest import tiny_overrides


def tiny_checkpoint(tmp_path_factory, shapes_root: Path) -> Path:
    from layout2img.config import load_config
    from layout2img.training.trainer import Trainer

    out = tmp_path_factory.getbasetemp() / "tiny_checkpoint_run"
    latest = out / "checkpoints" / "latest"
    if not (latest / "model.safetensors").exists():
        trainer = Trainer(load_config(None, tiny_overrides(shapes_root, out, max_steps=2, checkpoint_every=2)))
        try:
            trainer.fit()
        finally:
            trainer.close()
    return latest
