"""Each image-quality switch (issue 11) changes what it claims, seen from outside the trainer: a
real :class:`Trainer` steps a fixed batch (``train_step``) and hooks on its modules record what the
discriminators are given. Style clusters are fitted at the end of a run and used by generation
(issue 13)."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from conftest import tiny_overrides
from layout2img import SceneGraphToImage
from layout2img.config import load_config, to_container
from layout2img.data.batch import collate
from layout2img.data.build import build_dataset
from layout2img.errors import ConfigError
from layout2img.training.trainer import Trainer

SEGMENTATION = ["discriminator.kind=segmentation", "discriminator.segmentation.ndf=4",
                "discriminator.segmentation.n_down=2"]
BATCH = 4


@contextmanager
def built(tiny_shapes, out, extra=()):
    """A tiny trainer (the config's first steps never run: tests call ``train_step`` themselves)
    and the first ``BATCH`` train images as a batch."""
    cfg = load_config(None, tiny_overrides(tiny_shapes, out) + list(extra))
    trainer = Trainer(cfg)
    data = build_dataset(to_container(cfg.data), "train", seed=0)
    try:
        yield trainer, collate([data[i] for i in range(BATCH)])
    finally:
        trainer.close()


@contextmanager
def inputs_of(module: torch.nn.Module, outputs: list | None = None):
    """Every tensor ``module`` is called with inside the block (its first argument), and its outputs."""
    calls: list[torch.Tensor] = []

    def record(_, args, out):
        calls.append(args[0].detach().clone())
        if outputs is not None:
            outputs.append(out)

    handle = module.register_forward_hook(record)
    try:
        yield calls
    finally:
        handle.remove()


def discriminator_step_input(calls: list[torch.Tensor]) -> torch.Tensor:
    """The image discriminator's own step sees real and fake stacked (the generator's terms one copy)."""
    (both,) = [x for x in calls if x.shape[0] >= 2 * BATCH]
    return both


# -- SPADE -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["spade", "input"])
def test_spade_changes_pixels_only_near_the_object_whose_code_changed(conditioning, tiny_shapes, tmp_path):
    """Trained through the trainer, a SPADE generator lets one object's style code reach the
    pixels around that object only; pix2pixHD's input conditioning lets it reach the whole image."""
    extra = [f"model.generator.conditioning={conditioning}", "model.generator.layout_skips=false",
             "model.generator.spade_hidden=8"]
    with built(tiny_shapes, tmp_path, extra) as (trainer, batch):
        for _ in range(2):  # SPADE's style modulation starts at zero: the steps make it act
            trainer.train_step(batch)
        model = trainer.model.eval()
    graph = {"objects": ["circle", "square", "sky"], "relationships": [],
             "boxes": [[0.05, 0.05, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0, 0, 1, 1]]}
    codes = torch.randn(3, model.style_dim, generator=torch.Generator().manual_seed(0))
    changed = codes.clone()
    changed[1] = -2 * codes[1]  # the square's code
    with torch.no_grad():
        diff = (model.generate(graph, seed=0, style_codes=[changed])
                - model.generate(graph, seed=0, style_codes=[codes])).abs().amax(dim=1)[0]
    near = torch.zeros(32, 32, dtype=torch.bool)
    near[19 - 6:, 19 - 6:] = True  # the square is pixels 19..29 of 32; 6 px of receptive field around it
    assert float(diff[near].max()) > 0
    if conditioning == "spade":
        assert float(diff[~near].max()) == 0.0
    else:
        assert float(diff[~near].max()) > 0  # far from the square too


# -- DiffAugment -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["multiscale", "segmentation"])
def test_without_diffaugment_the_discriminator_sees_the_batch_images(kind, tiny_shapes, tmp_path):
    extra = ["train.diffaugment="] + (SEGMENTATION if kind == "segmentation" else [])
    with built(tiny_shapes, tmp_path, extra) as (trainer, batch), inputs_of(trainer.d_image) as calls:
        trainer.train_step(batch)
    real = discriminator_step_input(calls)[:BATCH, -3:]
    assert torch.equal(real, batch.images)


@pytest.mark.parametrize("kind", ["multiscale", "segmentation"])
def test_with_diffaugment_the_discriminator_sees_augmented_images(kind, tiny_shapes, tmp_path):
    extra = ["train.diffaugment=color,translation,cutout"] + (SEGMENTATION if kind == "segmentation" else [])
    with built(tiny_shapes, tmp_path, extra) as (trainer, batch), inputs_of(trainer.d_image) as calls:
        trainer.train_step(batch)
    both = discriminator_step_input(calls)
    for i in range(BATCH):
        assert not torch.equal(both[i, -3:], batch.images[i])
        cut = both[i].abs().sum(0) == 0  # cutout: a square of half the side set to zero, in every channel
        assert int(cut.sum()) >= 16 * 16
        if kind == "multiscale":  # the layout channels of a scene's real and fake copy moved alike
            assert torch.equal(both[i, :-3], both[BATCH + i, :-3])


def test_translation_moves_the_real_images_by_whole_pixels(tiny_shapes, tmp_path):
    with built(tiny_shapes, tmp_path, ["train.diffaugment=translation"]) as (trainer, batch), \
            inputs_of(trainer.d_image) as calls:
        trainer.train_step(batch)
    seen = discriminator_step_input(calls)[:BATCH, -3:]
    shifts = []
    for image, real in zip(seen, batch.images):
        found = [(dx, dy) for dy in range(-4, 5) for dx in range(-4, 5)  # up to 1/8 of 32 px
                 if torch.equal(image, torch.roll(torch.nn.functional.pad(real, (4, 4, 4, 4)), (dy, dx), (1, 2))
                                [:, 4:-4, 4:-4])]
        assert found, "a real image the discriminator saw is no whole-pixel shift of the batch's"
        shifts.append(found[0])
    assert any(s != (0, 0) for s in shifts)


# -- the segmentation discriminator ----------------------------------------------------------------
def test_segmentation_discriminator_labels_pixels_and_mixes_real_and_fake_by_label(tiny_shapes, tmp_path):
    extra = SEGMENTATION + ["loss.lambda_labelmix=10", "loss.lambda_feat=0"]
    outputs: list = []
    with built(tiny_shapes, tmp_path, extra) as (trainer, batch), inputs_of(trainer.d_image, outputs) as calls:
        losses = trainer.train_step(batch)
        num_classes = trainer.model.vocab.num_objects
    assert {"d_real", "d_fake", "d_labelmix", "g_gan"} <= set(losses) and "g_feat" not in losses
    both = discriminator_step_input(calls)
    assert both.shape[0] == 3 * BATCH  # real, fake and their LabelMix
    # a logit per pixel for each class, channel 0 "fake" (where __image__, never a pixel's class, sits)
    assert [o.shape[1:] for o in outputs] == [torch.Size([num_classes, 32, 32])] * len(outputs)
    real, fake, mixed = both[:BATCH], both[BATCH:2 * BATCH], both[2 * BATCH:]
    from_real = (mixed == real).all(1)
    from_fake = (mixed == fake).all(1)
    assert bool((from_real | from_fake).all())  # every pixel is the real one or the fake one
    assert bool(from_real.any()) and bool(from_fake.any())


def test_segmentation_discriminator_learns_the_classes(tiny_shapes, tmp_path):
    """Its real-image loss goes down: it learns to label pixels with the layout's classes."""
    with built(tiny_shapes, tmp_path, SEGMENTATION + ["loss.lambda_feat=0"]) as (trainer, batch):
        values = [trainer.train_step(batch)["d_real"] for _ in range(12)]
    assert sum(values[-3:]) < sum(values[:3])


# -- the object discriminator ----------------------------------------------------------------------
def test_object_discriminator_judges_each_objects_box_on_real_and_fake(tiny_shapes, tmp_path):
    extra = ["discriminator.object.ndf=8", "discriminator.object.crop_size=8"]
    with built(tiny_shapes, tmp_path, extra) as (trainer, batch):
        boxes_seen: list = []
        handle = trainer.d_object.register_forward_pre_hook(lambda _, args: boxes_seen.append(args[1].clone()))
        with inputs_of(trainer.d_object) as calls:
            losses = trainer.train_step(batch)
        handle.remove()
    keep = batch.objs != 0  # __image__ is no object
    assert {"g_obj", "d_obj", "d_obj_aux"} <= set(losses)
    (both,) = [x for x in calls if x.shape[0] == 2 * BATCH]
    assert torch.equal(both[:BATCH], batch.images)
    (boxes,) = [b for b in boxes_seen if b.shape[0] == 2 * int(keep.sum())]
    assert torch.equal(boxes, batch.boxes[keep].repeat(2, 1))
    with built(tiny_shapes, tmp_path / "off") as (plain, _):
        assert plain.d_object is None


# -- R1 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["multiscale", "segmentation"])
def test_r1_penalises_the_discriminator_alone_in_proportion_to_gamma(kind, tiny_shapes, tmp_path):
    """The same first step at gamma 0, 1 and 2: d_r1 doubles with gamma; the generator's update is
    the same with or without the penalty, the discriminator's is not."""
    extra = SEGMENTATION if kind == "segmentation" else []
    runs = {}
    for gamma in (0.0, 1.0, 2.0):
        with built(tiny_shapes, tmp_path / str(gamma), extra + [f"train.r1_gamma={gamma}", "train.r1_every=1"]) \
                as (trainer, batch):
            losses = trainer.train_step(batch)
            runs[gamma] = (losses, [p.detach().clone() for p in trainer.model.parameters()],
                           [p.detach().clone() for p in trainer.d_image.parameters()])
    assert "d_r1" not in runs[0.0][0]
    assert runs[1.0][0]["d_r1"] > 0
    assert runs[2.0][0]["d_r1"] == pytest.approx(2 * runs[1.0][0]["d_r1"], rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(runs[0.0][1], runs[1.0][1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0.0][2], runs[1.0][2]))


# -- checks and clusters ---------------------------------------------------------------------------
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
