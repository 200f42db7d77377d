"""``layout2img prepare shapes|coco-stuff|vg``: write a dataset in the layout its loader reads.

``shapes`` writes the embedded Shapes world (COCO format); ``coco-stuff`` downloads COCO 2017 and
COCO-Stuff (:mod:`layout2img.data.prepare_coco`); ``vg`` turns the official Visual Genome files
into sg2im's HDF5 (:mod:`layout2img.data.prepare_vg`). ``datasets/prepare_*.py`` are the same commands.
"""
from __future__ import annotations

import argparse
from pathlib import Path

# Literal defaults (building the parser must not import h5py and torch, see commands/__init__);
# tests/test_vg.py checks they equal prepare_visual_genome's.
VG_DEFAULTS = dict(split_fractions=[0.9, 0.05, 0.05], split_seed=0, min_object_instances=2000,
                   min_attribute_instances=2000, min_relationship_instances=500, min_object_size=32, min_objects=3,
                   max_objects=30, min_relationships=1, max_relationships=30, max_attributes_per_object=30,
                   image_size_min=200)


def add_parser(sub) -> argparse.ArgumentParser:
    pr = sub.add_parser("prepare", help="prepare a dataset (shapes, coco-stuff, vg)")
    prs = pr.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    _add_shapes(prs)
    _add_coco(prs)
    _add_vg(prs)
    return pr


def _add_shapes(prs) -> None:
    ps = prs.add_parser("shapes", help="write the embedded Shapes world in COCO format")
    ps.add_argument("--out", required=True)
    ps.add_argument("--num-train", type=int, default=10000)
    ps.add_argument("--num-val", type=int, default=1000)
    ps.add_argument("--size", type=int, default=64)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    ps.set_defaults(func=run_shapes)


def _add_coco(prs) -> None:
    p = prs.add_parser("coco-stuff", help="download COCO 2017 + COCO-Stuff (~21 GB) and lay them out",
                       description="Download COCO 2017 + COCO-Stuff 2017 and lay them out the way "
                                   "CocoSceneGraphDataset expects (datasets/README.md).")
    p.add_argument("--root", type=Path, default=Path("data/coco"),
                   help="where to put everything (default data/coco, which git ignores)")
    p.add_argument("--splits", default="train,val", help="train,val | train | val")
    p.add_argument("--skip-images", action="store_true", help="annotations only")
    p.add_argument("--stuff-mirror", choices=("coco", "calvin"), default="coco",
                   help="where to get the stuff JSONs (calvin: the COCO-Stuff README link, no challenge ids)")
    p.add_argument("--keep-zips", action="store_true", help="keep the downloaded zips in ROOT/downloads")
    p.add_argument("--check", action="store_true", help="only report which files are present")
    p.add_argument("--stats", choices=("train", "val"), default=None,
                   help="then build the dataset for this split and print what the protocol keeps "
                        "(train loads ~1.5 GB of JSON: minutes and several GB of memory)")
    p.add_argument("--challenge-ids", action="store_true",
                   help="with --stats: restrict to the deprecated-challenge2017 image ids (sg2im/LostGAN)")
    p.set_defaults(func=run_coco)


def _add_vg(prs) -> None:
    d = VG_DEFAULTS
    p = prs.add_parser("vg", help="Visual Genome JSON -> HDF5 + vocab.json (sg2im protocol)",
                       description="Visual Genome JSON -> HDF5 + vocab.json (sg2im protocol; datasets/README.md)")
    p.add_argument("--vg-dir", required=True, help="folder with the official VG JSON and alias files")
    p.add_argument("--out", required=True, help="output folder for {split}.h5 and vocab.json")
    p.add_argument("--splits-json", default=None,
                   help="splits JSON {train: [ids], val: [...], test: [...]} (sg2im: vg_splits.json); "
                        "default: a seeded split by --split-fractions")
    p.add_argument("--split-fractions", type=float, nargs=3, default=list(d["split_fractions"]),
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--split-seed", type=int, default=d["split_seed"])
    p.add_argument("--min-object-instances", type=int, default=d["min_object_instances"])
    p.add_argument("--min-attribute-instances", type=int, default=d["min_attribute_instances"])
    p.add_argument("--min-relationship-instances", type=int, default=d["min_relationship_instances"])
    p.add_argument("--min-object-size", type=int, default=d["min_object_size"], help="pixels, both width and height")
    p.add_argument("--min-objects", type=int, default=d["min_objects"])
    p.add_argument("--max-objects", type=int, default=d["max_objects"])
    p.add_argument("--min-relationships", type=int, default=d["min_relationships"])
    p.add_argument("--max-relationships", type=int, default=d["max_relationships"])
    p.add_argument("--max-attributes-per-object", type=int, default=d["max_attributes_per_object"])
    p.add_argument("--image-size-min", type=int, default=d["image_size_min"], help="pixels, the shorter side")
    p.add_argument("--vocab", default=None,
                   help="encode with this vocabulary instead of counting one: 'vg' (sg2im's) or a vocab.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_vg)


def run_shapes(args) -> int:
    from ..data.shapes import prepare_shapes

    out = prepare_shapes(
        args.out, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Shapes dataset written to {out}")
    return 0


def run_coco(args) -> int:
    """Exit 0 when every required file is there afterwards, 1 when some are missing."""
    from ..data import prepare_coco

    splits = prepare_coco.parse_splits(args.splits)
    if args.check:
        status = prepare_coco.check(args.root, splits)
    else:
        status = prepare_coco.prepare_coco_stuff(args.root, splits, skip_images=args.skip_images,
                                                 stuff_mirror=args.stuff_mirror, keep_zips=args.keep_zips)
    if args.stats and status == 0:
        prepare_coco.stats(args.root, args.stats, args.challenge_ids)
    return status


def run_vg(args) -> int:
    from ..data.prepare_vg import prepare_visual_genome

    summary = prepare_visual_genome(
        args.vg_dir, args.out, splits_json=args.splits_json, split_fractions=args.split_fractions,
        progress=not args.no_progress, vocab=args.vocab,
        **{k: getattr(args, k) for k in VG_DEFAULTS if k != "split_fractions"},
    )
    v = summary["vocab"]
    print(f"vocabulary: {v['objects']} objects, {v['predicates']} predicates, {v['attributes']} attributes")
    for split, s in summary["splits"].items():
        skips = ", ".join(f"{k} {n}" for k, n in sorted(s["skipped"].items()) if n)
        print(f"{split}: {s['images']} images" + (f" (skipped: {skips})" if skips else ""))
    print("wrote " + ", ".join(summary["files"]))
    return 0
