"""``layout2img fit-styles``: fit a checkpoint's per-class style clusters on its train split and save them.

    layout2img fit-styles --checkpoint runs/shapes_64          # the run's latest checkpoint, in place
    layout2img fit-styles --checkpoint runs/shapes_64/checkpoints/latest --out runs/shapes_64_styled

The train split comes from the checkpoint's run config (``out_dir/config.yaml``, or ``--config``,
with ``key=value`` overrides such as ``data.root=DIR``); its first ``--max-images`` images are
encoded and k-means'd per class (:func:`~layout2img.training.styles.fit_checkpoint_styles`). In
place, the checkpoint folder is rewritten atomically with every other file in it (a training
checkpoint's ``training_state.*``) kept; ``--out`` writes a model folder of its own.
"""
from __future__ import annotations

import argparse

from .options import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("fit-styles", help="fit a checkpoint's per-class style clusters (for --style cluster)",
                       description="Encode the objects of a checkpoint's train split, k-means their style codes "
                                   "per class and save the clusters in the checkpoint, so generate, evaluate and "
                                   "serve can draw appearances like the data's (--style cluster).")
    add_model_args(f, checkpoint=True, device=True, run_folder=True)
    f.add_argument("--config", default=None,
                   help="run config (default: the out_dir/config.yaml the trainer wrote beside the checkpoints)")
    f.add_argument("--max-images", type=int, default=2000, metavar="N",
                   help="encode the first N train images (default 2000)")
    f.add_argument("--seed", type=int, default=None, help="k-means seed (default: the run config's seed)")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--out", default=None,
                   help="write the fitted model to this folder (default: rewrite the checkpoint in place)")
    f.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=DIR)")
    f.set_defaults(func=run)
    return f


def run(args) -> int:
    from ..training.styles import fit_checkpoint_styles

    folder, s = fit_checkpoint_styles(args.checkpoint, args.out, config=args.config, overrides=args.overrides,
                                      max_images=args.max_images, seed=args.seed, batch_size=args.batch_size,
                                      device=args.device)
    print(f"fitted style clusters (k={s['k']}, seed {s['seed']}) on {s['objects']} objects of {s['images']} "
          f"train images, {s['classes']} classes -> {folder}")
    return 0
