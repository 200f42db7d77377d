import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, tiny_overrides
from layout2img.config import load_config, to_container
from layout2img.errors import ConfigError
from layout2img.pipeline import SceneGraphToImage
from layout2img.training import checkpoint as ckpt
from layout2img.training.trainer import Trainer, TrainingDiverged


def _train(overrides, config=None):
    trainer = Trainer(load_config(config, overrides))
    try:
        return trainer, trainer.fit()
    finally:
        trainer.close()


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_2n_steps_equal_n_steps_plus_resume(tiny_shapes, tmp_path):
    _, straight = _train(tiny_overrides(tiny_shapes, tmp_path / "a", max_steps=6, checkpoint_every=3))
    _, first = _train(tiny_overrides(tiny_shapes, tmp_path / "b", max_steps=3, checkpoint_every=3))
    trainer, resumed = _train(tiny_overrides(tiny_shapes, tmp_path / "b", max_steps=6, checkpoint_every=3))
    assert first.name == "step_000003" and resumed.name == straight.name == "step_000006"
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = ckpt.load_training_state(straight), ckpt.load_training_state(resumed)
    for k in sa["d_image"]:
        assert torch.equal(sa["d_image"][k], sb["d_image"][k]), k
    # the model is really learning something: weights moved away from the step-3 ones
    assert any(not torch.equal(a[k], _weights(first)[k]) for k in a if a[k].is_floating_point())


def test_linear_lr_decay_follows_the_step_and_resumes_exactly(tiny_shapes, tmp_path):
    decay = {"train.lr_decay_start": 0.5}
    trainer, straight = _train(tiny_overrides(tiny_shapes, tmp_path / "a", max_steps=6, checkpoint_every=3, **decay))
    assert [trainer.schedule.lr_factor(s) for s in range(6)] == [1.0, 1.0, 1.0, 1.0, pytest.approx(2 / 3),
                                                                pytest.approx(1 / 3)]
    # the last step ran at a third of the learning rates
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(trainer.train_opts.lr_g / 3)
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(trainer.train_opts.lr_d / 3)
    # the schedule belongs to the 6-step run: resume it from its own step-3 checkpoint
    middle = straight.parent / "step_000003"
    _, resumed = _train(tiny_overrides(tiny_shapes, tmp_path / "b", max_steps=6, checkpoint_every=3,
                                       resume=str(middle), **decay))
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, constant = _train(tiny_overrides(tiny_shapes, tmp_path / "c", max_steps=6, checkpoint_every=3))
    c = _weights(constant)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())  # the decay changed training
    with pytest.raises(ConfigError, match=r"train.lr_decay_start: expected a fraction of max_steps in \[0, 1\], got 1.5"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "d", **{"train.lr_decay_start": 1.5})))


def test_a_run_written_before_the_cluster_shares_resumes_with_uniform_shares(tiny_shapes, tmp_path, monkeypatch):
    _train(tiny_overrides(tiny_shapes, tmp_path / "old", max_steps=2, checkpoint_every=2))
    load = ckpt.load_training_state

    def without_shares(folder):  # the training state as runs before the shares buffer wrote it
        state = load(folder)
        for part in ("model", "ema"):
            dropped = [k for k in state[part] if k.endswith("style_clusters.shares")]
            assert dropped, part
            state[part] = {k: v for k, v in state[part].items() if k not in dropped}
        return state

    monkeypatch.setattr(ckpt, "load_training_state", without_shares)
    trainer, last = _train(tiny_overrides(tiny_shapes, tmp_path / "old", max_steps=3, checkpoint_every=3))
    assert trainer.step == 3 and last.name == "step_000003"
    assert not trainer.model.style_clusters.shares.any() and not trainer.ema.module.style_clusters.shares.any()


def test_run_leaves_loadable_checkpoint_samples_and_logs(tiny_shapes, tmp_path):
    out = tmp_path / "run"
    trainer, last = _train(tiny_overrides(tiny_shapes, out, max_steps=2, checkpoint_every=1, sample_every=2,
                                          keep_last=1))
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_000002"]
    model = SceneGraphToImage.from_pretrained(out / "checkpoints" / "latest")
    assert model.metadata["training_step"] == 2
    img = model.generate([{"objects": ["circle", "square", "grass", "sky"], "relationships": [[0, "left of", 1]]}])
    assert img.shape == (1, 3, 32, 32) and img.abs().max() <= 1
    assert (out / "samples.png").stat().st_size > 0 and (out / "samples" / "step_000002.png").exists()
    assert any((out / "tensorboard").iterdir())
    assert (out / "config.yaml").read_text().count("max_steps: 2") == 1
    # the saved config is the resolved run config and loads back as it
    saved = load_config(out / "config.yaml")
    assert {**to_container(saved), "config_path": None} == {**to_container(trainer.cfg), "config_path": None}


def test_trainer_reads_the_schema_values(tiny_shapes, tmp_path):
    """What the config leaves out comes from the schema (Adam's betas were (0, 0.99) in the trainer)."""
    trainer = Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "t", **{"train.lr_d": 1e-4})))
    try:
        assert trainer.opt_g.param_groups[0]["betas"] == (0.5, 0.999) == trainer.opt_d.param_groups[0]["betas"]
        assert (trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]) == (2e-4, 1e-4)
        assert trainer.d_object is None and trainer.objective.perceptual is None and trainer.loss_weights.lambda_l1 == 10.0
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match=r"train.amp: expected auto, bf16, fp32, got 'bf61'"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "t", **{"train.amp": "bf61"})))
    with pytest.raises(ConfigError, match=r"device 'gpu': not a device; expected auto, cpu, cuda"):
        Trainer(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "t", device="gpu")))
    # a plain mapping is checked against the schema too
    raw = to_container(load_config(None, tiny_overrides(tiny_shapes, tmp_path / "t")))
    raw["train"]["lr_gg"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown key 'train.lr_gg'; did you mean 'train.lr_g'"):
        Trainer(raw)


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tiny_shapes, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    _train(tiny_overrides(tiny_shapes, out, max_steps=2, checkpoint_every=2))
    import layout2img.models.layout as layout_module  # the regression predictor's box term

    real_box_loss = layout_module.box_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real_box_loss(*a, **k)
        return loss * float("nan") if calls["n"] >= 2 else loss

    monkeypatch.setattr(layout_module, "box_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 4: loss .*box.* is not finite.*step_000003"):
        _train(tiny_overrides(tiny_shapes, out, max_steps=6, checkpoint_every=1))
    # step 3 was good and saved; step 4 diverged and saved nothing; every checkpoint is intact
    assert ckpt.latest_checkpoint(out / "checkpoints").name == "step_000003"
    state = ckpt.load_training_state(ckpt.latest_checkpoint(out / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_then_resume_loses_at_most_one_interval(tiny_shapes, tmp_path):
    out = tmp_path / "killed"
    args = tiny_overrides(tiny_shapes, out, max_steps=400, checkpoint_every=2)
    proc = _cli(args)
    root = out / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt.list_checkpoints(root)) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # at an arbitrary moment, possibly mid-write
    proc.wait()
    assert ckpt.list_checkpoints(root), "the run never wrote a checkpoint"
    killed_at = ckpt.latest_checkpoint(root)
    step_killed = int(killed_at.name.split("_")[1])
    args_resume = tiny_overrides(tiny_shapes, out, max_steps=step_killed + 2, checkpoint_every=2)
    res = _cli(args_resume)
    text, _ = res.communicate(timeout=300)
    assert res.returncode == 0, text
    assert f"resuming from {killed_at}" in text
    final = ckpt.latest_checkpoint(root)
    assert final.name == f"step_{step_killed + 2:06d}"
    SceneGraphToImage.from_pretrained(final)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_train_cli_reports_bad_config_in_one_line(tmp_path):
    res = _cli(["bach_size=3"])
    text, _ = res.communicate(timeout=120)
    assert res.returncode == 2
    assert text.strip().splitlines() == ["error: override 'bach_size=3': unknown key 'bach_size' in "
                                         "shapes_64.yaml; did you mean 'batch_size'?"]


def test_ddp_two_gloo_processes_train_and_write_one_checkpoint(tiny_shapes, tmp_path):
    out = tmp_path / "ddp"
    args = tiny_overrides(tiny_shapes, out, max_steps=2, checkpoint_every=2)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "train.py"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_000002"]
    model = SceneGraphToImage.from_pretrained(out / "checkpoints" / "latest")
    assert model.metadata["training_step"] == 2


COCO_TINY = REPO.parent / "shared" / "data" / "coco-tiny"


@pytest.mark.skipif(not COCO_TINY.exists(), reason="../shared/data/coco-tiny is absent (real COCO fixture)")
def test_coco_config_trains_on_real_coco_annotations(tmp_path):
    """configs/coco_64.yaml's data section drives the real COCO loader end to end (things only)."""
    ann = COCO_TINY / "annotations"
    overrides = [
        f"out_dir={tmp_path / 'coco'}", "device=cpu", "batch_size=2", "max_steps=1", "checkpoint_every=1",
        "sample_every=1", "data.num_workers=0", "data.image_size=32", "data.stuff_only=false",
        f"data.train.image_dir={COCO_TINY / 'train2017'}", f"data.train.instances_json={ann / 'instances_train2017.json'}",
        "data.train.stuff_json=null", f"data.train.captions_json={ann / 'captions_train2017.json'}",
        "data.val=null", "discriminator.image.ndf=8", "discriminator.image.num_D=1", "discriminator.object.ndf=8",
        "loss.perceptual=none", "model.gcn.width=16", "model.gcn.embed_dim=16", "model.gcn.hidden=32",
        "model.gcn.layers=1", "model.generator.ngf=8", "model.generator.n_downsample=2", "model.generator.n_blocks=1",
        "model.layout.box_hidden=16", "model.layout.mask_channels=8",
    ]
    with pytest.warns(UserWarning, match="things only"):
        trainer, last = _train(overrides, config="coco_64")
    assert trainer.vocab.name == "coco-stuff" and trainer.d_object is not None
    model = SceneGraphToImage.from_pretrained(last)
    img = model.generate([{"objects": ["person", "dog", "grass"], "relationships": [[0, "left of", 1]]}])
    assert img.shape == (1, 3, 32, 32)


def test_coarse_to_fine_schedule_trains_global_first_then_freezes_it(tiny_shapes, tmp_path):
    overrides = tiny_overrides(tiny_shapes, tmp_path / "c2f", max_steps=3, checkpoint_every=3,
                               **{"model.generator.n_local_enhancers": 1, "model.generator.n_blocks_local": 1,
                                  "train.global_steps": 1, "train.fix_global_steps": 1})
    trainer = Trainer(load_config(None, overrides))
    batch = trainer.augment(next(iter(trainer.loader)))
    g = trainer.model.generator

    def snapshot(params):
        return [p.detach().clone() for p in params]

    assert trainer.schedule.stage(trainer.step) == "global"
    glob0, loc0 = snapshot(g.global_net.parameters()), snapshot(g.enhancers.parameters())
    trainer.train_step(batch)
    assert trainer.last_output.images.shape[-1] == 16  # half resolution while the global net trains alone
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    glob1, loc1 = snapshot(g.global_net.parameters()), snapshot(g.enhancers.parameters())
    assert changed(glob0, glob1) and not changed(loc0, loc1)
    trainer.step = 1  # the enhancer joins; the global net stays fixed for fix_global_steps
    assert trainer.schedule.stage(trainer.step) == "full"
    trainer.train_step(batch)
    assert trainer.last_output.images.shape[-1] == 32
    glob2, loc2 = snapshot(g.global_net.parameters()), snapshot(g.enhancers.parameters())
    assert not changed(glob1, glob2) and changed(loc1, loc2)
    trainer.step = 2  # then everything trains
    trainer.train_step(batch)
    assert changed(glob2, snapshot(g.global_net.parameters()))
    trainer.close()


def test_low_res_steps_render_the_same_network_at_half_size_then_full(tiny_shapes, tmp_path):
    overrides = tiny_overrides(tiny_shapes, tmp_path / "lowres", max_steps=2, checkpoint_every=2,
                               **{"train.low_res_steps": 1, "model.generator.conditioning": "spade",
                                  "model.generator.layout_skips": False, "train.diffaugment": "color,translation"})
    trainer = Trainer(load_config(None, overrides))
    batch = trainer.augment(next(iter(trainer.loader)))
    seen: list[torch.Tensor] = []
    hook = trainer.model.encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    before = [p.detach().clone() for p in trainer.model.generator.parameters()]
    assert trainer.schedule.size(trainer.step) == 16
    trainer.train_step(batch)
    assert trainer.last_output.images.shape[-2:] == (16, 16)
    assert trainer.last_output.layout.tensor().shape[-2:] == (16, 16)
    # the encoder reads the real images shrunk to the step's size, not cropped or padded
    expected = torch.nn.functional.interpolate(batch.images, size=(16, 16), mode="bilinear", align_corners=False,
                                               antialias=True)
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.generator.parameters()))
    trainer.step = 1
    assert trainer.schedule.size(trainer.step) == 32
    trainer.train_step(batch)
    assert trainer.last_output.images.shape[-2:] == (32, 32) and seen[-1].shape[-1] == 32
    hook.remove()
    trainer.close()


def test_low_res_steps_refuse_a_half_size_the_generator_cannot_take(tiny_shapes, tmp_path):
    # 32 px with 5 downsamplings: the full size is a multiple of 32, half of it (16) is not
    overrides = tiny_overrides(tiny_shapes, tmp_path / "bad", **{"train.low_res_steps": 5,
                                                                  "model.generator.n_downsample": 5})
    with pytest.raises(ConfigError, match=r"train.low_res_steps=5.*\(16\).*32"):
        Trainer(load_config(None, overrides))
