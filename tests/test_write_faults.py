"""A full disk (or any failed write) ends in one line naming the path, the free space and, for a
checkpoint, what ``latest`` still points to; exit code 1; nothing half-written left behind."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

from conftest import REPO, tiny_overrides
from layout2img import errors
from layout2img.cli import main
from layout2img.errors import WriteError
from layout2img.io import atomic_dir, atomic_save, atomic_write_text
from layout2img.training import checkpoint as ckpt

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


@pytest.fixture
def little_room(monkeypatch):
    """The free space every WriteError reports: 1.5 KiB."""
    monkeypatch.setattr(errors, "free_space", lambda path: 1536)


def _disk_full(*_, **__):
    raise OSError(errno.ENOSPC, FULL)


@pytest.fixture
def full_disk_for_images(monkeypatch, tmp_path):
    """PIL writes half a PNG under tmp_path, then the disk is full."""
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if str(fp).startswith(str(tmp_path)):
            Path(fp).write_bytes(b"\x89PNG half")
            _disk_full()
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- the atomic writers ---------------------------------------------------------------------------------
def test_a_failed_write_names_the_file_and_free_space_and_keeps_the_old_file(tmp_path, monkeypatch, little_room):
    path = tmp_path / "out" / "report.json"
    atomic_write_text(path, "old")
    monkeypatch.setattr(Path, "write_bytes", _disk_full)
    with pytest.raises(WriteError) as err:
        atomic_write_text(path, "new")
    assert str(err.value) == f"{path}: cannot write ({FULL}); 1.5 KiB free on that filesystem"
    assert err.value.errno == errno.ENOSPC and err.value.free == 1536 and err.value.path == str(path)
    monkeypatch.undo()
    assert path.read_text() == "old" and _files(tmp_path / "out") == ["report.json"]  # no temporary left


def test_safetensors_disk_errors_are_write_errors_and_its_other_errors_are_not(tmp_path, little_room):
    def full(path):
        Path(path).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(WriteError) as err:
        atomic_save(tmp_path / "w.safetensors", full)
    assert str(err.value) == f"{tmp_path / 'w.safetensors'}: cannot write ({FULL}); 1.5 KiB free on that filesystem"
    assert err.value.errno == errno.ENOSPC and _files(tmp_path) == []

    def bug(path):  # not about the disk: a bug keeps its own error (and traceback)
        raise SafetensorError("Error while serializing: InvalidTensorView")

    with pytest.raises(SafetensorError):
        atomic_save(tmp_path / "w.safetensors", bug)
    assert _files(tmp_path) == []


def test_a_failed_folder_names_the_file_where_it_would_have_been_and_keeps_the_old_folder(tmp_path, little_room):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as tmp:
        atomic_write_text(tmp / "config.json", "old")

    with pytest.raises(WriteError) as err:
        with atomic_dir(final, overwrite=True) as tmp:
            atomic_write_text(tmp / "config.json", "new")
            with atomic_dir(tmp / "text_encoder") as inner:
                atomic_save(inner / "model.safetensors", _disk_full)
    assert err.value.path == str(final / "text_encoder" / "model.safetensors")
    assert _files(tmp_path) == ["ckpt", "ckpt/config.json"] and (final / "config.json").read_text() == "old"

    def png_straight_into_the_folder(tmp):  # a writer that does not go through atomic_path
        (tmp / "a.png").write_bytes(b"half")
        raise OSError(errno.ENOSPC, FULL)

    with pytest.raises(WriteError, match=rf"^{final}: cannot write \({FULL}\); 1.5 KiB free"):
        with atomic_dir(final, overwrite=True) as tmp:
            png_straight_into_the_folder(tmp)
    # an OSError that is not the storage refusing bytes (e.g. reading an input) is not called a write error
    with pytest.raises(FileNotFoundError):
        with atomic_dir(final, overwrite=True):
            (tmp_path / "missing input").read_bytes()
    assert _files(tmp_path) == ["ckpt", "ckpt/config.json"]


def test_a_checkpoint_that_cannot_be_written_says_what_latest_still_points_to(tmp_path, monkeypatch, little_room):
    root = tmp_path / "checkpoints"

    def model(folder):
        atomic_write_text(folder / "model.safetensors", "weights")

    ckpt.save_checkpoint(root, 2, model, {"step": 2, "w": torch.ones(2)})
    monkeypatch.setattr(ckpt, "save_file", lambda *a, **k: _disk_full())
    with pytest.raises(WriteError) as err:
        ckpt.save_checkpoint(root, 4, model, {"step": 4, "w": torch.ones(2)})
    assert str(err.value) == (f"{root}/step_000004/training_state.safetensors: cannot write ({FULL}); 1.5 KiB free "
                              f"on that filesystem; {root}/latest still points to step_000002 (the run resumes "
                              "from there)")
    assert _files(root) == ["latest", "step_000002", "step_000002/model.safetensors",
                            "step_000002/training_state.json", "step_000002/training_state.safetensors"]
    with pytest.raises(WriteError, match=rf"; no checkpoint in {tmp_path / 'empty'} yet$"):
        ckpt.save_checkpoint(tmp_path / "empty", 2, model, {"w": torch.ones(1)})


# -- through the CLI ---------------------------------------------------------------------------------
def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]


def test_disk_full_at_a_checkpoint_exits_1_in_one_line_and_the_run_resumes(tiny_shapes, tmp_path, monkeypatch,
                                                                            capsys, little_room):
    out = tmp_path / "run"
    args = ["train", *tiny_overrides(tiny_shapes, out, max_steps=6, checkpoint_every=2)]
    real = ckpt.save_file
    calls = []

    def second_fails(tensors, path, *a, **k):  # the step-4 training state meets a full disk
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"half")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckpt, "save_file", second_fails)
    assert main(args) == 1
    root = out / "checkpoints"
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {root}/step_000004/training_state.safetensors: cannot write ({FULL}); 1.5 KiB free on that "
        f"filesystem; {root}/latest still points to step_000002 (the run resumes from there)"]
    assert os.readlink(root / "latest") == "step_000002"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000002"]  # no temporaries, no step 4

    monkeypatch.setattr(ckpt, "save_file", real)
    assert main(args) == 0
    assert f"resuming from {root / 'step_000002'}" in capsys.readouterr().out
    assert os.readlink(root / "latest") == "step_000006"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_000002", "step_000004", "step_000006"]


def test_disk_full_at_a_sample_grid_exits_1_in_one_line(tiny_shapes, tmp_path, capsys, little_room,
                                                        full_disk_for_images):
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(tiny_shapes, out, max_steps=2, checkpoint_every=2)]) == 1
    assert _error_lines(capsys.readouterr().err) == [
        f"error: {out}/samples/step_000002.png: cannot write ({FULL}); 1.5 KiB free on that filesystem; "
        f"no checkpoint in {out / 'checkpoints'} yet"]
    assert not (out / "samples").exists() or _files(out / "samples") == []


def test_disk_full_while_generating_exits_1_and_writes_nothing(tiny_checkpoint, tmp_path, capsys, little_room,
                                                                full_disk_for_images):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps({"objects": ["circle", "sky"], "relationships": [[0, "below", 1]]}))
    out = tmp_path / "images"
    assert main(["generate", str(scene), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {out}/graph_000_sample_0.png: cannot write ({FULL}); 1.5 KiB free on that filesystem"]
    assert _files(out) == []


def test_disk_full_while_evaluating_exits_1_and_leaves_no_images_folder(tiny_checkpoint, tmp_path, capsys,
                                                                         little_room, full_disk_for_images):
    report = tmp_path / "r.json"
    rc = main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--out", str(report), "--max-images", "3",
               "--device", "cpu", "--metrics", "layout"])
    assert rc == 1
    lines = _error_lines(capsys.readouterr().err)
    assert lines == [f"error: {tmp_path}/r_images/real/000000.png: cannot write ({FULL}); 1.5 KiB free on that "
                     "filesystem"]
    assert _files(tmp_path) == []  # no report, no images folder, no temporaries


# -- a real full filesystem ---------------------------------------------------------------------------
def _tmpfs_command() -> list[str] | None:
    """How to run a shell in a private mount namespace that may mount a tmpfs, or None."""
    if shutil.which("unshare") is None:
        return None
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


SCRIPT = """
set -u
mount -t tmpfs -o size="$SIZE" tmpfs "$RUN" || exit 77
"$PY" -m layout2img.cli train $ARGS > "$LOG/first.out" 2> "$LOG/first.err"; echo $? > "$LOG/first.rc"
ls -a "$RUN/run/checkpoints" > "$LOG/after_failure"
readlink "$RUN/run/checkpoints/latest" > "$LOG/latest_after_failure"
mount -o remount,size=64m "$RUN"  # room again: the same command resumes and finishes
"$PY" -m layout2img.cli train $ARGS > "$LOG/second.out" 2>&1; echo $? > "$LOG/second.rc"
readlink "$RUN/run/checkpoints/latest" > "$LOG/latest_at_end"
"""


@pytest.mark.slow
def test_a_real_full_filesystem_mid_run_then_resume(tiny_shapes, tiny_checkpoint, tmp_path):
    command = _tmpfs_command()
    mnt, log = tmp_path / "small", tmp_path / "log"
    mnt.mkdir()
    log.mkdir()
    probe = command and subprocess.run([*command, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mnt}"],
                                       capture_output=True, text=True)
    if not probe or probe.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {probe.stderr.strip() if probe else 'no unshare'}")
    # room for one checkpoint of the tiny model (the session's is the same model) and a half: the one
    # at step 2 fits, the one at step 4 does not
    size_k = sum(f.stat().st_size for f in tiny_checkpoint.resolve().iterdir()) * 3 // 2 // 1024 + 100
    args = tiny_overrides(tiny_shapes, mnt / "run", max_steps=6, checkpoint_every=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", RUN=str(mnt), LOG=str(log), PY=sys.executable, ARGS=" ".join(args),
               SIZE=f"{size_k}k")
    res = subprocess.run([*command, "sh", "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr

    def read(name: str) -> str:
        return (log / name).read_text()

    assert read("first.rc").strip() == "1", read("first.err")[-2000:]
    [line] = _error_lines(read("first.err"))
    root = mnt / "run" / "checkpoints"
    assert line.startswith(f"error: {root}/step_000004/") and f": cannot write ({FULL}); " in line
    number, unit = re.search(r"\); ([\d.]+) (B|KiB|MiB) free on that filesystem; ", line).groups()
    assert 0 <= float(number) * {"B": 1, "KiB": 1024, "MiB": 1024**2}[unit] < size_k * 1024  # the tmpfs's own figure
    assert line.endswith(f"; {root}/latest still points to step_000002 (the run resumes from there)")
    assert read("after_failure").split() == [".", "..", "latest", "step_000002"]  # no half-written folder
    assert read("latest_after_failure").strip() == "step_000002"
    assert read("second.rc").strip() == "0", read("second.out")[-2000:]
    assert f"resuming from {root / 'step_000002'}" in read("second.out")
    assert read("latest_at_end").strip() == "step_000006"
