"""Every image-quality lever is a config switch that builds and trains (issue 11), and style
clusters are fitted at the end of a run and used by generation (issue 13)."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from layout2img import SceneGraphToImage
from layout2img.config import load_config
from layout2img.errors import ConfigError
from layout2img.training.trainer import Trainer

SWITCHES = {
    "spade": ["model.generator.conditioning=spade", "model.generator.layout_skips=false",
              "model.generator.spade_hidden=8"],
    "segmentation_d": ["discriminator.kind=segmentation", "discriminator.segmentation.ndf=4",
                       "discriminator.segmentation.n_down=2", "loss.lambda_labelmix=10", "loss.lambda_feat=0"],
    "diffaugment_multiscale": ["train.diffaugment=color,translation,cutout"],
    "diffaugment_segmentation": ["discriminator.kind=segmentation", "discriminator.segmentation.ndf=4",
                                 "discriminator.segmentation.n_down=2", "loss.lambda_labelmix=10",
                                 "train.diffaugment=color,translation,cutout"],
    "object_d": ["discriminator.object.ndf=8", "discriminator.object.crop_size=8"],
    "r1": ["train.r1_gamma=1.0", "train.r1_every=1"],
    "r1_segmentation": ["discriminator.kind=segmentation", "discriminator.segmentation.ndf=4",
                        "discriminator.segmentation.n_down=2", "train.r1_gamma=1.0", "train.r1_every=1"],
}


def run(tiny_shapes, out, extra, steps=3):
    cfg = load_config(None, tiny_overrides(tiny_shapes, out, max_steps=steps, checkpoint_every=steps) + extra)
    trainer = Trainer(cfg)
    try:
        values = []
        for _ in range(steps):
            batch = next(iter(trainer.loader))
            batch = trainer.augment(batch.to(trainer.device), generator=trainer.noise)
            values.append(trainer.train_step(batch))
            trainer.step += 1
        return trainer, values
    finally:
        trainer.close()


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_switch_builds_and_trains(name, tiny_shapes, tmp_path):
    trainer, values = run(tiny_shapes, tmp_path / name, SWITCHES[name])
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in values)
    keys = set(values[-1])
    if "segmentation" in name:
        assert {"d_real", "d_fake"} <= keys and "g_feat" not in keys
        if "r1" not in name:
            assert "d_labelmix" in keys
    if name == "object_d":
        assert {"g_obj", "d_obj", "d_obj_aux"} <= keys
    if name.startswith("r1"):
        assert "d_r1" in keys and values[-1]["d_r1"] >= 0


def test_segmentation_discriminator_learns_the_classes(tiny_shapes, tmp_path):
    """Its real-image loss goes down: it learns to label pixels with the layout's classes."""
    trainer, values = run(tiny_shapes, tmp_path / "seg", SWITCHES["segmentation_d"], steps=12)
    first = sum(v["d_real"] for v in values[:3]) / 3
    last = sum(v["d_real"] for v in values[-3:]) / 3
    assert last < first


def test_bad_switch_values_are_named(tiny_shapes, tmp_path):
    with pytest.raises(ConfigError, match="discriminator.kind"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path) + ["discriminator.kind=patch"]))
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path) + ["train.diffaugment=flip"]))
    with pytest.raises(ConfigError, match="lambda_labelmix needs discriminator.kind=segmentation"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path) + ["loss.lambda_labelmix=1"]))
    with pytest.raises(ConfigError, match="conditioning 'film'"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path) + ["model.generator.conditioning=film"]))


def test_style_clusters_fitted_at_the_end_and_used_by_generate(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=2, checkpoint_every=2)
                      + ["train.fit_styles=16"])
    trainer = Trainer(cfg)
    try:
        last = trainer.fit()
    finally:
        trainer.close()
    model = SceneGraphToImage.from_pretrained(last)
    clusters = model.style_clusters
    assert clusters.fitted and int(clusters.counts.sum()) > 0
    graph = {"objects": ["circle", "sky", "grass"], "relationships": [[0, "above", 2]]}
    out = model.generate(graph, seed=0, return_output=True)  # default: clusters when fitted
    codes = out.style_codes[:3]
    for i, name in enumerate(["circle", "sky", "grass"]):
        c = model.vocab.object_index(name)
        centres = clusters.centres[c, : int(clusters.counts[c])]
        if len(centres):
            assert torch.cdist(codes[i:i + 1], centres, compute_mode="donot_use_mm_for_euclid_dist").min() < 1e-5
