"""Check a dataset's files before a long run: every image and annotation of a config's splits, read once.

:func:`check_data` reads the files a run config's ``data:`` section names (each configured split:
train, val, test) and reports every problem as one line naming the file, and for annotations the
record: a missing or unreadable image (decoded in full, so a truncated file is caught), a missing
or malformed annotation file, an annotation whose image or category is not in the file, a box
outside its image or empty, a segmentation that does not fit its image (an RLE whose counts do
not add up to the image's pixels would make pycocotools write past its buffer). Training stops at
the first bad file it meets; this lists them all. ``layout2img check-data`` is its command.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

#: What a dataset error met during training adds to its line.
SPLITS = ("train", "val", "test")
#: How far (pixels) a COCO box may reach past its image: annotation tools round.
BOX_TOLERANCE = 1.0


@dataclass
class SplitReport:
    """What one split's check read and found."""

    split: str
    images: int = 0
    annotations: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class DataReport:
    splits: list[SplitReport]

    @property
    def problems(self) -> list[str]:
        return [p for s in self.splits for p in s.problems]

    def summary(self) -> str:
        """One line: the counts per split, and how many problems."""
        def problems(n: int) -> str:
            return f"{n or 'no'} problem{'' if n == 1 else 's'}"

        parts = [f"{s.split} {s.images} images, {s.annotations} annotations"
                 + (f" ({problems(len(s.problems))})" if s.problems else "") for s in self.splits]
        return f"{'; '.join(parts) or 'no splits configured'}: {problems(len(self.problems))}"


def check_data(data_cfg: Mapping[str, Any], *, progress: bool = True,
               on_problem: Callable[[str], None] | None = None) -> DataReport:
    """Check every configured split of a run config's ``data:`` section (a plain mapping);
    ``on_problem(line)`` sees each problem as it is found."""
    from ..errors import ConfigError

    kind = data_cfg.get("dataset")
    checks = {"shapes": _shapes_split, "coco": _coco_split, "vg": _vg_split}
    if kind not in checks:
        raise ConfigError(f"data.dataset: check-data knows {', '.join(checks)}, not {kind!r}")
    reports = []
    for split in SPLITS:
        if data_cfg.get(split) is None:
            continue
        rep = SplitReport(split)
        note = _Notes(rep, on_problem)
        checks[kind](data_cfg, split, note, progress)
        reports.append(rep)
    return DataReport(reports)


class _Notes:
    """Collects one split's problem lines and passes each on as it comes."""

    def __init__(self, rep: SplitReport, on_problem):
        self.rep, self.on_problem = rep, on_problem

    def __call__(self, line: str) -> None:
        self.rep.problems.append(line)
        if self.on_problem is not None:
            self.on_problem(line)


# -- images ----------------------------------------------------------------------------------------------
def read_image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` when the file decodes to the end, else ``(None, why)``."""
    from PIL import Image

    if not path.is_file():
        return None, "image file not found" if not path.exists() else "not a file"
    try:
        with Image.open(path) as im:
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: decode small, but every byte
            im.load()
    except Exception as e:  # noqa: BLE001 - a damaged file raises whatever its decoder meets
        return None, f"cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
    return size, None


def _bar(total: int, desc: str, progress: bool, unit: str = "img"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress or None, leave=False, dynamic_ncols=True)


# -- COCO (and Shapes, written as COCO) ----------------------------------------------------------------------
def _number(v: Any) -> bool:
    """A finite JSON number (an integer too large for a float is not one here)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _id(v: Any) -> int | str | None:
    """A COCO id (an integer or a string), or None for anything else (a list would not even hash)."""
    return v if isinstance(v, (int, str)) and not isinstance(v, bool) else None


def rle_counts(counts: str):
    """The run lengths (an int64 array) of a COCO compressed RLE string (pycocotools' format), or
    None when malformed.

    Each run is 5-bit groups, low first, in characters ``48 + value``; 0x20 says another group
    follows, 0x10 in the last one is the sign; from the fourth run on a run is stored as its
    difference to the run two before. Vectorised: COCO-Stuff has a million of these strings."""
    import numpy as np

    codes = np.frombuffer(counts.encode("latin-1", "replace"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return codes
    if codes.min() < 0 or codes.max() >= 64 or codes[-1] & 0x20:  # a stray character, or a run cut off
        return None
    last = (codes & 0x20) == 0  # the last group of each run
    starts = np.concatenate(([0], np.flatnonzero(last)[:-1] + 1))
    shift = 5 * (np.arange(codes.size) - np.repeat(starts, np.diff(np.append(starts, codes.size))))
    if shift.max() > 55:  # more groups than any image's run needs
        return None
    values = np.add.reduceat((codes & 0x1F) << shift, starts)
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (shift[ends][negative] + 5)
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run m = stored m + run m-2, from m = 3 on
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def segmentation_problem(seg: Any, width: int, height: int) -> str | None:
    """Why a COCO segmentation cannot be a mask of a ``width`` x ``height`` image, or None."""
    import numpy as np

    if isinstance(seg, list):  # polygons (ones under 3 points are skipped by the loader)
        for j, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(_number(v) for v in poly):
                return f"segmentation polygon {j} is not a list of numbers"
            if len(poly) % 2:
                return f"segmentation polygon {j} has an odd number of coordinates ({len(poly)})"
        return None
    if not isinstance(seg, dict) or "counts" not in seg:
        return f"segmentation is neither polygons nor RLE (a {type(seg).__name__})"
    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return f"RLE size {size!r} is not [height, width]"
    if size != [height, width]:
        return f"RLE size {size} is not the image's [{height}, {width}]"
    counts = seg["counts"]
    if isinstance(counts, list):  # uncompressed (crowd regions)
        ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62 for v in counts)
        runs = np.array(counts, dtype=np.int64) if ok else None
    else:
        runs = rle_counts(counts) if isinstance(counts, str) else None
    if runs is None or (runs < 0).any():
        return "RLE counts are malformed"
    if int(runs.sum()) != height * width:
        return f"RLE counts cover {int(runs.sum())} pixels, the image has {height * width}"
    return None


def box_problem(bbox: Any, width: int, height: int) -> str | None:
    """Why a COCO ``[x, y, w, h]`` box is malformed or outside its image, or None."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not [x, y, width, height]"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return f"bbox {bbox} is empty"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"bbox {bbox} is outside the {width}x{height} image"
    return None


def _coco_json(path: Path, note, what: str) -> dict | None:
    from ..errors import DataError
    from ..io import read_json

    try:
        data = read_json(path, what)
    except DataError as e:
        note(str(e))
        return None
    if not isinstance(data, dict):
        note(f"{path}: not a COCO {what} (expected a JSON object)")
        return None
    for key in ("images", "annotations") + (("categories",) if what != "captions JSON" else ()):
        if not isinstance(data.get(key), list):
            note(f"{path}: no {key!r} list (not a COCO {what})")
            return None
    return data


def _coco_images(path: Path, data: dict, images: dict, note) -> None:
    """Add ``id -> (file_name, width, height, json)`` of ``data['images']`` to ``images``."""
    for i, rec in enumerate(data["images"]):
        at = f"{path}: images[{i}]"
        if not isinstance(rec, dict):
            note(f"{at}: not a JSON object")
            continue
        image_id, name, w, h = (rec.get(k) for k in ("id", "file_name", "width", "height"))
        if _id(image_id) is None or not isinstance(name, str) or not name:
            note(f"{at}: needs an 'id' (integer or string) and a 'file_name'")
        elif not (_number(w) and _number(h) and w > 0 and h > 0):
            note(f"{at} (image_id {image_id}): width/height {w!r}/{h!r} are not positive numbers")
        elif image_id in images and images[image_id][0] != name:
            note(f"{at}: image_id {image_id} is {name!r} here but {images[image_id][0]!r} in {images[image_id][3]}")
        elif image_id not in images:
            images[image_id] = (name, int(w), int(h), path.name)


def _coco_annotations(path: Path, data: dict, images: dict, note, bar) -> int:
    """Check every annotation of an instances or stuff file; returns how many there were."""
    categories = {_id(c.get("id")) for c in data["categories"] if isinstance(c, dict)} - {None}
    for i, ann in enumerate(data["annotations"]):
        bar.update()
        at = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            note(f"{at}: not a JSON object")
            continue
        image_id = ann.get("image_id")
        if _id(image_id) not in images:
            note(f"{at}: image_id {image_id!r} is not in 'images'")
            continue
        _, w, h, _ = images[image_id]
        at = f"{at} (image_id {image_id})"
        if _id(ann.get("category_id")) not in categories:
            note(f"{at}: unknown category_id {ann.get('category_id')!r} (not in 'categories')")
        if (why := box_problem(ann.get("bbox"), w, h)) is not None:
            note(f"{at}: {why}")
        if "segmentation" not in ann:
            note(f"{at}: no 'segmentation'")
        elif (why := segmentation_problem(ann["segmentation"], w, h)) is not None:
            note(f"{at}: {why}")
    return len(data["annotations"])


def _coco_captions(path: Path, data: dict, note) -> int:
    for i, ann in enumerate(data["annotations"]):
        if not (isinstance(ann, dict) and "image_id" in ann and "caption" in ann):
            note(f"{path}: annotations[{i}]: needs 'image_id' and 'caption'")
    return len(data["annotations"])


def _check_coco_files(image_dir: Path, annotation_files: Iterable[Path], captions: Path | None, rep_note,
                      progress: bool, desc: str) -> None:
    note, rep = rep_note, rep_note.rep
    if not image_dir.is_dir():
        note(f"{image_dir}: image folder not found")
        return
    images: dict = {}
    loaded = []
    for path in annotation_files:
        data = _coco_json(path, note, "annotation JSON")
        if data is not None:
            _coco_images(path, data, images, note)
            loaded.append((path, data))
    with _bar(sum(len(d["annotations"]) for _, d in loaded), desc.replace("images", "annotations"), progress,
              "ann") as bar:
        for path, data in loaded:
            rep.annotations += _coco_annotations(path, data, images, note, bar)
    if captions is not None and (data := _coco_json(captions, note, "captions JSON")) is not None:
        rep.annotations += _coco_captions(captions, data, note)
    with _bar(len(images), desc, progress) as bar:
        for image_id, (name, _, _, source) in images.items():
            path = image_dir / name
            _, why = read_image_size(path)
            if why is not None:
                note(f"{path}: {why} (image_id {image_id} of {source})")
            rep.images += 1
            bar.update()


def _coco_split(cfg: Mapping[str, Any], split: str, note, progress: bool) -> None:
    from ..errors import DataError
    from .coco_annotations import read_image_ids

    section = dict(cfg[split])
    files = [Path(p) for p in (section.get("instances_json"), section.get("stuff_json")) if p]
    captions = Path(section["captions_json"]) if section.get("captions_json") else None
    if cfg.get("image_ids_file"):
        try:
            read_image_ids(cfg["image_ids_file"])
        except DataError as e:
            note(str(e))
    _check_coco_files(Path(section["image_dir"]), files, captions, note, progress, f"{split} images")


def _shapes_split(cfg: Mapping[str, Any], split: str, note, progress: bool) -> None:
    from .shapes import read_meta, shapes_paths

    root = Path(cfg["root"])
    if read_meta(root) is None:
        hint = " (training writes it on first use)" if cfg.get("prepare") else ""
        note(f"{root}: no Shapes dataset here (no valid meta.json){hint}; "
             f"write one with `layout2img prepare shapes --out {root}`")
        return
    paths = shapes_paths(root, split)
    _check_coco_files(paths["image_dir"], [paths["instances_json"], paths["stuff_json"]], paths["captions_json"],
                      note, progress, f"{split} images")


# -- Visual Genome ------------------------------------------------------------------------------------------
def _vg_split(cfg: Mapping[str, Any], split: str, note, progress: bool) -> None:
    from ..errors import Layout2ImgError
    from .vg import VisualGenomeDataset

    section = dict(cfg[split])
    try:
        ds = VisualGenomeDataset(section["h5_path"], cfg["vocab"], cfg["image_dir"])
    except Layout2ImgError as e:
        note(str(e))
        return
    rep, d = note.rep, ds.data
    h5 = ds.h5_path
    num_objects, num_predicates = ds.vocab.num_objects, ds.vocab.num_predicates
    with _bar(len(ds.image_paths), f"{split} images", progress) as bar:
        for i, name in enumerate(ds.image_paths):
            image_id = int(d["image_ids"][i])
            path = ds.image_dir / name
            size, why = read_image_size(path)
            rep.images += 1
            bar.update()
            if why is not None:
                note(f"{path}: {why} (image {image_id} of {h5.name})")
            n, r = int(d["objects_per_image"][i]), int(d["relationships_per_image"][i])
            rep.annotations += n + r
            at = f"{h5}: image {image_id} (index {i})"
            for k in range(n):
                label = int(d["object_names"][i, k])
                x, y, w, h = (float(v) for v in d["object_boxes"][i, k])
                if not 0 <= label < num_objects:
                    note(f"{at}: object {k} has class index {label}, outside the vocabulary's {num_objects}")
                if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                    note(f"{at}: object {k} has an empty or non-finite box {[x, y, w, h]}")
                elif size is not None and (x >= size[0] or y >= size[1] or x + w <= 0 or y + h <= 0):
                    # VG boxes often reach past the image (the loader clips them); one wholly outside is wrong
                    note(f"{at}: object {k} box {[x, y, w, h]} is outside the {size[0]}x{size[1]} image")
            for k in range(r):
                s, p, o = (int(d[key][i, k]) for key in ("relationship_subjects", "relationship_predicates",
                                                          "relationship_objects"))
                if not (0 <= s < n and 0 <= o < n):
                    note(f"{at}: relationship {k} joins objects {s} and {o}; the image has {n}")
                if not 0 <= p < num_predicates:
                    note(f"{at}: relationship {k} has predicate index {p}, outside the vocabulary's {num_predicates}")
