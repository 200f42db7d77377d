import os

import pytest
import torch

from layout2img.errors import CheckpointError
from layout2img.training import checkpoint as ckpt
from layout2img.training.distributed import ResumableSampler


def _save_model(folder):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")


def test_flatten_round_trip_keeps_types_int_keys_and_tensors():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"step": 7, "opt": opt.state_dict(), "t": (1, 2.5, None, "x"), "rng": torch.get_rng_state()}
    tensors, skeleton = ckpt.flatten_state(state)
    import json

    back = ckpt.unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["step"] == 7 and back["t"] == (1, 2.5, None, "x")
    assert torch.equal(back["rng"], state["rng"])
    assert set(back["opt"]["state"].keys()) == {0}  # int keys survive JSON
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    opt2.load_state_dict(back["opt"])  # a real optimiser accepts it


def test_flatten_rejects_objects_that_would_need_pickle():
    with pytest.raises(TypeError, match="cannot store object at 'a/b'"):
        ckpt.flatten_state({"a": {"b": object()}})


def test_save_points_latest_and_keeps_last_k(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        ckpt.save_checkpoint(root, step, _save_model, {"step": step, "w": torch.full((2,), float(step))}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_000020", "step_000030"]
    latest = ckpt.latest_checkpoint(root)
    assert latest.name == "step_000030" and os.readlink(root / "latest") == "step_000030"
    state = ckpt.load_training_state(latest)
    assert state["step"] == 30 and torch.equal(state["w"], torch.full((2,), 30.0))


def test_half_written_checkpoint_never_breaks_the_next_run(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 10, _save_model, {"step": 10})
    # a run killed mid-write leaves a temporary folder and maybe a dangling link
    (root / ".step_000020.abc.tmp").mkdir()
    (root / ".step_000020.abc.tmp" / "model.safetensors").write_bytes(b"partial")
    os.replace(root / "latest", root / "old_latest")
    os.symlink("step_000020", root / "latest")  # points at a folder that never got renamed
    assert ckpt.latest_checkpoint(root).name == "step_000010"
    ckpt.remove_stale_temporaries(root)
    assert not (root / ".step_000020.abc.tmp").exists()


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path):
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 10, _save_model, {"step": 10})

    def broken(folder):
        (folder / "model.safetensors").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.save_checkpoint(root, 20, broken, {"step": 20})
    assert [p.name for p in root.iterdir() if not p.name.startswith("latest")] == ["step_000010"]
    assert ckpt.latest_checkpoint(root).name == "step_000010"


def test_unreadable_training_state_is_a_checkpoint_error(tmp_path):
    root = tmp_path / "checkpoints"
    folder = ckpt.save_checkpoint(root, 1, _save_model, {"step": 1, "w": torch.ones(1)})
    (folder / ckpt.STATE_TENSORS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        ckpt.load_training_state(folder)
    with pytest.raises(CheckpointError, match="missing training_state.json"):
        ckpt.load_training_state(tmp_path)


def test_resumable_sampler_resumes_mid_epoch_and_shards():
    s = ResumableSampler(10, seed=3)
    s.set_position(epoch=2)
    full = list(s)
    s.set_position(epoch=2, start=4)
    assert list(s) == full[4:]
    s.set_position(epoch=3)
    assert list(s) != full and sorted(list(s)) == list(range(10))
    shards = []
    for rank in range(3):
        r = ResumableSampler(10, seed=3, rank=rank, world_size=3)
        r.set_position(epoch=2)
        shards.append(list(r))
    assert all(len(x) == 4 for x in shards)
    assert set(sum(shards, [])) == set(range(10))  # every sample seen, 2 padded repeats
