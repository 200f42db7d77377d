"""``layout2img fid``: FID (and KID) between two image folders, pytorch-fid's definition."""
from __future__ import annotations

import argparse
import sys

from .options import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("fid", help="FID between two image folders (pytorch-fid definition)")
    f.add_argument("dir_a")
    f.add_argument("dir_b")
    f.add_argument("--batch-size", type=int, default=32)
    add_model_args(f, checkpoint=False, device=True)
    f.add_argument("--inception", default=None, help="path of the FID Inception TorchScript")
    f.add_argument("--kid", action="store_true", help="also print KID")
    f.add_argument("--kid-subsets", type=int, default=100)
    f.add_argument("--kid-subset-size", type=int, default=1000)
    f.set_defaults(func=run)
    return f


def run(args) -> int:
    from ..devices import resolve_device
    from ..metrics.fid import fid_between_folders, kernel_inception_distance, small_sample_note

    res = fid_between_folders(args.dir_a, args.dir_b, device=resolve_device(args.device), batch_size=args.batch_size,
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
