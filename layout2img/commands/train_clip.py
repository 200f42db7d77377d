"""``layout2img train-clip``: train a domain CLIP on a dataset's image-caption pairs."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    tc = sub.add_parser("train-clip", help="train a domain CLIP on a dataset's image-caption pairs")
    tc.add_argument("--config", default=None, help="a CLIP config (default: configs/clip/shapes.yaml)")
    tc.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")
    tc.set_defaults(func=run)
    return tc


def run(args) -> int:
    from ..training.clip import load_clip_config, train_clip

    result = train_clip(load_clip_config(args.config, args.overrides))
    final = result.history[-1]
    print(f"caption retrieval on val: top-1 {final['top1']:.3f}, top-5 {final['top5']:.3f} "
          f"among {final['num_candidates']} ({result.encoder.metadata['num_val_images']} images); "
          f"{result.seconds:.0f} s")
    if final.get("object_top1") is not None:
        print(f"object naming on val crops: top-1 {final['object_top1']:.3f}")
    print(f"domain CLIP written to {result.out_dir}")
    return 0
