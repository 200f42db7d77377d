"""``layout2img prepare coco-stuff`` (layout2img/data/prepare_coco.py) offline: the official zips'
layout, served from file:// URLs, downloaded, extracted and checked; errors are one line."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from layout2img.cli import main as cli_main
from layout2img.data import prepare_coco


def _zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.as_uri()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """The four zips of ZIPS with the members the real ones have (val only), as file:// URLs."""
    src = tmp_path / "mirror"
    src.mkdir()
    j = json.dumps({"images": [], "annotations": [], "categories": []}).encode()
    urls = {
        "annotations": _zip(src / "annotations_trainval2017.zip", {
            "annotations/instances_val2017.json": j, "annotations/captions_val2017.json": j,
            "annotations/person_keypoints_val2017.json": j}),
        "stuff": _zip(src / "stuff_annotations_trainval2017.zip", {
            "annotations/stuff_val2017.json": j, "annotations/deprecated-challenge2017/val-ids.txt": b"139\n"}),
        "val_images": _zip(src / "val2017.zip", {"val2017/000000000139.jpg": b"jpeg", "val2017/": b""}),
        "train_images": (src / "absent.zip").as_uri(),
    }
    monkeypatch.setattr(prepare_coco, "ZIPS", {k: (u, 0.0) for k, u in urls.items()})
    return urls


def test_downloads_extracts_and_a_second_run_fetches_nothing(mirror, tmp_path, capsys, monkeypatch):
    root = tmp_path / "coco"
    assert cli_main(["prepare", "coco-stuff", "--root", str(root), "--splits", "val"]) == 0
    ann = root / "annotations"
    for rel in ("instances_val2017.json", "captions_val2017.json", "stuff_val2017.json",
                "deprecated-challenge2017/val-ids.txt"):
        assert (ann / rel).is_file(), rel
    assert not (ann / "person_keypoints_val2017.json").exists()
    assert (root / "images" / "val2017" / "000000000139.jpg").read_bytes() == b"jpeg"
    assert not (root / "downloads").exists()  # zips deleted, the empty folder too
    assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".part"))]
    capsys.readouterr()
    monkeypatch.setattr(prepare_coco, "ZIPS", {k: ("file:///nonexistent/x.zip", 0.0) for k in mirror})
    assert cli_main(["prepare", "coco-stuff", "--root", str(root), "--splits", "val", "--check"]) == 0
    assert cli_main(["prepare", "coco-stuff", "--root", str(root), "--splits", "val"]) == 0
    assert "MISSING" not in capsys.readouterr().out


def test_keep_zips_and_skip_images(mirror, tmp_path):
    root = tmp_path / "coco"
    argv = ["prepare", "coco-stuff", "--root", str(root), "--splits", "val", "--skip-images", "--keep-zips"]
    assert cli_main(argv) == 0
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [
        "annotations_trainval2017.zip", "stuff_annotations_trainval2017.zip"]
    assert not (root / "images").exists()


def test_check_reports_what_is_missing_with_status_1(tmp_path, capsys):
    assert cli_main(["prepare", "coco-stuff", "--root", str(tmp_path / "empty"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "absent (optional)" in out and "run without --check" in out


def test_errors_are_one_line(mirror, tmp_path, capsys, monkeypatch):
    assert cli_main(["prepare", "coco-stuff", "--root", str(tmp_path / "c"), "--splits", "test"]) == 2
    assert capsys.readouterr().err.strip() == "error: --splits must list train and/or val, got 'test'"
    monkeypatch.setitem(prepare_coco.ZIPS, "annotations", (mirror["train_images"], 0.0))  # not there
    assert cli_main(["prepare", "coco-stuff", "--root", str(tmp_path / "c"), "--splits", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "absent.zip: cannot connect" in err, err


def test_a_download_that_is_not_a_zip_is_named(tmp_path, monkeypatch, capsys):
    page = tmp_path / "page.html"
    page.write_text("<html>moved</html>")
    monkeypatch.setitem(prepare_coco.ZIPS, "annotations", (page.as_uri(), 0.0))
    assert cli_main(["prepare", "coco-stuff", "--root", str(tmp_path / "c"), "--skip-images"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after tqdm's progress bar
    assert err.startswith("error: ") and err.endswith("page.html.part: not a zip file; delete it and run again")
    assert not (tmp_path / "c" / "annotations").exists()
