"""``layout2img prepare shapes``: write the embedded Shapes world as a COCO-format dataset."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    pr = sub.add_parser("prepare", help="prepare a dataset")
    prs = pr.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    ps = prs.add_parser("shapes", help="write the embedded Shapes world in COCO format")
    ps.add_argument("--out", required=True)
    ps.add_argument("--num-train", type=int, default=10000)
    ps.add_argument("--num-val", type=int, default=1000)
    ps.add_argument("--size", type=int, default=64)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    ps.set_defaults(func=run_shapes)
    return pr


def run_shapes(args) -> int:
    from ..data.shapes import prepare_shapes

    out = prepare_shapes(
        args.out, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Shapes dataset written to {out}")
    return 0
