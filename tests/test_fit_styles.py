"""`layout2img fit-styles`: clusters fitted on the train split and saved (in place, keeping a training
checkpoint's state, or to --out), its one-line errors; and benchmarks/colour_distribution.py's run."""
import json
import shutil
import sys

import pytest
import torch

from conftest import REPO, TINY_MODEL
from layout2img import SceneGraphToImage
from layout2img.cli import main


@pytest.fixture
def run_copy(tiny_checkpoint, tmp_path):
    """A copy of the tiny training run (config.yaml, checkpoints/step_*, the `latest` link)."""
    return shutil.copytree(tiny_checkpoint.parent.parent, tmp_path / "run", symlinks=True)


def _unfitted(model):
    return model.style_clusters is not None and not model.style_clusters.fitted


def test_fit_in_place_keeps_the_training_state_and_the_latest_link(run_copy, capsys):
    latest = run_copy / "checkpoints" / "latest"
    step = latest.resolve()
    before = {p.name: p.read_bytes() for p in step.iterdir() if p.name.startswith("training_state")}
    assert len(before) == 2 and _unfitted(SceneGraphToImage.from_pretrained(step))

    assert main(["fit-styles", "--checkpoint", str(run_copy), "--device", "cpu", "--max-images", "6"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "of 6 train images" in out[0] and out[0].endswith(str(step))
    assert latest.is_symlink() and latest.resolve() == step  # the link still points at the step folder
    assert {p.name: p.read_bytes() for p in step.iterdir() if p.name.startswith("training_state")} == before
    model = SceneGraphToImage.from_pretrained(latest)
    clusters = model.style_clusters
    assert clusters.fitted and model.metadata["training_step"] == 2  # the old metadata kept
    fit = model.metadata["style_clusters"]
    assert fit["images"] == 6 and fit["k"] == clusters.k and fit["classes"] >= 3
    present = clusters.counts > 0
    assert int(present.sum()) == fit["classes"] and int(clusters.counts.max()) <= clusters.k
    assert not present[0]  # __image__ is never clustered
    # the codes the clusters give are their centres (not N(0, I) draws)
    circle = model.vocab.object_index("circle")
    codes = clusters.sample(torch.full((50,), circle), torch.Generator().manual_seed(0))
    centres = clusters.centres[circle, : int(clusters.counts[circle])]
    assert torch.cdist(codes, centres, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() < 1e-6


def test_fit_to_out_matches_in_place_and_is_deterministic(run_copy, tmp_path):
    args = ["fit-styles", "--checkpoint", str(run_copy / "checkpoints" / "latest"), "--device", "cpu", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--batch-size", "5"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    a, b = (SceneGraphToImage.from_pretrained(tmp_path / n).style_clusters for n in ("a", "b"))
    assert torch.equal(a.counts, b.counts) and torch.allclose(a.centres, b.centres, atol=1e-5)
    assert main(args) == 0  # in place, the same seed: the same clusters
    c = SceneGraphToImage.from_pretrained(run_copy / "checkpoints" / "latest").style_clusters
    assert torch.allclose(a.centres, c.centres, atol=1e-5)


def test_fit_styles_errors_are_one_line(run_copy, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path)], f"{tmp_path}: not a checkpoint folder"),
        (["--checkpoint", str(run_copy), "--max-images", "0"], "--max-images must be a positive integer"),
        (["--checkpoint", str(run_copy), "--out", str(run_copy)], "exists and is not a checkpoint folder"),
        (["--checkpoint", str(run_copy), "data.image_size=64"], "the dataset makes 64 px images, the checkpoint 32"),
    ]
    flat = SceneGraphToImage(**{**TINY_MODEL, "style_dim": 0}).save_pretrained(tmp_path / "flat")
    cases.append((["--checkpoint", str(flat), "--config", str(run_copy / "config.yaml")],
                  f"{flat}: this model has no style codes"))
    for args, words in cases:
        assert main(["fit-styles", "--device", "cpu", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, (args, err)
    assert _unfitted(SceneGraphToImage.from_pretrained(run_copy / "checkpoints" / "latest"))  # nothing written


# -- benchmarks/colour_distribution.py ----------------------------------------------------------------
def test_colour_distribution_benchmark_runs_and_reports(tiny_styled_checkpoint, tiny_checkpoint, tmp_path, capsys,
                                                        monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import colour_distribution  # noqa: PLC0415  (benchmarks/colour_distribution.py)
    import machine  # noqa: PLC0415

    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 0.0)
    config = tiny_checkpoint.parent.parent / "config.yaml"
    out = tmp_path / "cd.json"
    assert colour_distribution.main(["--checkpoint", str(tiny_styled_checkpoint), "--config", str(config),
                                     "--max-images", "4", "--batch-size", "3", "--min-pixels", "1",
                                     "--allow-busy", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["num_images"] == 4 and r["protocol"]["max_images"] == 4 and r["machine"]["cpu"]
    assert r["real"]["objects"] >= 4 and r["real"]["judge_accuracy_on_real"] > 0.5  # the judge sees real colours
    for setting in ("cluster", "sample"):
        res = r["results"][setting]
        judged = sum(sum(h[setting].values()) for h in r["histograms"].values())
        assert res["objects"] == judged == r["real"]["objects"]  # GT masks: the same things are judged
        known = [v for v in res["tv_per_class"].values() if v is not None]
        assert 0 <= res["mean_tv"] <= 1 and res["mean_tv"] == pytest.approx(sum(known) / len(known))
    name, h = next((n, h) for n, h in r["histograms"].items() if sum(h["real"].values()))  # a judged class
    p = {c: v / sum(h["real"].values()) for c, v in h["real"].items()}
    q = {c: v / sum(h["cluster"].values()) for c, v in h["cluster"].items()}
    assert r["results"]["cluster"]["tv_per_class"][name] == pytest.approx(0.5 * sum(abs(p[c] - q[c]) for c in p))
    printed = capsys.readouterr().out
    assert len([ln for ln in printed.splitlines() if ln.startswith("| colour distribution, --style")]) == 2
    assert len([ln for ln in printed.splitlines() if ln.startswith("| circle |")]) == 1


def test_colour_distribution_needs_fitted_clusters(tiny_checkpoint, capsys, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import colour_distribution  # noqa: PLC0415
    import machine  # noqa: PLC0415

    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 0.0)
    model = SceneGraphToImage.from_pretrained(tiny_checkpoint)
    if not _unfitted(model):
        pytest.skip("the tiny checkpoint's training fitted its clusters")
    assert colour_distribution.main(["--checkpoint", str(tiny_checkpoint), "--max-images", "2", "--allow-busy"]) == 2
    assert "run `layout2img fit-styles" in capsys.readouterr().err
