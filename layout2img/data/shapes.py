"""The embedded Shapes world: a procedural dataset in the COCO-Stuff mould, written as COCO files.

:mod:`.shapes_render` draws each scene (stuff backgrounds, shaded geometric things, captions);
this module writes the scenes as a dataset and reads it back.

On disk (``prepare_shapes``)::

    DIR/images/{train,val}/000001.png
    DIR/annotations/instances_{split}.json   things: RLE masks of the visible part, bbox, area,
                                             plus ``color``, ``size``, ``description``, ``depth``
    DIR/annotations/stuff_{split}.json       stuff regions as RLE, like COCO-Stuff
    DIR/annotations/captions_{split}.json    three captions per image, the full one first
    DIR/meta.json                            generator version, seed, size, counts

Category ids are ``Vocab.shapes()`` object indices (things 1-8, stuff 9-14). Every image is drawn
from its own generator seeded by ``(seed, split, index)``, so the files depend only on the
arguments, never on the number of worker processes.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import read_json
from ..vocab import SHAPES_COLORS, SHAPES_SIZES, SHAPES_STUFF, SHAPES_THINGS, Vocab
from .coco import CocoSceneGraphDataset
from .shapes_captions import STUFF_TEXT
from .shapes_render import render_scene

#: Bump when the pictures or annotations change, so cached datasets are rebuilt.
GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_ID = {"train": 0, "val": 1}

# Category id of each name: its index in ``Vocab.shapes()`` (things 1-8, stuff 9-14).
CATEGORY_IDS = {n: i for i, n in enumerate(Vocab.shapes().object_names) if i > 0}


# -- writing the dataset ----------------------------------------------------------------------------
def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def _coco_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_ID[split], int(index)])


def _make_one(job) -> dict:
    """Render image ``index`` of ``split``, write its PNG, return its annotations (no ids yet)."""
    seed, split, index, size, image_dir = job
    scene = render_scene(_image_rng(seed, split, index), size)
    image_id = index + 1
    file_name = f"{image_id:06d}.png"
    Image.fromarray(scene.image).save(Path(image_dir) / file_name, format="PNG")
    things = [
        {
            "image_id": image_id,
            "category_id": CATEGORY_IDS[t.shape],
            "segmentation": _rle(t.mask),
            "area": int(t.mask.sum()),
            "bbox": _coco_box(t.mask),
            "iscrowd": 0,
            "color": t.color,
            "size": t.size,
            "description": t.description,
            "depth": t.depth,
        }
        for t in scene.things
    ]
    stuff = [
        {
            "image_id": image_id,
            "category_id": CATEGORY_IDS[name],
            "segmentation": _rle(m),
            "area": int(m.sum()),
            "bbox": _coco_box(m),
            "iscrowd": 0,
            "description": STUFF_TEXT[name],
        }
        for name, m in scene.stuff.items()
    ]
    return {
        "image": {"id": image_id, "file_name": file_name, "width": size, "height": size},
        "things": things,
        "stuff": stuff,
        "captions": [{"image_id": image_id, "caption": c} for c in scene.captions],
    }


def _categories(names, supercategory):
    return [{"id": CATEGORY_IDS[n], "name": n, "supercategory": supercategory} for n in names]


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, n)


def _meta(num_train: int, num_val: int, size: int, seed: int) -> dict:
    return {
        "dataset": "layout2img-shapes",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "things": list(SHAPES_THINGS),
        "stuff": list(SHAPES_STUFF),
        "colors": list(SHAPES_COLORS),
        "sizes": list(SHAPES_SIZES),
    }


def _check_args(num_train, num_val, size, seed):
    for name, v, lo in (("num_train", num_train, 0), ("num_val", num_val, 0), ("size", size, 16)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise DataError(f"prepare shapes: {name} must be an integer >= {lo}, got {v!r}")
    if num_train + num_val == 0:
        raise DataError("prepare shapes: num_train + num_val is 0; nothing to write")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"prepare shapes: seed must be a non-negative integer, got {seed!r}")


def prepare_shapes(
    out: str | Path,
    num_train: int = 10000,
    num_val: int = 1000,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the Shapes dataset to ``out`` in COCO format and return ``out``.

    The folder appears complete or not at all. Same arguments, same bytes (any ``workers``).
    """
    from tqdm.auto import tqdm

    from ..io import atomic_dir

    _check_args(num_train, num_val, size, seed)
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    counts = {"train": int(num_train), "val": int(num_val)}
    total = sum(counts.values())
    workers = _default_workers() if workers is None else max(1, int(workers))
    if total < 64:
        workers = 1  # starting processes costs more than drawing a handful of images
    with atomic_dir(out, overwrite=overwrite) as tmp:
        jobs = []
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
            jobs += [(int(seed), split, i, int(size), str(tmp / "images" / split)) for i in range(counts[split])]
        (tmp / "annotations").mkdir()
        bar = tqdm(total=total, desc="shapes", unit="img", disable=not progress or None)
        results = []
        try:
            if workers == 1:
                for job in jobs:
                    results.append(_make_one(job))
                    bar.update()
            else:
                # fork: workers start at once, without re-importing the package (and torch); they
                # only run numpy / PIL / pycocotools, so the parent's thread pools do not matter.
                method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
                with mp.get_context(method).Pool(workers) as pool:
                    for r in pool.imap(_make_one, jobs, chunksize=max(1, min(64, total // (workers * 8)))):
                        results.append(r)
                        bar.update()
        finally:
            bar.close()
        start = 0
        for split in SPLITS:
            part = results[start : start + counts[split]]
            start += counts[split]
            _write_split(tmp / "annotations", split, part)
        (tmp / "meta.json").write_text(json.dumps(_meta(num_train, num_val, size, seed), indent=1) + "\n")
    return out


def _write_split(ann_dir: Path, split: str, results: list[dict]) -> None:
    info = {"description": f"layout2img Shapes world ({split})", "version": str(GENERATOR_VERSION)}
    images = [r["image"] for r in results]
    files = {"instances": ([], "things"), "stuff": ([], "stuff"), "captions": ([], "captions")}
    for r in results:
        for kind, (anns, key) in files.items():
            for a in r[key]:
                anns.append({"id": len(anns) + 1, **a})
    thing_cats = _categories(SHAPES_THINGS, "shape")
    stuff_cats = _categories(SHAPES_STUFF, "stuff")
    _dump(ann_dir / f"instances_{split}.json",
          {"info": info, "licenses": [], "images": images, "annotations": files["instances"][0],
           "categories": thing_cats})
    _dump(ann_dir / f"stuff_{split}.json",
          {"info": info, "licenses": [], "images": images, "annotations": files["stuff"][0],
           "categories": stuff_cats})
    _dump(ann_dir / f"captions_{split}.json",
          {"info": info, "licenses": [], "images": images, "annotations": files["captions"][0]})


def read_meta(root: str | Path) -> dict | None:
    """The dataset's ``meta.json``, or None when absent or unreadable."""
    try:
        meta = read_json(Path(root) / "meta.json", "Shapes meta.json")
    except DataError:
        return None
    return meta if isinstance(meta, dict) else None


def ensure_shapes(
    root: str | Path, num_train: int = 10000, num_val: int = 1000, size: int = 64, seed: int = 0,
    workers: int | None = None,
) -> Path:
    """The Shapes dataset at ``root``: reused when its ``meta.json`` matches, else (re)built.

    A folder at ``root`` that is not a Shapes dataset is never replaced (DataError).
    """
    root = Path(root)
    want = _meta(num_train, num_val, size, seed)
    have = read_meta(root)
    if have == want and all(
        (root / "annotations" / f"{kind}_{split}.json").is_file()
        for kind in ("instances", "stuff", "captions") for split in SPLITS
    ):
        return root
    if root.exists():
        if have is None or have.get("dataset") != want["dataset"]:
            if not root.is_dir() or any(root.iterdir()):
                raise DataError(f"{root} exists and is not a Shapes dataset (no valid meta.json); "
                                "choose another folder or remove it")
    return prepare_shapes(root, num_train, num_val, size, seed, overwrite=root.exists(), workers=workers)


def shapes_paths(root: str | Path, split: str = "train") -> dict[str, Path]:
    """The COCO files of one split: image_dir, instances_json, stuff_json, captions_json."""
    if split not in SPLITS:
        raise DataError(f"Shapes split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    return {
        "image_dir": root / "images" / split,
        "instances_json": root / "annotations" / f"instances_{split}.json",
        "stuff_json": root / "annotations" / f"stuff_{split}.json",
        "captions_json": root / "annotations" / f"captions_{split}.json",
    }


# -- reading it back ---------------------------------------------------------------------------------
def _descriptions(paths: dict[str, Path], vocab: Vocab, kept: set) -> dict[int, dict[tuple, str]]:
    """image_id -> {(vocab index, bbox): description} from the instances and stuff JSON."""
    out: dict[int, dict[tuple, str]] = {}
    for key in ("instances_json", "stuff_json"):
        data = read_json(paths[key], key.replace("_json", " JSON"))
        names = {c["id"]: c["name"] for c in data["categories"]}
        for a in data["annotations"]:
            if a.get("description") and a["image_id"] in kept:
                k = (vocab.object_index(names[a["category_id"]]), tuple(float(v) for v in a["bbox"]))
                out.setdefault(a["image_id"], {})[k] = a["description"]
    return out


class ShapesDataset(CocoSceneGraphDataset):
    """The Shapes dataset at ``root`` read through the COCO loader, with per-object descriptions.

    Items are ``CocoSceneGraphDataset``'s, with ``descriptions`` filled in ("a red circle",
    "the sky"; None for ``__image__``). The defaults keep every image: no minimum box area and
    up to 11 objects (8 things and 3 stuff regions). ``image_size`` None: the size the dataset
    was drawn at. ``kwargs`` go to ``CocoSceneGraphDataset`` (``mask_size``, ``seed``, ...).
    """

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None, **kwargs):
        root = Path(root)
        meta = read_meta(root)
        if meta is None or meta.get("dataset") != "layout2img-shapes":
            raise DataError(f"{root}: not a Shapes dataset (no valid meta.json); "
                            f"write one with `layout2img prepare shapes --out {root}`")
        paths = shapes_paths(root, split)
        for key, p in paths.items():
            if not p.exists():
                raise DataError(f"{p}: missing from the Shapes dataset ({key}); "
                                "prepare it again with --overwrite")
        options = dict(min_object_size=0.0, min_objects=3, max_objects=11, stuff_only=True)
        options.update(kwargs)
        options["vocab"] = options.get("vocab") or Vocab.shapes()
        options.pop("split", None)  # the COCO loader's split is sg2im's val/test cut, not ours
        self.root, self.shapes_split = root, split
        super().__init__(
            paths["image_dir"], paths["instances_json"], paths["stuff_json"], paths["captions_json"],
            image_size=int(image_size or meta.get("size", 64)), **options,
        )
        self._descriptions = _descriptions(paths, self.vocab, set(self.image_ids))

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        table = self._descriptions.get(item["image_id"], {})
        descs = [table.get((cls, bbox)) for cls, bbox, _ in self.objects_of(item["image_id"])]
        item["descriptions"] = descs + [None] * (len(item["objs"]) - len(descs))
        return item
