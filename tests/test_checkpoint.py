import os

import pytest
import torch

from layout2img.devices import resolve_device
from layout2img.errors import CheckpointError, ConfigError
from layout2img.io import PretrainedMixin, read_json
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


# -- the one checkpoint-folder format and the one device resolver ------------------------------------
class _Toy(PretrainedMixin, torch.nn.Module):
    """The smallest adopter of PretrainedMixin: a linear layer and a word list in an extra file."""

    MODEL_CLASS = "Toy"
    FORMAT_VERSION = 2
    FOLDER_KIND = "toy folder"
    EXTRA_FILES = ("words.json",)

    def __init__(self, width: int, words=("a",)):
        super().__init__()
        self.width, self.words, self.metadata = width, list(words), {}
        self.lin = torch.nn.Linear(width, 2)

    def pretrained_config(self):
        return {"width": self.width}

    def save_extra_files(self, folder):
        import json

        (folder / "words.json").write_text(json.dumps(self.words))

    @classmethod
    def from_pretrained_config(cls, config, folder):
        return cls(config["width"], read_json(folder / "words.json", "word list", CheckpointError))


def test_pretrained_mixin_round_trip_and_errors(tmp_path):
    import json

    torch.manual_seed(0)
    toy = _Toy(3, ["x", "y"])
    folder = toy.save_pretrained(tmp_path / "toy", metadata={"step": 4})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "words.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_class"] == "Toy" and cfg["format_version"] == 2 and cfg["width"] == 3
    loaded = _Toy.from_pretrained(folder)
    assert not loaded.training and loaded.words == ["x", "y"] and loaded.metadata == {"step": 4}
    assert torch.equal(loaded.lin.weight, toy.lin.weight)
    # saving over a folder replaces it whole: no stale file survives
    (folder / "stale.txt").write_text("old")
    _Toy(3).save_pretrained(folder)
    assert not (folder / "stale.txt").exists()
    # a folder without format_version is version 1, which this class still reads
    del cfg["format_version"]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert _Toy.from_pretrained(folder).width == 3
    for change, message in (({"format_version": 7}, r"config.json: format_version 7 is newer .*Toy folders up to "
                                                      r"version 2"),
                            ({"model_class": "Other"}, r"not a toy folder: config.json's model_class is 'Other', "
                                                       r"expected 'Toy'"),
                            ({"width": 5}, r"model.safetensors: weights do not match config.json: shape mismatch")):
        (folder / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(CheckpointError, match=message):
            _Toy.from_pretrained(folder)
    (folder / "words.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete toy folder: missing words.json"):
        _Toy.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="toy folder not found"):
        _Toy.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="metadata is not JSON-serialisable"):
        _Toy(3).save_pretrained(tmp_path / "bad", metadata={"x": object()})
    assert not (tmp_path / "bad").exists()


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device 'cuda:1': no CUDA GPU is available \(use cpu or auto\)"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match=r"device 'gpu': not a device; expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"this machine has 1 CUDA GPU\(s\) \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:3")
