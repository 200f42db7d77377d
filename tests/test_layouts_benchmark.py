"""benchmarks/layouts.py on a few tiny Shapes val graphs: the report's figures, protocol, machine and rows."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO, TINY_MODEL

from layout2img import SceneGraphToImage

sys.path.insert(0, str(REPO / "benchmarks"))
import layouts  # noqa: E402  (benchmarks/layouts.py)
import machine  # noqa: E402  (benchmarks/machine.py)


@pytest.fixture
def quiet(monkeypatch):
    """The guard without its one-second sample of other processes' CPU use."""
    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 0.0)


def checkpoint(tmp_path, predictor: str):
    torch.manual_seed(0)
    model = SceneGraphToImage(**{**TINY_MODEL, "layout": {**TINY_MODEL["layout"], "predictor": predictor}})
    return model.save_pretrained(tmp_path / predictor)


def test_dry_run_reports_every_figure_for_sampled_and_refined_layouts(tiny_shapes, tmp_path, capsys, quiet):
    out = tmp_path / "layouts.json"
    args = ["--checkpoint", checkpoint(tmp_path, "sampler"), "--data", tiny_shapes, "--max-images", 3, "--seeds", 2,
            "--batch-size", 2, "--allow-busy", "--out", out]
    assert layouts.main([str(a) for a in args]) == 0
    r = json.loads(out.read_text())
    assert r["num_images"] == 3 and r["protocol"]["seeds"] == 2 and r["protocol"]["predictor"] == "sampler"
    assert r["machine"]["guard"]["max_load"] == machine.DEFAULT_MAX_LOAD and r["machine"]["cpu"]
    sampled, refined = r["results"]["sampled"], r["results"]["refined"]
    assert sampled["num_layouts"] == refined["num_layouts"] == 6
    assert refined["relation_satisfaction"] == 1.0 and sampled["relation_satisfaction"] < 1.0
    assert sampled["relation_satisfaction_real"] == 1.0 and len(sampled["relation_satisfaction_per_seed"]) == 2
    for res in (sampled, refined):
        assert 0 <= res["centre_tv"] <= 1 and 0 <= res["size_tv"] <= 1 and 0 <= res["seed_box_iou"] < 1
        assert res["thing_pairwise_iou_real"] >= 0 and res["thing_pairwise_iou"] >= 0
        assert 0 <= res["box_iou_vs_gt"] <= 1 and res["stuff_mean_y"]
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| sampler")]
    assert len(rows) == 2 and rows[1].startswith("| sampler + refine (max thing IoU 0.3) | val 0-2 x 2 | 100.0 %")
    assert all(ln.count("|") == layouts.TABLE_HEADER.splitlines()[0].count("|") for ln in rows)


def test_a_regression_is_drawn_once_and_bad_arguments_are_one_line(tiny_shapes, tmp_path, capsys, quiet):
    ckpt = checkpoint(tmp_path, "regression")
    assert layouts.main(["--checkpoint", str(ckpt), "--data", str(tiny_shapes), "--max-images", "2",
                         "--allow-busy"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n| predictor")[0])
    assert report["protocol"]["seeds"] == 1 and report["results"]["sampled"]["num_layouts"] == 2
    assert layouts.main(["--checkpoint", str(ckpt), "--data", str(tiny_shapes), "--seeds", "0", "--allow-busy"]) == 2
    assert "--seeds" in capsys.readouterr().err
