"""Where a model's FID is lost: FID again with one kind of region's generated pixels replaced by the real ones.

Reads the images `layout2img evaluate --out R.json` saved beside its report (``R_images/fake`` and
``R_images/real``, one generated image per val layout, GT layouts) and the Shapes annotations of
the same images (exact masks, not the model's 16-cell ones). For each stuff class, and for all
things together, every generated image gets the real pixels inside that region's annotated mask,
and the result is compared with the real set by the evaluation's FID (pytorch-fid Inception,
:mod:`layout2img.metrics.fid`, same image counts). The drop from the plain FID is what drawing
that region as well as the data would buy, at most - a ranking of where to work, not a target.

    python benchmarks/fid_by_region.py --images runs/eval_images --data data/shapes --regions wall,sky,things

Prints one JSON object (FID plain and per region, each region's share of the pixels, the protocol,
the machine); ``--out`` writes it too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_guard_args, emit_report, guard_from_args, machine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layout2img.errors import ConfigError, DataError, Layout2ImgError  # noqa: E402

THINGS = "things"


def region_masks(root: str, split: str, num: int, size: int, regions: list[str]) -> dict[str, np.ndarray]:
    """(num, size, size) bool per region name: a stuff class's annotated pixels, or every thing's."""
    from layout2img.data.coco_annotations import decode_segmentation
    from layout2img.data.shapes import ShapesDataset, shapes_paths

    ids = ShapesDataset(root, split).image_ids[:num]
    if len(ids) < num:
        raise DataError(f"--num {num}: the {split} split of {root} has only {len(ids)} images")
    position = {image_id: k for k, image_id in enumerate(ids)}
    paths = shapes_paths(root, split)
    masks = {name: np.zeros((num, size, size), bool) for name in regions}
    for key, is_thing in (("instances_json", True), ("stuff_json", False)):
        data = json.loads(Path(paths[key]).read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
        for ann in data["annotations"]:
            k = position.get(ann["image_id"])
            name = THINGS if is_thing else names[ann["category_id"]]
            if k is None or name not in masks:
                continue
            full = decode_segmentation(ann["segmentation"], *sizes[ann["image_id"]])
            if full is None:
                continue
            full = torch.from_numpy(full.astype(np.float32))[None, None]
            masks[name][k] |= torch.nn.functional.interpolate(full, size=(size, size), mode="nearest")[0, 0].numpy() > 0
    return masks


def read_folder(folder: Path, num: int) -> torch.Tensor:
    """The first ``num`` PNGs of a folder (sorted by name) as uint8 (N, 3, H, W)."""
    from layout2img.metrics.fid import list_images, read_image_uint8

    paths = list_images(folder)
    if len(paths) < num:
        raise DataError(f"{folder}: {len(paths)} images, --num asks for {num}")
    return torch.stack([read_image_uint8(p) for p in paths[:num]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="an evaluation's images folder (with fake/ and real/)")
    ap.add_argument("--data", default="data/shapes", help="the prepared Shapes folder it evaluated")
    ap.add_argument("--split", default="val")
    ap.add_argument("--num", type=int, default=1000, help="images per set (default 1000, the evaluation's)")
    ap.add_argument("--regions", default="wall,sky,sea,grass,sand,snow,things",
                    help="comma-separated stuff class names and/or 'things'")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    try:
        regions = [r.strip() for r in args.regions.split(",") if r.strip()]
        folder = Path(args.images)
        if not (folder / "fake").is_dir() or not (folder / "real").is_dir():
            raise ConfigError(f"--images {folder}: expected fake/ and real/ inside "
                              f"(evaluate --out R.json writes R_images/)")
        if args.num < 2:
            raise ConfigError(f"--num {args.num}: FID needs at least 2 images")
        guard = guard_from_args(args)
        from layout2img.metrics.fid import InceptionFeatureExtractor, fid_from_features

        fake, real = read_folder(folder / "fake", args.num), read_folder(folder / "real", args.num)
        if fake.shape != real.shape:
            raise DataError(f"--images {folder}: fake images are {tuple(fake.shape[1:])}, real {tuple(real.shape[1:])}")
        masks = region_masks(args.data, args.split, args.num, real.shape[-1], regions)
        extractor = InceptionFeatureExtractor(batch_size=50)
        real_features = extractor(iter(real), total=args.num, progress=True, desc="real")
        result = {"plain": fid_from_features(extractor(iter(fake), total=args.num, progress=True, desc="generated"),
                                             real_features)}
        share = {}
        for name in regions:
            inside = torch.from_numpy(masks[name])[:, None]
            share[name] = float(inside.float().mean())
            pasted = torch.where(inside, real, fake)
            features = extractor(iter(pasted), total=args.num, progress=True, desc=f"{name} pasted")
            result[f"{name} pasted from real"] = fid_from_features(features, real_features)
    except Layout2ImgError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {
        "fid": result,
        "pixel_share": share,
        "protocol": {"images": str(folder), "data": args.data, "split": args.split, "num_images": args.num,
                     "resolution": int(real.shape[-1]), "regions": "annotated masks (exact), nearest-resized",
                     "compared_with": f"the same {args.num} real images", "feature_extractor": extractor.protocol()},
        "machine": machine(guard=guard),
    }
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
