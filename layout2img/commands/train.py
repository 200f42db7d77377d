"""Train a scene-graph-to-image model (`layout2img train`; `python train.py` is the same command).

    layout2img train                                          # Shapes at 64x64 on CPU or GPU
    layout2img train --config coco_128 batch_size=16 out_dir=runs/coco128
    torchrun --nproc_per_node=4 -m layout2img.cli train --config vg_128

Every key of the config schema (layout2img/config/schema.py) can be overridden as key=value
(nested keys with dots); a key the schema does not know is an error naming the closest one.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("train", help="train a scene-graph-to-image model", description=__doc__.splitlines()[0],
                       epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", default=None,
                   help="a YAML file, or a bundled config by name: shapes_64, coco_128, configs/vg_64.yaml, ... "
                        "(default: shapes_64)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch_size=16")
    t.set_defaults(func=run)
    return t


def run(args) -> int:
    from ..config import load_config

    try:
        cfg = load_config(args.config, args.overrides)  # a bad key fails before torch loads
        from ..training.trainer import Trainer  # torchrun's RANK / WORLD_SIZE are read in there

        trainer = Trainer(cfg)
        try:
            trainer.fit()
        finally:
            trainer.close()
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; run the same command to resume", file=sys.stderr)
        return 130
    return 0
