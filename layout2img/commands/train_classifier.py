"""``layout2img train-classifier``: train the object classifier that the object-acc metric uses."""
from __future__ import annotations

import argparse
import sys

from .options import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("train-classifier", help="train the object classifier used by the object-acc metric")
    c.add_argument("--config", default=None,
                   help="run config (default: the --checkpoint's run config if given, else configs/shapes_64.yaml)")
    add_model_args(c, checkpoint="optional", device=True, run_folder=True)
    c.add_argument("--out", required=True, help="folder to write (config.json + model.safetensors + vocab.json)")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--batch-size", type=int, default=8, help="images per step (all their objects are cropped)")
    c.add_argument("--crop-size", type=int, default=32)
    c.add_argument("--width", type=int, default=32)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-val-images", type=int, default=None)
    c.add_argument("overrides", nargs="*", help="config overrides key=value")
    c.set_defaults(func=run)
    return c


def run(args) -> int:
    from ..config import load_config
    from ..training.runs import load_run_config, resolve_checkpoint
    from ..training.classifier import train_classifier

    if args.checkpoint is not None:
        cfg, _ = load_run_config(resolve_checkpoint(args.checkpoint), args.config, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    train_classifier(cfg, args.out, steps=args.steps, batch_size=args.batch_size, crop_size=args.crop_size,
                     width=args.width, lr=args.lr, seed=args.seed, device=args.device,
                     max_val_images=args.max_val_images, log=lambda line: print(line, file=sys.stderr))
    print(args.out)
    return 0
