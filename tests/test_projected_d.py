"""The projected discriminator (Projected GAN on the project's own frozen scene segmenter, issue 20):
the segmenter learns the layout's classes from real images, then nothing but the heads trains."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from conftest import tiny_overrides
from layout2img.config import load_config, to_container
from layout2img.data.batch import collate
from layout2img.data.build import build_dataset
from layout2img.errors import ConfigError
from layout2img.models.discriminator import ProjectedDiscriminator
from layout2img.models.segmenter import SceneSegmenter
from layout2img.training import checkpoint as ckpt
from layout2img.training.adversarial import build_image_discriminator
from layout2img.training.segmenter import gt_label_map, train_segmenter
from layout2img.training.trainer import Trainer

PROJECTED = ["discriminator.kind=projected", "discriminator.projected.ndf=8", "discriminator.projected.mix_channels=8",
             "discriminator.projected.encoder_widths=[8,16]", "discriminator.projected.encoder_steps=30",
             "discriminator.projected.encoder_batch=8"]


def _pixel_accuracy(segmenter, images, labels) -> float:
    with torch.no_grad():
        pred = segmenter(images).argmax(1)
    known = labels > 0
    return float((pred[known] == labels[known]).float().mean())


def test_segmenter_shapes_and_frozen_stays_in_eval():
    seg = SceneSegmenter(5, (4, 8))
    x = torch.randn(2, 3, 16, 16)
    assert seg(x).shape == (2, 5, 16, 16)
    assert [f.shape[-1] for f in seg.features(x)] == [8, 4]
    with pytest.raises(ConfigError, match=r"multiples of 4, got \(2, 3, 18, 18\)"):
        seg(torch.randn(2, 3, 18, 18))
    seg.freeze().train()
    assert not seg.training and not any(p.requires_grad for p in seg.parameters())
    seg.unfreeze().train()
    assert seg.training and all(p.requires_grad for p in seg.parameters())


def test_the_segmenter_learns_the_layouts_classes_from_real_images(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path) + PROJECTED)
    trainer = Trainer(cfg)
    try:
        data = build_dataset(to_container(cfg.data), "train", seed=0)
        batch = collate([data[i] for i in range(8)])
        labels = gt_label_map(trainer.model, batch, 32)
        assert labels.shape == (8, 32, 32) and int(labels.max()) < trainer.vocab.num_objects
        seg = SceneSegmenter(trainer.vocab.num_objects, (8, 16))
        before = _pixel_accuracy(seg.eval(), batch.images, labels)
        rng = torch.get_rng_state()
        summary = train_segmenter(seg, data, partial(gt_label_map, trainer.model), steps=60, batch_size=8, lr=2e-3,
                                  seed=0, image_size=32, low_res=16)
        assert torch.equal(torch.get_rng_state(), rng)  # the GAN's draws do not depend on it
        assert seg.frozen and not seg.training
        after = _pixel_accuracy(seg, batch.images, labels)
        majority = float(torch.bincount(labels[labels > 0]).max() / (labels > 0).sum())
        assert after > max(before, majority) + 0.05, (before, majority, after)
        assert 0 < summary["pixel_accuracy"] <= 1 and summary["seconds"] > 0
    finally:
        trainer.close()


def test_projected_d_structure_and_only_its_heads_learn():
    d = ProjectedDiscriminator(SceneSegmenter(4, (8, 16)), layout_channels=5, ndf=8, mix_channels=6)
    x = torch.randn(3, 8, 16, 16, requires_grad=True)
    out = d(x)
    assert len(out) == 2 and all(len(scale) == 4 for scale in out)
    assert [scale[0].shape[1] for scale in out] == [6, 6] and all(scale[-1].shape[1] == 1 for scale in out)
    sum(scale[-1].sum() for scale in out).backward()
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") for n in trainable)
    assert all(p.grad is None for n, p in d.named_parameters() if n not in trainable)
    assert x.grad is not None and float(x.grad[:, -3:].abs().sum()) > 0  # the image reaches the logits
    assert float(x.grad[:, :5].abs().sum()) > 0  # and so does the layout
    with pytest.raises(ConfigError, match="built for 8"):
        d(torch.randn(1, 7, 16, 16))
    with pytest.raises(ConfigError, match="takes no text"):
        build_image_discriminator({"kind": "projected", "projected": {"encoder_widths": [8], "ndf": 8,
                                                                     "mix_channels": 8}}, 4, 5, text_dim=16)


def test_a_projected_run_trains_the_heads_keeps_the_encoder_and_resumes_exactly(tiny_shapes, tmp_path):
    def run(out, steps):
        trainer = Trainer(load_config(None, tiny_overrides(tiny_shapes, out, max_steps=steps, checkpoint_every=2)
                                      + PROJECTED))
        try:
            return trainer, trainer.fit()
        finally:
            trainer.close()

    trainer, first = run(tmp_path / "b", 2)
    assert not any(p.requires_grad for p in trainer.d_image.encoder.parameters())  # after G's frozen block too
    state2 = ckpt.load_training_state(first)["d_image"]
    _, straight = run(tmp_path / "a", 4)
    _, resumed = run(tmp_path / "b", 4)
    state_a, state_b = ckpt.load_training_state(straight)["d_image"], ckpt.load_training_state(resumed)["d_image"]
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
        if k.startswith(("encoder.", "ccm.", "csm.")):
            assert torch.equal(state_a[k], state2[k]), k  # fixed through the GAN steps
    moved = [k for k in state_a if k.startswith("heads.") and not torch.equal(state_a[k], state2[k])]
    assert len(moved) >= len(trainer.d_image.heads) * 3  # every head's weights (a hinge-balanced bias may not)
    # the segmenter was trained before the first step: its weights are not the trainer's initial draw
    unfitted = Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "c") + PROJECTED))
    try:
        drawn = unfitted.d_image.encoder.stem[0].weight
        assert not torch.equal(state_a["encoder.stem.0.weight"], drawn)
        assert torch.equal(state_a["ccm.0.weight"], unfitted.d_image.ccm[0].weight)  # random and fixed
    finally:
        unfitted.close()
