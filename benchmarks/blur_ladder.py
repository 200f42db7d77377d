"""FID of *real* images whose detail is cut to a coarser resolution: the reference row beside every FID table.

Each real validation image (the evaluation's real set: the dataset's images at the model's
resolution, rounded to 8 bits) is resized down to D x D pixels (bilinear with antialiasing) and
back up (bilinear), then compared with the untouched real set by the evaluation's FID (the
pytorch-fid Inception, :mod:`layout2img.metrics.fid`; same image counts). Perfect content drawn
with only D-pixel detail scores this; a model's FID above a rung is blur (or worse) beyond it.
The floor (first N train images vs the N val images) is the same FID between two real sets.

    python benchmarks/blur_ladder.py --data data/shapes --num 1000 --detail 64,48,32,16 --out runs/bench/blur.json

Prints one JSON object (FID per rung, the floor, the protocol, the machine); ``--out`` writes it too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_guard_args, emit_report, guard_from_args, machine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layout2img.errors import ConfigError, Layout2ImgError  # noqa: E402


def with_detail(images: torch.Tensor, detail: int) -> torch.Tensor:
    """(N, 3, S, S) images in [-1, 1] keeping only ``detail`` x ``detail`` pixels of detail."""
    size = images.shape[-1]
    if detail >= size:
        return images
    small = F.interpolate(images, size=(detail, detail), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def real_images(root: str, split: str, num: int, size: int) -> torch.Tensor:
    """The first ``num`` images of a Shapes split at ``size`` px in [-1, 1] (DataError if it has fewer)."""
    from layout2img.data.shapes import ShapesDataset
    from layout2img.errors import DataError

    dataset = ShapesDataset(root, split, image_size=size)
    if len(dataset) < num:
        raise DataError(f"--num {num}: the {split} split of {root} has only {len(dataset)} images")
    return torch.stack([dataset[i]["image"] for i in range(num)])


def check_args(args) -> list[int]:
    try:
        rungs = [int(d) for d in args.detail.split(",") if d.strip()]
    except ValueError:
        raise ConfigError(f"--detail {args.detail!r}: expected comma-separated pixel sizes such as 48,32") from None
    if not rungs or any(not 4 <= d <= args.size for d in rungs):
        raise ConfigError(f"--detail {args.detail!r}: each size must lie in 4..{args.size}")
    if args.num < 2:
        raise ConfigError(f"--num {args.num}: FID needs at least 2 images")
    if not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data}: not a folder (prepare it with `layout2img prepare shapes`)")
    return rungs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/shapes", help="a prepared Shapes folder (default data/shapes)")
    ap.add_argument("--num", type=int, default=1000, help="images per set (default 1000, the evaluation's)")
    ap.add_argument("--size", type=int, default=64, help="the resolution the evaluation uses (default 64)")
    ap.add_argument("--detail", default="64,48,32,16", help="comma-separated detail sizes in pixels")
    ap.add_argument("--no-floor", action="store_true", help="skip the train-vs-val floor")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    try:
        rungs = check_args(args)
        guard = guard_from_args(args)
        from layout2img.metrics.fid import InceptionFeatureExtractor, fid_from_features

        extractor = InceptionFeatureExtractor(batch_size=50)
        val = real_images(args.data, "val", args.num, args.size)
        val_features = extractor.tensors(val, progress=True)
        ladder = {}
        for d in rungs:
            feats = extractor.tensors(with_detail(val, d), progress=True)
            ladder[f"{d}px"] = fid_from_features(feats, val_features)
        floor = None
        if not args.no_floor:
            train = real_images(args.data, "train", args.num, args.size)
            floor = fid_from_features(extractor.tensors(train, progress=True), val_features)
    except Layout2ImgError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {
        "fid_of_real_val_with_detail": ladder,
        "floor_train_vs_val": floor,
        "protocol": {"dataset": "shapes", "data": args.data, "split": "val", "num_images": args.num,
                     "resolution": args.size, "degradation": "bilinear down (antialias) to DxD, bilinear up",
                     "compared_with": f"the same {args.num} val images untouched",
                     "floor": f"first {args.num} train images vs the {args.num} val images",
                     "feature_extractor": extractor.protocol()},
        "machine": machine(guard=guard),
    }
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
