"""Benchmark hygiene: the quiet-machine guard, the machine record, repeats summarised as median (spread)
over N, and every benchmark script's dry run writing the machine, the protocol and its figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
import torch

from conftest import REPO, TINY_CLIP, TINY_MODEL

sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402  (benchmarks/machine.py)
import timing  # noqa: E402  (benchmarks/timing.py)


@pytest.fixture
def no_cpu_sampling(monkeypatch):
    """The guard without its one-second sample of other processes' CPU use."""
    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 0.0)


def _load(monkeypatch, *values):
    """os.getloadavg returns the given 1-minute loads in turn (the last one from then on)."""
    seq = list(values)
    monkeypatch.setattr(os, "getloadavg", lambda: (seq.pop(0) if len(seq) > 1 else seq[0], 0.0, 0.0))


# -- repeats -------------------------------------------------------------------------------------------
def test_repeat_times_each_call_after_the_warmups():
    # warm-up 5 s, then calls of 0.25, 0.125, 0.5, 0.375 s (exact in binary)
    ticks = iter([0.0, 5.0,  10.0, 10.25,  11.0, 11.125,  12.0, 12.5,  13.0, 13.375])
    calls, syncs = [], []
    t = timing.repeat(lambda: calls.append(1), runs=4, warmup=1, sync=lambda: syncs.append(1),
                      clock=lambda: next(ticks))
    assert len(calls) == 5 and len(syncs) == 10
    assert t.first_s == 5.0 and t.samples == (0.25, 0.125, 0.5, 0.375)
    s = t.summary("ms", 1000.0)
    assert s["median"] == 312.5 and (s["min"], s["max"]) == (125.0, 500.0)
    assert (s["q1"], s["q3"]) == (218.75, 406.25)
    assert s["spread"] == pytest.approx(187.5 / 312.5) and s["range"] == pytest.approx(375 / 312.5)
    assert (s["n"], s["warmup"], s["unit"]) == (4, 1, "ms")
    r = t.rate(8, "img/s")  # 8 images a call: 32, 64, 16, 21.3 img/s
    assert r["median"] == pytest.approx((64 / 3 + 32) / 2) and (r["min"], r["max"]) == (16.0, 64.0)
    assert timing.format_figure(s) == "312 ms (IQR 60.0 %, 125–500) over 4"


def test_flops_of_a_known_convolution_and_matmul_counted_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 16, 16)
    # 2 FLOPs per multiply-add: 2 * N * C_out * H * W * C_in * k * k
    assert timing.count_flops(lambda: conv(x)) == (2 * 2 * 8 * 16 * 16 * 3 * 3 * 3, None)
    linear = torch.nn.Linear(4, 5, bias=False)
    y = torch.randn(3, 4, requires_grad=True)
    # forward 2*3*4*5, backward the same twice (grad of the input and of the weight)
    assert timing.count_flops(lambda: linear(y).sum().backward()) == (3 * 2 * 3 * 4 * 5, None)
    flops, note = timing.count_flops(lambda: 1 / 0)
    assert flops is None and note == "FLOPs not counted (ZeroDivisionError: division by zero)"


def test_repeat_and_summaries_reject_empty_series():
    with pytest.raises(ValueError, match="runs must be >= 1"):
        timing.repeat(lambda: None, runs=0)
    with pytest.raises(ValueError, match="no timed runs"):
        timing.summarize([], "s")
    one = timing.summarize([2.0], "s")
    assert one["spread"] == 0.0 and timing.format_figure(one) == "2 s (one run)"


def test_figure_row_is_one_markdown_row_with_command_and_machine():
    s = timing.summarize([10.0, 12.0, 11.0], "img/s")
    row = timing.figure_row("train img/s", s, "python benchmarks/speed.py", "CPU X, torch 2")
    assert row == ("| train img/s | 11.0 img/s (IQR 9.1 %, 10.0–12.0) over 3 | `python benchmarks/speed.py` "
                   "| CPU X, torch 2 |")
    assert row.count("|") == timing.FIGURE_HEADER.splitlines()[0].count("|")


# -- the guard ------------------------------------------------------------------------------------------
def test_guard_refuses_a_busy_machine_and_names_the_load(monkeypatch, no_cpu_sampling):
    _load(monkeypatch, 2.5)
    with pytest.raises(machine.MachineBusy, match=r"1-minute load average 2\.50 above 0\.6.*--allow-busy"):
        machine.check_quiet()
    stamped = machine.check_quiet(allow_busy=True)
    assert stamped["busy"] == "busy: load 2.50, others 0.00 CPUs" and stamped["load_1min"] == 2.5
    assert machine.check_quiet(max_load=3.0)["busy"] is None


def test_guard_counts_other_processes_cpu_use(monkeypatch):
    _load(monkeypatch, 0.1)
    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 1.4)
    with pytest.raises(machine.MachineBusy, match=r"other processes keep 1\.40 CPUs busy"):
        machine.check_quiet()
    monkeypatch.setattr(machine, "others_cpu_use", lambda seconds=1.0: 0.05)
    record = machine.check_quiet()
    assert record == {"load_1min": 0.1, "others_cpus": 0.05, "max_load": machine.DEFAULT_MAX_LOAD, "busy": None}


def test_guard_waits_for_the_load_to_settle(monkeypatch, no_cpu_sampling):
    _load(monkeypatch, 1.5, 1.0, 0.3)
    slept = []
    monkeypatch.setattr(machine.time, "sleep", slept.append)
    assert machine.check_quiet(wait_seconds=60)["load_1min"] == 0.3
    assert len(slept) == 2 and all(0 < s <= 5 for s in slept)


def test_guard_from_args_exits_2_with_one_line(monkeypatch, capsys, no_cpu_sampling):
    import argparse

    parser = argparse.ArgumentParser()
    machine.add_guard_args(parser)
    _load(monkeypatch, 4.0)
    with pytest.raises(SystemExit) as exit_info:
        machine.guard_from_args(parser.parse_args([]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: machine busy: 1-minute load average 4.00") and err.count("\n") == 1
    assert machine.guard_from_args(parser.parse_args(["--allow-busy"]))["busy"].startswith("busy: load 4.00")
    with pytest.raises(machine.MachineBusy, match="--max-load -1"):
        machine.check_quiet(max_load=-1)


def test_others_cpu_use_excludes_this_process():
    with machine.watch_other_processes() as record:
        sum(i * i for i in range(2_000_000))  # this process busy: not counted as others
    assert record["others_cpus"] is None or 0.0 <= record["others_cpus"] <= os.cpu_count()


# -- the machine record -------------------------------------------------------------------------------
def test_machine_record_and_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/speed.py", "--threads", "2"])
    m = machine.machine(guard={"load_1min": 0.2, "others_cpus": 0.0, "max_load": 0.6, "busy": None})
    assert m["cpu"] and set(m["isa"]) <= set(machine.ISA_FLAGS)
    assert m["torch"] == torch.__version__ and m["torch_threads"] == torch.get_num_threads()
    assert m["cpu_count"] == os.cpu_count() and m["command"] == "python benchmarks/speed.py --threads 2"
    assert datetime.fromisoformat(m["date"]).utcoffset().total_seconds() == 0
    line = machine.machine_line(m)
    assert line.startswith(m["cpu"]) and f"torch {torch.__version__}" in line and line.endswith("quiet: load 0.20")
    m["guard"]["busy"] = "busy: load 3.00"
    assert machine.machine_line(m).endswith("busy: load 3.00") and "\n" not in line


# -- the scripts -------------------------------------------------------------------------------------------
def test_speed_dry_run_writes_figures_machine_and_protocol(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "benchmarks/speed.py", "--dry-run", "--allow-busy", "--threads", "2",
                          "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    # --threads reaches the measuring processes past the inherited OMP_NUM_THREADS=1
    assert r["machine"]["command"].endswith("--threads 2 --json " + str(out)) and r["machine"]["torch_threads"] == 2
    assert r["guard"]["max_load"] == machine.DEFAULT_MAX_LOAD and r["protocol"]["dry_run"] is True
    train, infer = r["configs"]["shapes_64"]["train"], r["configs"]["shapes_64"]["infer"]
    assert train["protocol"]["batch"] == 2 and train["protocol"]["image_size"] == 32
    assert train["protocol"]["threads"] == infer["protocol"]["threads"] == 2 and train["protocol"]["steps"] == 3
    assert train["img_per_s"]["n"] == 3 and train["img_per_s"]["unit"] == "img/s"
    assert train["img_per_s"]["min"] <= train["img_per_s"]["median"] <= train["img_per_s"]["max"]
    assert train["notes"] == [] and train["gflops_per_step"] > 0  # counted (count_flops is pinned below)
    steps = train["s_per_step"]
    assert steps["spread"] == pytest.approx((steps["q3"] - steps["q1"]) / steps["median"])
    assert infer["latency_ms"]["n"] == 3 and infer["latency_ms"]["median"] > 0
    assert infer["throughput_img_per_s"]["n"] == 2 and infer["protocol"]["throughput_batch"] == 2
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| shapes_64")]
    assert len(rows) == 5 and all(ln.count("|") == 5 for ln in rows)
    assert any("generate latency, 1 graph, 32 px" in ln and " over 3 |" in ln for ln in rows)


def test_speed_refuses_on_a_busy_machine_before_measuring(monkeypatch, capsys, no_cpu_sampling):
    import speed  # noqa: PLC0415  (benchmarks/speed.py)

    _load(monkeypatch, 3.0)
    monkeypatch.setattr(speed, "_child", lambda *a: pytest.fail("measured on a busy machine"))
    with pytest.raises(SystemExit) as exit_info:
        speed.main(["--dry-run"])
    assert exit_info.value.code == 2 and "machine busy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["--dry-run", "--runs", "0"])
    assert "--runs must be at least 1, got 0" in capsys.readouterr().err


def test_clip_retrieval_writes_machine_and_protocol(tiny_shapes, tmp_path, capsys, no_cpu_sampling):
    import clip_retrieval  # noqa: PLC0415  (benchmarks/clip_retrieval.py)
    from layout2img.models.text import TextEncoder

    torch.manual_seed(0)
    clip = TextEncoder.from_config(TINY_CLIP).save_pretrained(tmp_path / "clip")
    out = tmp_path / "clip.json"
    assert clip_retrieval.main(["--clip", str(clip), "--data", str(tiny_shapes), "--candidates", "4",
                                "--allow-busy", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["num_images"] == 8 and 0 <= r["top1"] <= r["top5"] <= 1
    assert r["protocol"]["num_candidates"] == 4 and r["protocol"]["clip"] == str(clip)
    assert r["machine"]["guard"]["max_load"] == machine.DEFAULT_MAX_LOAD and r["machine"]["isa"] is not None
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| caption retrieval")]
    assert len(rows) == 1 and f"{100 * r['top1']:.1f} %" in rows[0]


def test_caption_conditioning_writes_machine_and_protocol(tiny_shapes, tmp_path, capsys, monkeypatch,
                                                          no_cpu_sampling):
    import caption_conditioning  # noqa: PLC0415  (benchmarks/caption_conditioning.py)
    from layout2img import SceneGraphToImage
    from layout2img.config import load_config
    from layout2img.data.build import build_dataset
    from layout2img.models.text import TextEncoder

    def tiny_val_set(root):  # with the fixture's own build parameters, so it is read, never rebuilt
        cfg = load_config(None, [f"data.root={root}", "data.image_size=32", "data.prepare.num_train=24",
                                 "data.prepare.num_val=8", "data.prepare.size=32"])
        return build_dataset(dict(cfg.data), "val", seed=int(cfg.seed))

    monkeypatch.setattr(caption_conditioning, "val_set", tiny_val_set)

    torch.manual_seed(0)
    clip = TextEncoder.from_config(TINY_CLIP).save_pretrained(tmp_path / "clip")
    model = SceneGraphToImage(**TINY_MODEL, text_dim=24, text_encoder=str(clip))
    with torch.no_grad():  # masks that fill their boxes: an untrained mask head sits at 0.5, which the judge skips
        model.layout_predictor.mask_net[-1].bias.fill_(4.0)
    ckpt = model.save_pretrained(tmp_path / "model")
    out = tmp_path / "cc.json"
    assert caption_conditioning.main(["--checkpoint", str(ckpt), "--data", str(tiny_shapes), "--num-images", "3",
                                      "--min-pixels", "1", "--allow-busy", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["num_scenes"] >= 1 and r["protocol"]["num_images"] == 3 and r["machine"]["cpu"]
    assert all(0 <= v.get("color_accuracy", v.get("follows_text")) <= 1 for v in r["results"].values())
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| caption conditioning")]
    assert len(rows) == len(r["results"]) >= 1


def test_profile_step_lists_the_ops_of_a_training_step():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--dry-run", "--threads", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "aten::convolution_backward" in res.stdout and "Self CPU" in res.stdout
    assert "shapes_64, batch 2, 1 threads:" in res.stdout and "s a profiled step" in res.stdout


def test_sg2im_baseline_dry_run_trains_evaluates_and_times(tiny_shapes, tmp_path):
    from layout2img.models.classifier import ObjectClassifier
    from layout2img.vocab import Vocab

    torch.manual_seed(0)
    vocab = Vocab.shapes()
    clf = ObjectClassifier(vocab.num_objects, crop_size=16, width=4, vocab=vocab).save_pretrained(tmp_path / "clf")
    out = tmp_path / "sg2im"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "benchmarks/sg2im_baseline.py", "--dry-run", "--allow-busy", "--quiet",
                          "--data", str(tiny_shapes), "--classifier", str(clf), "--out", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("model.safetensors", "config.json", "samples.png", "report.json", "speed.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "real").glob("*.png"))) == len(list((out / "fake").glob("*_00.png"))) == 4
    config = json.loads((out / "config.json").read_text())
    t = config["training"]
    assert t["steps"] == 2 and t["skipped_steps"] == 0 and t["batch"] == 2 and t["threads"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in t["final_losses"].values())
    assert set(t["final_losses"]) >= {"l1_pixel", "bbox_pred", "ac", "g_gan_obj", "g_gan_img", "d_obj", "d_img"}
    report = json.loads((out / "report.json").read_text())
    p, m = report["protocol"], report["metrics"]
    assert p["split"] == "val" and p["num_layouts"] == 4 and len(p["image_ids"]) == 4 and p["samples_per_layout"] == 1
    assert p["layout_source"].startswith("gt") and p["resolution"] == 32 and p["steps"] == 2 and p["threads"] == 1
    assert len(p["feature_extractor"]["sha1"]) == 40 and p["train_batch"] == 2 and p["cpu_seconds"] > 0
    assert m["fid"]["value"] > 0 and "warning" in m["fid"]
    assert 0 <= m["object-acc"]["generated"]["top1"] <= 1 and m["object-acc"]["real"]["num_objects"] > 0
    assert report["machine"]["cpu"] and report["params"]["generator"] > 0
    speed = json.loads((out / "speed.json").read_text())
    assert speed["img_per_s"]["n"] == 2 and speed["img_per_s"]["median"] > 0 and speed["protocol"]["batch"] == 2
    assert speed["guard"]["max_load"] == machine.DEFAULT_MAX_LOAD
    assert speed["notes"] == [] and speed["gflops_per_step"] > 0  # counted, as speed.py counts
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("| sg2im baseline")]
    assert len(rows) == 4 and all(ln.count("|") == 5 for ln in rows)


def test_sg2im_baseline_names_a_missing_data_root(tmp_path, capsys, no_cpu_sampling):
    import sg2im_baseline  # noqa: PLC0415  (benchmarks/sg2im_baseline.py)

    threads = torch.get_num_threads()
    missing = tmp_path / "no_such_shapes"
    try:
        assert sg2im_baseline.main(["--train", "--steps", "1", "--data", str(missing), "--out", str(tmp_path)]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --data ") and str(missing) in err
    assert not (tmp_path / "model.safetensors").exists()


def test_appearance_writes_fid_colour_agreement_protocol_and_machine(tiny_styled_checkpoint, tiny_shapes, tmp_path,
                                                                    capsys, no_cpu_sampling):
    import appearance  # noqa: PLC0415  (benchmarks/appearance.py)

    out = tmp_path / "appearance.json"
    assert appearance.main(["--checkpoint", str(tiny_styled_checkpoint), "--data", str(tiny_shapes), "--num", "4",
                            "--batch-size", "3", "--min-pixels", "1", "--allow-busy", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["num_images"] == 4 and r["protocol"]["split"] == "val" and r["protocol"]["num"] == 4
    assert len(r["protocol"]["fid"]["feature_extractor"]["sha1"]) == 40 and "21.4" in r["protocol"]["fid_floor"]
    assert set(r["fid"]) == {"encoded", "cluster"} and all(v["value"] > 0 and "warning" in v for v in r["fid"].values())
    agreement = r["colour_agreement"]
    assert set(agreement) == {"real", "encoded", "cluster", "transfer", "transfer_cluster"}
    # every setting judges the same objects of the same GT layouts
    assert agreement["real"]["objects"] == agreement["encoded"]["objects"] == agreement["cluster"]["objects"] > 0
    assert agreement["transfer"]["objects"] == agreement["transfer_cluster"]["objects"]
    assert all(v["agreement"] is None or 0 <= v["agreement"] <= 1 for v in agreement.values())
    assert r["machine"]["cpu"] and r["machine"]["guard"]["max_load"] == machine.DEFAULT_MAX_LOAD
    captured = capsys.readouterr()
    rows = [ln for ln in captured.out.splitlines() if ln.startswith("| ")]
    assert len(rows) == 6 and rows[0].startswith("| codes (4 val scenes, GT layouts) | FID (floor 21.4)")
    assert "4/4 scenes" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--num", "0"], "error: --num must be at least 1, got 0"),
    (["--out", "report.txt"], "error: --out report.txt: the report is a .json file"),
    (["--data", "no_such_folder"], "error: --data no_such_folder: not a folder"),
])
def test_appearance_bad_options_are_one_line_before_any_model_loads(argv, message, tmp_path, capsys):
    import appearance  # noqa: PLC0415  (benchmarks/appearance.py)

    args = ["--checkpoint", str(tmp_path / "none"), "--data", str(tmp_path), *argv]
    assert appearance.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
