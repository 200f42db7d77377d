"""Training and inference speed, peak memory and model FLOPs per config (CPU or GPU).

    python benchmarks/speed.py --device cpu                      # shapes_64 and coco_64, batch 16
    python benchmarks/speed.py --device cuda --configs coco_64 coco_128 --batch 64 --throughput-batch 256
    python benchmarks/speed.py --device cpu --json results.json  # also write every figure as JSON

Each (config, measurement) runs in its own process, so peak memory is that measurement's alone
(CPU: ``ru_maxrss`` of the process, which includes Python and torch themselves; GPU:
``torch.cuda.max_memory_allocated``).

* **train**: ``Trainer.train_step`` (G and D forward + backward, both optimiser steps, EMA) plus
  the batch augmentation, on one synthetic batch prepared in advance (data loading excluded):
  ``--batch`` graphs of ``--objects`` objects (sg2im's reference: 6), random boxes, masks, one
  random relation per object, random images. img/s = batch x steps / seconds after warm-up.
  Model FLOPs per step are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one
  whole step (every matmul / convolution of G, D and their backward passes, 2 FLOPs per
  multiply-add; elementwise ops, norms and the optimiser not counted); on a GPU the achieved
  FLOP rate is divided by the GPU's dense bf16 peak (``--peak-tflops`` or a table by name).
* **infer**: ``model.generate(graph)`` for one 6-object scene graph (dict in, image out:
  graph checks, packing, graph network, layout, generator) - median latency over ``--runs``;
  and ``model(batch)`` throughput on a packed batch of ``--throughput-batch`` graphs
  (predicted layout, sampled styles; bf16 autocast on a GPU unless ``--fp32``).

Configs whose perceptual loss needs weights that are not on disk (VGG19) fall back to
``loss.perceptual=none``; the result says so.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import machine  # noqa: E402  (benchmarks/machine.py)

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of the device name.
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0), ("L4", 121.0), ("4090", 165.2))


# -- synthetic data ---------------------------------------------------------------------------------
class SyntheticGraphs(torch.utils.data.Dataset):
    """Random scene graphs with images, in the datasets' item format, for a vocabulary."""

    def __init__(self, vocab, image_size: int, mask_size: int = 16, num_objects: int = 6, size: int = 256,
                 seed: int = 0):
        self.vocab, self.image_size, self.mask_size = vocab, image_size, mask_size
        self.num_objects, self.size, self.seed = num_objects, size, seed

    def __len__(self):
        return self.size

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n = self.num_objects
        objs = torch.randint(1, self.vocab.num_objects, (n,), generator=g)
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = 0.1 + torch.rand(n, 2, generator=g) * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=1.0)], 1)
        masks = (torch.rand(n, self.mask_size, self.mask_size, generator=g) > 0.3).float()
        partners = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
        preds = torch.randint(1, self.vocab.num_predicates, (n,), generator=g)
        triples = [[i, int(p), int(o)] for i, (p, o) in enumerate(zip(preds, partners))]
        triples += [[i, 0, n] for i in range(n)]
        image = torch.rand(3, self.image_size, self.image_size, generator=g) * 2 - 1
        return {"objs": torch.cat([objs, torch.zeros(1, dtype=torch.long)]),
                "boxes": torch.cat([boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]])]),
                "masks": torch.cat([masks, torch.ones(1, self.mask_size, self.mask_size)]),
                "triples": torch.tensor(triples), "image": image, "caption": None, "image_id": index}

    def graph(self, index: int = 0) -> dict:
        """The same scene as an sg2im dict (objects and relations, no boxes): what a user passes."""
        item = self[index]
        n = self.num_objects
        names = [self.vocab.object_names[int(o)] for o in item["objs"][:n]]
        rels = [[s, self.vocab.predicate_names[p], o] for s, p, o in item["triples"][:n].tolist()]
        return {"objects": names, "relationships": rels}


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

        def step():
            b = trainer.augment(batch, generator=trainer.noise)
            trainer.train_step(b)

        for _ in range(args.warmup):
            step()
        _sync(device)
        flops = None
        try:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
        except Exception as e:  # noqa: BLE001 - FLOP counting is a bonus, never a failure
            notes.append(f"FLOPs not counted ({type(e).__name__}: {e})")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        seconds = time.perf_counter() - t0
        trainer.logger.close()
        trainer.close()
        d_params = sum(p.numel() for p in trainer.d_image.parameters())
        if trainer.d_object is not None:
            d_params += sum(p.numel() for p in trainer.d_object.parameters())
        res = {
            "img_per_s": args.batch * args.steps / seconds, "s_per_step": seconds / args.steps,
            "g_params_M": sum(p.numel() for p in trainer.model.parameters()) / 1e6, "d_params_M": d_params / 1e6,
            "peak_memory_MB": _peak_memory_mb(device), "gflops_per_step": flops / 1e9 if flops else None,
            "amp": "bf16" if trainer.autocast is not trainer_mod.nullcontext else "fp32",
            "perceptual": str(cfg.loss.get("perceptual", "none")), "notes": notes,
        }
        if flops and device.type == "cuda":
            peak = args.peak_tflops or _bf16_peak(torch.cuda.get_device_name(device))
            achieved = flops * args.steps / seconds / 1e12
            res["achieved_tflops"] = achieved
            if peak:
                res["bf16_peak_tflops"], res["mfu"] = peak, achieved / peak
        return res


def measure_infer(args) -> dict:
    from layout2img.data.batch import collate
    from layout2img.models.pipeline import SceneGraphToImage

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _load_cfg(args.one, args.device, args.batch, tmp, args.set)
    vocab = _vocab_for(cfg)
    from layout2img.config import to_container

    model_cfg = to_container(cfg.model)
    model_cfg["vocab"] = vocab.to_dict()
    model = SceneGraphToImage(**model_cfg).to(device).eval()
    data = SyntheticGraphs(vocab, model.image_size, model.mask_size, args.objects)
    graph = data.graph(0)

    latencies = []
    for i in range(args.warmup + args.runs):
        _sync(device)
        t0 = time.perf_counter()
        model.generate(graph, seed=i)
        _sync(device)
        if i >= args.warmup:
            latencies.append(time.perf_counter() - t0)

    big = collate([data[i % len(data)] for i in range(args.throughput_batch)]).to(device)
    big.images = None
    use_bf16 = device.type == "cuda" and not args.fp32
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else torch.autocast("cpu", enabled=False)
    rng = torch.Generator(device="cpu").manual_seed(0)

    def forward():
        with torch.no_grad(), (ctx() if use_bf16 else ctx):
            return model(big, layout_source="pred", style_source="sample", generator=rng, keep_known_boxes=False)

    for _ in range(max(1, args.warmup // 2)):
        forward()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    reps = max(1, args.throughput_runs)
    t0 = time.perf_counter()
    for _ in range(reps):
        forward()
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"latency_ms_median": 1000 * statistics.median(latencies), "latency_ms_min": 1000 * min(latencies),
            "latency_runs": len(latencies), "throughput_img_per_s": args.throughput_batch * reps / seconds,
            "throughput_batch": args.throughput_batch, "throughput_amp": "bf16" if use_bf16 else "fp32",
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "peak_memory_MB": _peak_memory_mb(device)}


def _bf16_peak(name: str) -> float | None:
    for key, value in BF16_PEAK_TFLOPS:
        if key in name:
            return value
    return None


# -- the driver ---------------------------------------------------------------------------------------
def _child(args, config: str, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--one", config, "--mode", mode, "--device", args.device,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--runs", str(args.runs), "--throughput-batch", str(args.throughput_batch),
           "--throughput-runs", str(args.throughput_runs), "--objects", str(args.objects)]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    if args.fp32:
        cmd.append("--fp32")
    for s in args.set:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def _table(results: dict) -> str:
    rows = ["| config | G params | train img/s (batch) | train peak mem | GFLOP/step | MFU | "
            "latency b=1 (median) | throughput (batch) | infer peak mem |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["configs"].items():
        t, i = r.get("train", {}), r.get("infer", {})
        if "error" in t or "error" in i:
            rows.append(f"| {name} | error: {t.get('error') or i.get('error')} |||||||| ")
            continue
        mfu = f"{100 * t['mfu']:.1f}%" if "mfu" in t else "-"
        gf = f"{t['gflops_per_step']:.1f}" if t.get("gflops_per_step") else "-"
        rows.append(f"| {name} | {t['g_params_M']:.1f}M | {t['img_per_s']:.2f} ({results['batch']}) | "
                    f"{t['peak_memory_MB']:.0f} MB | {gf} | {mfu} | {i['latency_ms_median']:.1f} ms | "
                    f"{i['throughput_img_per_s']:.1f} ({i['throughput_batch']}, {i['throughput_amp']}) | "
                    f"{i['peak_memory_MB']:.0f} MB |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["shapes_64", "coco_64"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=16, help="training batch (sg2im's reference: 16)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=30, help="batch-1 latency runs")
    p.add_argument("--throughput-batch", type=int, default=64)
    p.add_argument("--throughput-runs", type=int, default=3)
    p.add_argument("--objects", type=int, default=6, help="objects per synthetic graph (sg2im's reference: 6)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by name)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast for GPU inference")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:  # a child: one measurement, one JSON line
        res = measure_train(args) if args.mode == "train" else measure_infer(args)
        print(json.dumps(res))
        return 0

    results = {"machine": machine(), "device": args.device, "batch": args.batch, "objects": args.objects,
               "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
               "configs": {}}
    for config in args.configs:
        results["configs"][config] = {}
        for mode in args.modes:
            print(f"{config}: {mode} ...", file=sys.stderr, flush=True)
            results["configs"][config][mode] = _child(args, config, mode)
    print(json.dumps(results["machine"]))
    print(_table(results) if set(args.modes) == {"train", "infer"} else json.dumps(results["configs"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
