"""The GAN step's losses: terms live in training/objective.py, the trainer's step reads like the data flow."""
from __future__ import annotations

import inspect

import pytest
import torch

from conftest import tiny_overrides
from layout2img.config import load_config
from layout2img.training import objective
from layout2img.training.trainer import Trainer


@pytest.fixture()
def trainer(tiny_shapes, tmp_path):
    t = Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=2)))
    yield t
    t.close()


def _batch(t: Trainer):
    from layout2img.data.batch import collate

    return collate([t.train_set[i] for i in range(4)]).to(t.device)


def test_train_step_is_short_and_reads_as_the_data_flow():
    src = inspect.getsource(Trainer.train_step).splitlines()
    assert len(src) <= 40, f"train_step is {len(src)} lines"
    body = "\n".join(src)
    order = ["self.forward(", "generator_losses(", "self.backward(self.opt_g", "discriminator_losses(",
             "self.backward(self.opt_d", "self.opt_g.step()", "self.opt_d.step()", "update_ema("]
    positions = [body.index(name) for name in order]
    assert positions == sorted(positions)


def test_a_new_generator_term_is_one_function(trainer, monkeypatch):
    """Appending a term to GENERATOR_TERMS adds its loss to the step (and to g_total) and its gradient
    reaches the generator - nothing in the trainer changes."""
    batch = _batch(trainer)

    def brightness(obj, step):  # a made-up term: pull the fake's mean brightness to the real one's
        return {"g_brightness": 3.0 * (step.fake.mean() - step.real.mean()).abs()}

    monkeypatch.setattr(objective, "GENERATOR_TERMS", objective.GENERATOR_TERMS + (brightness,))
    values = trainer.train_step(batch)
    assert "g_brightness" in values and values["g_brightness"] > 0
    parts = sum(v for k, v in values.items() if not k.startswith("d_") and k != "g_total")
    assert values["g_total"] == pytest.approx(parts, rel=1e-5)


def test_generator_terms_match_the_config_weights(trainer):
    """Every term the default tiny run uses is there, each scaled by its loss.* weight."""
    batch = _batch(trainer)
    texts = trainer.encode_texts(batch)
    step = trainer.forward(batch, texts)
    losses = trainer.objective.generator_losses(step)
    assert {"g_gan", "g_feat", "g_l1", "box", "mask", "kl"} <= set(losses)
    l1 = (step.fake.float() - step.real.float()).abs().mean()
    assert float(losses["g_l1"].detach()) == pytest.approx(trainer.loss_weights.lambda_l1 * float(l1.detach()), rel=1e-6)
    trainer.objective.weights.lambda_l1 = 0.0  # a weight of 0 switches its term off
    assert "g_l1" not in trainer.objective.generator_losses(step)


def test_discriminators_are_frozen_only_during_the_generator_losses(trainer):
    batch = _batch(trainer)
    seen = {}
    d_image = trainer.objective.d_image_frozen
    original = d_image.forward

    def spy(*a, **k):
        seen.setdefault("flags", []).append(all(p.requires_grad for p in d_image.parameters()))
        return original(*a, **k)

    d_image.forward = spy
    trainer.train_step(batch)
    # generator losses (D frozen: adversarial + feature matching's real pass) first, then the D step
    assert seen["flags"][0] is False and seen["flags"][-1] is True
    assert all(p.grad is not None for p in d_image.parameters())
    assert all(p.requires_grad for p in d_image.parameters())


def test_object_discriminator_terms_for_both_players(tiny_shapes, tmp_path):
    t = Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "o", **{"discriminator.object": "{ndf: 8}"})))
    try:
        values = t.train_step(_batch(t))
        assert {"g_obj", "g_obj_aux", "d_obj", "d_obj_aux"} <= set(values)
        assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
        # the object D's auxiliary classifier: cross entropy over the 8 Shapes classes starts near log(K)
        assert 0.5 < values["d_obj_aux"] < 5.0
    finally:
        t.close()


def test_pooled_l1_compares_block_means_and_leaves_finer_detail_alone(trainer):
    """loss.l1_pool k: the L1 between k x k block means - a fake that differs from the real image by a
    checkerboard of period 2 costs nothing at k=2 (it would at k=1), while a colour shift costs
    the same at both; the term still trains the generator (a non-zero gradient)."""
    from layout2img.training.objective import StepTensors, pixel_l1

    batch = _batch(trainer)
    step = trainer.forward(batch, trainer.encode_texts(batch))
    real, w = step.real.detach(), trainer.loss_weights.lambda_l1
    ys, xs = torch.meshgrid(torch.arange(real.shape[-2]), torch.arange(real.shape[-1]), indexing="ij")
    checker = ((ys + xs) % 2 * 2 - 1).to(real) * 0.25
    for fake, per_pixel, pooled in [(real + checker, 0.25, 0.0), (real + 0.25, 0.25, 0.25)]:
        probe = StepTensors(batch, step.out, real, fake, step.cond, step.labels, step.texts)
        trainer.objective.weights.l1_pool = 1
        assert float(pixel_l1(trainer.objective, probe)["g_l1"]) == pytest.approx(w * per_pixel, abs=1e-5)
        trainer.objective.weights.l1_pool = 2
        assert float(pixel_l1(trainer.objective, probe)["g_l1"]) == pytest.approx(w * pooled, abs=1e-5)
    trainer.objective.weights.l1_pool = 4
    grads = torch.autograd.grad(pixel_l1(trainer.objective, step)["g_l1"], step.fake)[0]
    assert grads.abs().sum() > 0


def test_l1_pool_below_one_is_refused(tiny_shapes, tmp_path):
    from layout2img.errors import ConfigError

    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=2) + ["loss.l1_pool=0"])
    with pytest.raises(ConfigError, match="loss.l1_pool"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_texture_pool_forgives_a_texture_phase_on_stuff_but_not_on_things(trainer):
    """loss.texture_pool k: a checkerboard added to the stuff far from things (in whole k x k blocks)
    costs the L1 nothing (only its block means count there); the same checkerboard on the things (and the band
    round them) costs what it always did; at full size and at the low-res steps' half size."""
    from layout2img.training.objective import StepTensors, pixel_l1

    batch = _batch(trainer)
    step = trainer.forward(batch, trainer.encode_texts(batch))
    real, w = step.real.detach(), trainer.loss_weights.lambda_l1
    trainer.objective.weights.texture_pool = 4
    texture, pool = trainer.objective.texture(step)
    assert pool == 4 and 0 < float(texture.mean()) < 1
    ys, xs = torch.meshgrid(torch.arange(real.shape[-2]), torch.arange(real.shape[-1]), indexing="ij")
    checker = ((ys + xs) % 2 * 2 - 1).to(real) * 0.25
    whole_blocks = 1 - torch.nn.functional.max_pool2d(1 - texture, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert float(whole_blocks.sum()) > 0
    on_texture = StepTensors(batch, step.out, real, real + checker * whole_blocks, step.cond, step.labels, step.texts)
    on_things = StepTensors(batch, step.out, real, real + checker * (1 - texture), step.cond, step.labels, step.texts)
    assert float(pixel_l1(trainer.objective, on_texture)["g_l1"]) == pytest.approx(0.0, abs=1e-5)
    assert float(pixel_l1(trainer.objective, on_things)["g_l1"]) == pytest.approx(
        w * 0.25 * float(1 - texture.mean()), rel=1e-4)
    trainer.objective.weights.texture_pool = 0
    assert float(pixel_l1(trainer.objective, on_texture)["g_l1"]) == pytest.approx(
        w * 0.25 * float(whole_blocks.mean()), rel=1e-4)
    trainer.objective.weights.texture_pool = 4
    small = StepTensors(batch, step.out, real[..., ::2, ::2], real[..., ::2, ::2], step.cond[..., ::2, ::2],
                        step.labels[..., ::2, ::2], step.texts)
    texture_small, pool_small = trainer.objective.texture(small)
    assert pool_small == 2 and texture_small.shape[-1] == real.shape[-1] // 2


def test_texture_pool_trains_and_is_refused_with_l1_pool(tiny_shapes, tmp_path):
    from layout2img.errors import ConfigError

    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=2) + ["loss.texture_pool=4"])
    t = Trainer(cfg)
    try:
        batch = _batch(t)
        step = t.forward(batch, t.encode_texts(batch))
        losses = t.objective.generator_losses(step)
        grads = torch.autograd.grad(losses["g_l1"] + losses["g_feat"], step.fake)[0]
        assert grads.abs().sum() > 0
    finally:
        t.close()
    for bad in (["loss.texture_pool=-1"], ["loss.texture_pool=4", "loss.l1_pool=2"]):
        cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "bad", max_steps=2) + bad)
        with pytest.raises(ConfigError, match="loss.texture_pool"):
            Trainer(cfg)
        assert not (tmp_path / "bad").exists()


def test_l1_full_size_weight_applies_in_full_size_steps_only(tiny_shapes, tmp_path):
    """loss.lambda_l1_full_size: the pixel L1's weight once the run renders at the model's size; the
    low-resolution start keeps loss.lambda_l1."""
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=4)
                      + ["train.low_res_steps=1", "loss.lambda_l1_full_size=2.5"])
    t = Trainer(cfg)
    try:
        batch = _batch(t)
        low = t.forward(batch, None)
        assert low.fake.shape[-1] == 16
        l1_low = (low.fake.float() - low.real.float()).abs().mean()
        assert float(t.objective.generator_losses(low)["g_l1"]) == pytest.approx(10.0 * float(l1_low), rel=1e-5)
        t.step = 1
        full = t.forward(batch, None)
        assert full.fake.shape[-1] == 32
        l1_full = (full.fake.float() - full.real.float()).abs().mean()
        assert float(t.objective.generator_losses(full)["g_l1"]) == pytest.approx(2.5 * float(l1_full), rel=1e-5)
        t.objective.weights.lambda_l1_full_size = 0.0  # off at full size, still on in the low-resolution steps
        assert "g_l1" not in t.objective.generator_losses(full) and "g_l1" in t.objective.generator_losses(low)
    finally:
        t.close()
