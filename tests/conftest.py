"""Shared fixtures: a tiny Shapes dataset and config overrides for a tiny, fast model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# A CLIP small enough to build in milliseconds (the token table dominates: 49408 x 32).
# A scene-graph-to-image model small enough to run in milliseconds (32 px). It keeps v0.1's
# generator (input conditioning) and encoder norm, which the tests written against it assume.
TINY_MODEL = dict(
    vocab="shapes", image_size=32, style_dim=4,
    gcn={"embed_dim": 16, "width": 16, "hidden": 32, "layers": 2},
    layout={"mask_size": 8, "box_hidden": 16, "mask_channels": 8, "predictor": "regression"},
    generator={"ngf": 4, "n_downsample": 2, "n_blocks": 1, "conditioning": "input"},
    encoder={"nef": 4, "n_downsample": 2, "norm": "instance"},
    clusters={"k": 2},
)
TINY_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_tmp(tmp_path_factory):
    """Evaluation keeps Inception features in a cache folder: the tests' go to a temporary one."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAYOUT2IMG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """32 px Shapes with 24 train and 8 val images, built once per test session."""
    from layout2img.data.shapes import ensure_shapes

    return ensure_shapes(tmp_path_factory.mktemp("data") / "shapes32", num_train=24, num_val=8, size=32, seed=0,
                         workers=1)


def tiny_overrides(shapes_root: Path, out_dir: Path, **extra) -> list[str]:
    """Overrides that turn configs/shapes_64.yaml into a seconds-long CPU run."""
    o = {
        "out_dir": str(out_dir), "device": "cpu", "batch_size": 4, "max_steps": 4, "checkpoint_every": 2,
        "sample_every": 1000, "log_every": 1,
        # the tiny model keeps v0.1's generator and schedule (the SPADE / DiffAugment / cluster
        # defaults have their own tests; so has the layout sampler): tests written against it keep their meaning
        "train.fit_styles": 0, "train.diffaugment": "", "model.generator.conditioning": "input",
        "train.low_res_steps": 0,  # the default run's 32 px start: its own test
        "train.lr_g": 2e-4, "train.lr_d": 2e-4,
        "model.generator.layout_skips": True,
        "data.root": str(shapes_root), "data.image_size": 32, "data.prepare.num_train": 24,
        "data.prepare.num_val": 8, "data.prepare.size": 32,
        "model.gcn.embed_dim": 16, "model.gcn.width": 16, "model.gcn.hidden": 32, "model.gcn.layers": 1,
        "model.layout.box_hidden": 32, "model.layout.mask_channels": 8, "model.layout.predictor": "regression",
        "model.generator.ngf": 8, "model.generator.n_downsample": 2, "model.generator.n_blocks": 1,
        "model.encoder.nef": 4, "model.encoder.n_downsample": 2,
        "discriminator.image.ndf": 8, "discriminator.image.num_D": 1, "discriminator.image.n_layers": 2,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_shapes) -> Path:
    """A checkpoint of a tiny model trained 2 steps at 32 px, made once per test session."""
    from layout2img.config import load_config
    from layout2img.training.trainer import Trainer

    out = tmp_path_factory.mktemp("tiny_checkpoint_run")
    trainer = Trainer(load_config(None, tiny_overrides(tiny_shapes, out, max_steps=2, checkpoint_every=2)))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return out / "checkpoints" / "latest"


@pytest.fixture(scope="session")
def tiny_styled_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny checkpoint with its style clusters fitted on the tiny train split (a folder of its own)."""
    from layout2img.training.styles import fit_checkpoint_styles

    out = tmp_path_factory.mktemp("tiny_styled") / "model"
    folder, _ = fit_checkpoint_styles(tiny_checkpoint, out, config=tiny_checkpoint.parent.parent / "config.yaml",
                                      device="cpu", progress=False)
    return folder


def serve_in_thread(app):
    """Serve a ``layout2img.web`` app with uvicorn on 127.0.0.1 and a free port, on a daemon thread,
    for a fixture: yields the running ``EditorServer`` (``.url``, ``.port``, ``.app``), then stops it."""
    from layout2img.web.server import EditorServer

    srv = EditorServer(app, "127.0.0.1", 0).start()
    try:
        yield srv
    finally:
        srv.stop()


def write_json(path, data):
    """``data`` written as JSON to ``path``; returns ``path``."""
    path.write_text(json.dumps(data))
    return path


def read_pixels(path):
    """An image file's RGB pixels, (H, W, 3) uint8."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def cli_generate(checkpoint, graph_file, out, *extra) -> int:
    """``layout2img generate GRAPH --checkpoint C --out OUT --device cpu EXTRA...``'s exit status."""
    from layout2img.cli import main

    return main(["generate", str(graph_file), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu",
                 *map(str, extra)])
