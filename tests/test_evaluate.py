"""`layout2img evaluate` end to end on a tiny checkpoint, and its protocol, skip and error rules."""
import json
import math
import os

import numpy as np
import pytest
import torch

from layout2img.cli import main
from layout2img.config import load_config
from layout2img.errors import CheckpointError
from layout2img.metrics.report import parse_metrics
from layout2img.metrics import fid as fidm
from layout2img.training.classifier import train_classifier
from layout2img.training.runs import resolve_checkpoint

PROTOCOL_FIELDS = {"dataset", "split", "num_layouts", "image_ids", "image_ids_sha1", "resolution",
                   "samples_per_layout", "num_real_images", "num_generated_images", "layout_source", "style_source",
                   "seed", "feature_extractor", "fid_definition", "checkpoint", "training_step", "config"}


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoint, tmp_path_factory):
    """The session's 2-step checkpoint (its run folder) and a 3-step classifier: what matters is the wiring."""
    run = tiny_checkpoint.parent.parent
    clf = tmp_path_factory.mktemp("eval") / "clf"
    train_classifier(load_config(run / "config.yaml"), clf, steps=3, batch_size=4, crop_size=16, width=4,
                     device="cpu", progress=False, log=lambda s: None)
    return {"run": run, "clf": clf}


def _all_finite(obj):
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    return True


def test_evaluate_end_to_end_on_a_tiny_checkpoint(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval" / "report.json"
    args = ["evaluate", "--checkpoint", str(tiny_run["run"] / "checkpoints" / "latest"), "--out", str(out),
            "--max-images", "4", "--samples-per-layout", "2", "--batch-size", "3", "--device", "cpu",
            "--metrics", "fid,kid,object-acc,layout,diversity", "--classifier", str(tiny_run["clf"])]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    report = json.loads(out.read_text())
    assert set(report) >= {"protocol", "metrics", "skipped", "layout2img_version", "created", "machine"}
    p = report["protocol"]
    assert PROTOCOL_FIELDS <= set(p)
    assert (p["dataset"], p["split"], p["num_layouts"], p["resolution"], p["samples_per_layout"]) == \
        ("shapes", "val", 4, 32, 2)
    assert (p["num_real_images"], p["num_generated_images"], p["layout_source"], p["seed"]) == (4, 8, "gt", 0)
    assert len(p["image_ids"]) == 4 and p["training_step"] == 2 and p["config"].endswith("config.yaml")
    assert p["feature_extractor"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

    m = report["metrics"]
    assert list(m) == ["fid", "kid", "object-acc", "layout", "diversity"] and report["skipped"] == {}
    assert _all_finite(m)
    assert m["fid"]["value"] > 0 and "singular" in m["fid"]["warning"]
    assert m["kid"]["subset_size"] == 4 and m["kid"]["std"] >= 0
    acc = m["object-acc"]
    assert 0 <= acc["generated"]["top1"] <= 1 and 0 <= acc["real"]["top1"] <= 1
    assert acc["real"]["num_objects"] * 2 == acc["generated"]["num_objects"] > 0
    lay = m["layout"]
    assert 0 <= lay["box_iou"] <= 1 and lay["recall@0.3"] >= lay["recall@0.5"]
    assert lay["relation_satisfaction_gt"] == 1.0  # the dataset's triples obey the rules that made them
    assert 0 <= lay["mask_iou"] <= 1 and lay["num_objects"] == acc["real"]["num_objects"]
    assert m["diversity"]["measure"] in ("inception-feature-distance", "lpips-alex") and m["diversity"]["value"] > 0

    images = out.parent / "report_images"
    assert sorted(f.name for f in (images / "real").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert len(list((images / "fake").iterdir())) == 8


class TinyFeatures:
    """Stands in for the Inception (48-d features: the image averaged to 4x4) to keep tests fast."""

    def __init__(self, path=None, device="cpu", batch_size=32):
        self.has_logits = False
        self.sha1 = "stand-in"

    def protocol(self):
        return {"name": "tiny-stand-in", "sha1": self.sha1}

    def folder(self, folder, progress=False, cache_dir=None):
        files = fidm.list_images(folder)
        x = torch.stack([fidm.read_image_uint8(f).float() for f in files])
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


def _evaluate(tiny_run, out, *extra):
    return main(["evaluate", "--checkpoint", str(tiny_run["run"]), "--out", str(out), "--max-images", "3",
                 "--device", "cpu", *extra])


def test_default_metrics_report_what_cannot_run_with_the_reason(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(fidm, "InceptionFeatureExtractor", TinyFeatures)
    assert _evaluate(tiny_run, tmp_path / "r.json") == 0  # a run folder works: its checkpoints/latest
    report = json.loads((tmp_path / "r.json").read_text())
    skipped = report["skipped"]
    assert set(skipped) == {"is", "clip", "object-acc", "diversity"}
    assert "1008" in skipped["is"] and skipped["clip"] == "model has no text encoder"
    assert "train-classifier" in skipped["object-acc"] and "samples-per-layout" in skipped["diversity"]
    assert report["metrics"]["is"] == {"skipped": skipped["is"]}
    assert np.isfinite(report["metrics"]["fid"]["value"]) and "mean" in report["metrics"]["kid"]
    assert report["protocol"]["real_feature_cache"] == str(fidm.default_feature_cache())
    assert _evaluate(tiny_run, tmp_path / "n.json", "--no-feature-cache") == 0
    assert json.loads((tmp_path / "n.json").read_text())["protocol"]["real_feature_cache"] is None


def test_same_seed_same_pixels_and_pred_layouts(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(fidm, "InceptionFeatureExtractor", TinyFeatures)
    runs = {}
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"]), ("p", ["--layout", "pred", "--no-refine"]),
                        ("r", ["--layout", "pred"])):
        assert _evaluate(tiny_run, tmp_path / f"{name}.json", "--metrics", "layout", *extra) == 0
        runs[name] = [f.read_bytes() for f in sorted((tmp_path / f"{name}_images" / "fake").iterdir())]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"] and runs["a"] != runs["p"]
    p = json.loads((tmp_path / "p.json").read_text())["protocol"]
    assert p["layout_source"] == "pred" and p["keep_known_boxes"] is False and p["feature_extractor"] is None
    # predicted layouts are refined as generate refines them (refine_steps > 0) unless --no-refine
    assert p["refine_layout"] is False and json.loads((tmp_path / "r.json").read_text())["protocol"]["refine_layout"]
    assert json.loads((tmp_path / "a.json").read_text())["protocol"]["refine_layout"] is False


def test_a_second_evaluation_of_the_same_report_is_refused_while_the_first_runs(tiny_run, tmp_path, capsys):
    (tmp_path / "r.json.lock").write_text(str(os.getppid()))  # a live process holds it
    assert _evaluate(tiny_run, tmp_path / "r.json", "--metrics", "layout") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "is writing it now" in err[-1] and str(tmp_path / "r.json") in err[-1]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r_images").exists()
    assert (tmp_path / "r.json.lock").exists()  # not removed: it is the other writer's


@pytest.mark.parametrize("metrics, words", [
    ("clip", "metric 'clip' cannot run: model has no text encoder"),
    ("is", "metric 'is' cannot run: the FID Inception file"),
    ("object-acc", "metric 'object-acc' cannot run: no object classifier given"),
    ("fid,diversity", "metric 'diversity' cannot run: needs --samples-per-layout of 2 or more"),
    ("fid,kdi", "unknown metric 'kdi'; did you mean 'kid'?"),
])
def test_a_requested_metric_that_cannot_run_exits_2_before_generating(tiny_run, tmp_path, capsys, metrics, words):
    assert _evaluate(tiny_run, tmp_path / "r.json", "--metrics", metrics) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and words in err[-1]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r_images").exists()


def test_checkpoint_and_metric_arguments_are_checked(tiny_run, tmp_path):
    assert resolve_checkpoint(tiny_run["run"]).name == "step_000002"
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        resolve_checkpoint(tmp_path)
    assert parse_metrics(None) is None and parse_metrics("all") is None
    assert parse_metrics("fid, kid,fid") == ["fid", "kid"]


def test_clip_score_with_a_given_clip_folder(tiny_run, tmp_path):
    from layout2img.models.text import TextEncoder

    tiny_clip = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
                 "text_cfg": {"context_length": 16, "width": 16, "heads": 2, "layers": 1}}
    TextEncoder.from_config(tiny_clip).save_pretrained(tmp_path / "clip")
    assert _evaluate(tiny_run, tmp_path / "r.json", "--metrics", "clip", "--clip", str(tmp_path / "clip")) == 0
    clip = json.loads((tmp_path / "r.json").read_text())["metrics"]["clip"]
    assert clip["encoder"] == str(tmp_path / "clip")
    assert 0 <= clip["generated"] <= 100 and 0 <= clip["real"] <= 100
    assert _evaluate(tiny_run, tmp_path / "r.json", "--metrics", "clip", "--clip", str(tmp_path / "none")) == 2
