"""Where a training step's CPU time goes: ``torch.profiler`` around a few ``Trainer.train_step`` calls.

    python benchmarks/profile_step.py                      # shapes_64, batch 16, 2 threads, 3 steps after 3 warm-ups
    python benchmarks/profile_step.py --config coco_64 --batch 4 --rows 25
    python benchmarks/profile_step.py --dry-run            # speed.py's tiny 32 px model: seconds

The step is built as ``benchmarks/speed.py`` builds it (synthetic 6-object graphs, the batch
augmentation, G and D forward + backward, both optimisers, EMA; data loading excluded). Prints the
ops by self CPU time (``key_averages``), then one line with the seconds a profiled step took.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import DRY_RUN_SET  # noqa: E402  (benchmarks/speed.py)
from synthetic import SyntheticGraphs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="shapes_64")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15, help="ops listed")
    ap.add_argument("--dry-run", action="store_true", help="a tiny 32 px model, batch 2, 1 step")
    args = ap.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    from layout2img.config import load_config
    from layout2img.data.batch import collate
    from layout2img.training import trainer as trainer_mod
    from layout2img.vocab import Vocab

    torch.set_num_threads(args.threads)
    extra = DRY_RUN_SET if args.dry_run else []
    if args.dry_run:
        args.batch, args.steps, args.warmup = 2, 1, 1
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, ["device=cpu", f"batch_size={args.batch}", f"out_dir={tmp}", "resume=never",
                                        "data.num_workers=0", "loss.perceptual=none", *extra])
        vocab = Vocab.by_name(str(cfg.model.vocab))
        data = SyntheticGraphs(vocab, int(cfg.data.image_size), int(cfg.data.get("mask_size", 16)), 6)
        with mock.patch.object(trainer_mod, "build_dataset", lambda *a, **k: data):
            trainer = trainer_mod.Trainer(cfg)
        batch = collate([data[i] for i in range(args.batch)])
        trainer.model.train()

        def step():
            trainer.train_step(trainer.augment(batch, generator=trainer.noise))

        for _ in range(args.warmup):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - t0) / args.steps
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        print(f"{args.config}, batch {args.batch}, {args.threads} threads: {seconds:.3f} s a profiled step")
        trainer.logger.close()
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
