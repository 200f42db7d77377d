"""Training and inference speed, peak memory and model FLOPs per config (CPU or GPU): median (spread) over N.

    python benchmarks/speed.py --device cpu --threads 2             # shapes_64 and coco_64, batch 16
    python benchmarks/speed.py --device cpu --config shapes_64 --modes infer --runs 30
    python benchmarks/speed.py --device cpu --config shapes_64 --compile    # torch.compile (inductor) of G and D
    python benchmarks/speed.py --device cuda --configs coco_64 coco_128 --batch 64 --throughput-batch 256
    python benchmarks/speed.py --dry-run --allow-busy                # seconds: a tiny model through every path

The script first checks that the machine is quiet (``benchmarks/machine.py``: 1-minute load
average and other processes' CPU use at most ``--max-load``; exit code 2 otherwise, unless
``--allow-busy``, which stamps the results "busy"). Each (config, measurement) then runs in its
own process, so peak memory is that measurement's alone (CPU: ``ru_maxrss`` of the process,
Python and torch included; GPU: ``torch.cuda.max_memory_allocated``), and the CPU time other
processes took meanwhile is recorded beside it. Every timed figure is the median of its
repeats with the IQR and min-max (``benchmarks/timing.py``).

* **train**: ``Trainer.train_step`` (G and D forward + backward, both optimiser steps, EMA) plus
  the batch augmentation, on one synthetic batch prepared in advance (data loading excluded):
  ``--batch`` graphs of ``--objects`` objects (sg2im's reference: 6), random boxes, masks, one
  random relation per object, random images. Each of ``--steps`` steps is timed after
  ``--warmup`` untimed ones; img/s = batch / step seconds. Model FLOPs per step are counted with
  ``torch.utils.flop_counter.FlopCounterMode`` over one eager step (every matmul / convolution of
  G, D and their backward passes, 2 FLOPs per multiply-add; elementwise ops, norms and the
  optimiser not counted); on a GPU the achieved FLOP rate at the median step is divided by the
  GPU's dense bf16 peak (``--peak-tflops`` or a table by name).
* **infer**: ``model.generate(graph)`` for one 6-object scene graph (dict in, image out: graph
  checks, packing, graph network, layout, generator), ``--runs`` timed calls; and ``model(batch)``
  on a packed batch of ``--throughput-batch`` graphs (predicted layout, sampled styles; bf16
  autocast on a GPU unless ``--fp32``), ``--throughput-runs`` timed calls.
* ``--compile``: ``torch.compile`` (inductor) of the generator and the discriminators (train) or
  the generator (infer) before warm-up; the first warm-up call, compilation included, is
  reported apart (``first_call_s``). ``--threads N``: ``torch.set_num_threads(N)`` and
  ``OMP_NUM_THREADS=N`` in every measuring process.

Prints one markdown row per figure (``timing.FIGURE_HEADER``) for docs/BENCHMARKS.md; ``--json``
writes the figures with the machine record and the protocol. Configs whose perceptual loss needs
weights that are not on disk (VGG19) fall back to ``loss.perceptual=none``; the result says so.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import add_guard_args, guard_from_args, machine, machine_line, watch_other_processes  # noqa: E402
from synthetic import SyntheticGraphs  # noqa: E402
from timing import FIGURE_HEADER, count_flops, figure_row, repeat  # noqa: E402

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of the device name.
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0), ("4090", 165.2))
#: --dry-run: any config shrunk to a 32 px model that runs in milliseconds, and the fewest repeats.
DRY_RUN_SET = ["data.image_size=32", "data.mask_size=8", "model.gcn.embed_dim=16", "model.gcn.width=16",
               "model.gcn.hidden=32", "model.gcn.layers=1", "model.layout.box_hidden=32",
               "model.layout.mask_channels=8", "model.generator.ngf=8", "model.generator.n_downsample=2",
               "model.generator.n_blocks=1", "model.encoder.nef=4", "model.encoder.n_downsample=2",
               "discriminator.image.ndf=8", "discriminator.image.num_D=1", "discriminator.image.n_layers=2"]
DRY_RUN_COUNTS = {"batch": 2, "steps": 3, "warmup": 1, "runs": 3, "throughput_batch": 2, "throughput_runs": 2}


def _vocab_for(cfg):
    from layout2img.vocab import Vocab

    return Vocab.by_name(str(cfg.model.vocab))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load_cfg(name: str, device: str, batch: int, out_dir: str, extra: list[str]):
    from layout2img.config import load_config

    overrides = [f"device={device}", f"batch_size={batch}", f"out_dir={out_dir}", "resume=never",
                 "data.num_workers=0", *extra]
    return load_config(name, overrides)


def _compile(*modules) -> None:
    for m in modules:
        if m is not None:
            m.compile(backend="inductor")  # in place: parameters and state-dict keys unchanged


def _protocol(args, mode: str, cfg, **extra) -> dict:
    return {"config": args.one, "mode": mode, "device": args.device, "image_size": int(cfg.data.image_size),
            "objects": args.objects, "threads": torch.get_num_threads(), "compile": args.compile,
            "overrides": list(args.set), "dry_run": args.dry_run, **extra}


# -- one measurement per process --------------------------------------------------------------------
def measure_train(args) -> dict:
    from unittest import mock

    from layout2img.data.batch import collate
    from layout2img.errors import ConfigError
    from layout2img.training import trainer as trainer_mod

    device = torch.device(args.device)
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _load_cfg(args.one, args.device, args.batch, tmp, args.set)
        vocab = _vocab_for(cfg)
        data = SyntheticGraphs(vocab, int(cfg.data.image_size), int(cfg.data.get("mask_size", 16)), args.objects)
        with mock.patch.object(trainer_mod, "build_dataset", lambda *a, **k: data):
            try:
                trainer = trainer_mod.Trainer(cfg)
            except ConfigError as e:
                if "perceptual" not in str(e) and "vgg19" not in str(e).lower():
                    raise
                cfg.loss.perceptual = "none"
                notes.append(f"perceptual loss off ({e})")
                trainer = trainer_mod.Trainer(cfg)
        batch = collate([data[i] for i in range(args.batch)]).to(device)
        trainer.model.train()
        stage = trainer.schedule.stage(trainer.step)
        enhancers = int(cfg.model.generator.get("n_local_enhancers", 0))
        resolution = int(cfg.data.image_size) // (2 ** enhancers if stage == "global" else 1)

        def step():
            b = trainer.augment(batch, generator=trainer.noise)
            trainer.train_step(b)

        flops, note = count_flops(step)  # one eager step, before any compilation: the model's FLOPs
        notes += [note] if note else []
        if args.compile:
            _compile(trainer.model.generator, trainer.d_image, trainer.d_object)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timing = repeat(step, runs=args.steps, warmup=args.warmup, sync=lambda: _sync(device))
        trainer.logger.close()
        trainer.close()
        d_params = sum(p.numel() for p in trainer.d_image.parameters())
        if trainer.d_object is not None:
            d_params += sum(p.numel() for p in trainer.d_object.parameters())
        step_s = timing.summary("s")
        amp = "bf16" if trainer.autocast is not trainer_mod.nullcontext else "fp32"
        res = {
            "img_per_s": timing.rate(args.batch, "img/s"), "s_per_step": step_s, "first_call_s": timing.first_s,
            "g_params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6, "d_params_M": d_params / 1e6,
            "peak_memory_MB": _peak_memory_mb(device), "gflops_per_step": flops / 1e9 if flops else None,
            "notes": notes,
            "protocol": _protocol(args, "train", cfg, batch=args.batch, stage=stage, resolution=resolution,
                                  amp=amp, steps=args.steps, warmup=args.warmup,
                                  perceptual=str(cfg.loss.get("perceptual", "none"))),
        }
        if flops and device.type == "cuda":
            peak = args.peak_tflops or _bf16_peak(torch.cuda.get_device_name(device))
            achieved = flops / step_s["median"] / 1e12
            res["achieved_tflops"] = achieved
            if peak:
                res["bf16_peak_tflops"], res["mfu"] = peak, achieved / peak
        return res


def measure_infer(args) -> dict:
    from layout2img.config import to_container
    from layout2img.data.batch import collate
    from layout2img.pipeline import SceneGraphToImage

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _load_cfg(args.one, args.device, args.batch, tmp, args.set)
    vocab = _vocab_for(cfg)
    model_cfg = to_container(cfg.model)
    model_cfg["vocab"] = vocab.to_dict()
    model = SceneGraphToImage(**model_cfg).to(device).eval()
    if args.compile:
        _compile(model.generator)
    data = SyntheticGraphs(vocab, model.image_size, model.config["layout"]["mask_size"], args.objects)
    graph = data.graph(0)

    def sync():
        _sync(device)

    seeds = iter(range(10**9))  # a new seed per call, as a user asking for several images would
    latency = repeat(lambda: model.generate(graph, seed=next(seeds)), runs=args.runs, warmup=args.warmup, sync=sync)

    big = collate([data[i % len(data)] for i in range(args.throughput_batch)]).to(device)
    big.images = None
    use_bf16 = device.type == "cuda" and not args.fp32
    rng = torch.Generator(device="cpu").manual_seed(0)

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return model(big, layout_source="pred", style_source="sample", generator=rng, keep_known_boxes=False)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # at least one warm-up: the batch's new shape (a recompilation with --compile)
    throughput = repeat(forward, runs=args.throughput_runs, warmup=max(1, args.warmup // 2), sync=sync)
    return {"latency_ms": latency.summary("ms", 1000.0), "first_call_s": latency.first_s,
            "throughput_img_per_s": throughput.rate(args.throughput_batch, "img/s"),
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "peak_memory_MB": _peak_memory_mb(device),
            "protocol": _protocol(args, "infer", cfg, graph="one 6-object sg2im dict, predicted layout",
                                  runs=args.runs, warmup=args.warmup, throughput_batch=args.throughput_batch,
                                  throughput_runs=args.throughput_runs, throughput_amp="bf16" if use_bf16 else "fp32")}


def _bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS:
        if key in name:
            return value
    return None


# -- the driver ---------------------------------------------------------------------------------------
def _child(argv: list[str], args, config: str, mode: str) -> dict:
    """One measurement in a fresh process (the same flags, so the same protocol); {'error': ...} if it fails."""
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, __file__, *argv, "--one", config, "--mode", mode]
    with watch_other_processes() as others:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return {**json.loads(lines[-1]), "others_cpus_during": others["others_cpus"]}


def figure_rows(results: dict) -> list[str]:
    """One markdown row per figure of every config and mode."""
    command, line = results["machine"]["command"], machine_line(results["machine"])
    rows = []
    for name, modes in results["configs"].items():
        for mode, r in modes.items():
            if "error" in r:
                rows.append(figure_row(f"{name} {mode}", f"error: {r['error']}", command, line))
                continue
            p = r["protocol"]
            tag = f"{name}, {p['threads']} thread{'s' if p['threads'] != 1 else ''}"
            tag += ", compiled" if p["compile"] else ""
            busy = r.get("others_cpus_during")
            if busy is not None and busy > results["guard"]["max_load"]:
                tag += f", others used {busy:.2f} CPUs meanwhile"
            if mode == "train":
                res = f"{p['resolution']} px" + (" (global stage)" if p["stage"] == "global" else "")
                rows.append(figure_row(f"{tag}: train img/s, batch {p['batch']}, {res}, {p['amp']}",
                                       r["img_per_s"], command, line))
                gflops = f"{r['gflops_per_step']:.1f}" if r["gflops_per_step"] else "not counted"
                extra = f", MFU {100 * r['mfu']:.1f} %" if "mfu" in r else ""
                rows.append(figure_row(f"{tag}: G / D params, GFLOP per train step, peak memory",
                                       f"{r['g_params_M']:.1f}M / {r['d_params_M']:.1f}M, {gflops}{extra}, "
                                       f"{r['peak_memory_MB'] / 1024:.2f} GB", command, line))
            else:
                rows.append(figure_row(f"{tag}: generate latency, 1 graph, {p['image_size']} px",
                                       r["latency_ms"], command, line))
                rows.append(figure_row(f"{tag}: throughput, batch {p['throughput_batch']}, {p['throughput_amp']}",
                                       r["throughput_img_per_s"], command, line))
                rows.append(figure_row(f"{tag}: params, inference peak memory",
                                       f"{r['params_M']:.1f}M, {r['peak_memory_MB'] / 1024:.2f} GB", command, line))
            if r.get("first_call_s") is not None and p["compile"]:
                rows.append(figure_row(f"{tag}: {mode} first call (compilation included)",
                                       f"{r['first_call_s']:.1f} s", command, line))
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", "--config", nargs="+", default=None,
                   help="configs to measure (default: shapes_64 coco_64; with --dry-run shapes_64)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16, help="training batch (sg2im's reference: 16)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each timed series")
    p.add_argument("--runs", type=int, default=30, help="timed batch-1 generate calls")
    p.add_argument("--throughput-batch", type=int, default=64)
    p.add_argument("--throughput-runs", type=int, default=5)
    p.add_argument("--objects", type=int, default=6, help="objects per synthetic graph (sg2im's reference: 6)")
    p.add_argument("--threads", type=int, default=None, help="torch / OpenMP threads (default: as inherited)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) G and D before warm-up; give --warmup 3 or more "
                   "(the discriminator sees two batch shapes, so the first calls recompile)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by name)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast for GPU inference")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--dry-run", action="store_true", help="a tiny 32 px model and the fewest repeats: seconds")
    add_guard_args(p)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for flag in ("batch", "steps", "runs", "throughput_batch", "throughput_runs", "objects", "threads"):
        value = getattr(args, flag)
        if value is not None and value < (2 if flag == "objects" else 1):
            p.error(f"--{flag.replace('_', '-')} must be at least {2 if flag == 'objects' else 1}, got {value}")
    if args.configs is None:
        args.configs = ["shapes_64"] if args.dry_run else ["shapes_64", "coco_64"]
    if args.dry_run:
        args.set = [*DRY_RUN_SET, *args.set]
        vars(args).update(DRY_RUN_COUNTS)
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:  # a child: one measurement, one JSON line
        res = measure_train(args) if args.mode == "train" else measure_infer(args)
        print(json.dumps(res))
        return 0

    guard = guard_from_args(args)
    info = machine(guard=guard)
    info["command"] = shlex.join(["python", "benchmarks/speed.py", *argv])  # as run from the repository root
    results = {"benchmark": "speed", "machine": info, "guard": guard,
               "protocol": {"device": args.device, "modes": args.modes,
                            "threads": args.threads or torch.get_num_threads(),
                            "compile": args.compile, "dry_run": args.dry_run},
               "configs": {}}
    for config in args.configs:
        results["configs"][config] = {}
        for mode in args.modes:
            print(f"{config}: {mode} ...", file=sys.stderr, flush=True)
            results["configs"][config][mode] = _child(argv, args, config, mode)
    print(FIGURE_HEADER)
    print("\n".join(figure_rows(results)))
    if args.json:
        from layout2img.io import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(results, indent=1) + "\n")
    failed = [f"{c} {m}" for c, modes in results["configs"].items() for m, r in modes.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
