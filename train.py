"""Train a scene-graph-to-image model.

    python train.py                                   # the default: Shapes at 64x64 on CPU or GPU
    python train.py --config configs/coco_128.yaml batch_size=16 out_dir=runs/coco128
    torchrun --nproc_per_node=4 train.py --config configs/vg_128.yaml

Every key of the config schema (layout2img/config/schema.py) can be overridden as key=value
(nested keys with dots); a key the schema does not know is an error naming the closest one.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: configs/shapes_64.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    from layout2img.config import load_config
    from layout2img.errors import Layout2ImgError
    from layout2img.training.trainer import Trainer

    try:
        cfg = load_config(args.config, args.overrides)
        trainer = Trainer(cfg)
        try:
            trainer.fit()
        finally:
            trainer.close()
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
