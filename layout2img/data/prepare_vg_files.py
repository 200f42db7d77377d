"""Reading Visual Genome's official files (``image_data.json``, ``objects.json``, ``attributes.json``,
``relationships.json``, the alias lists) into plain dicts, for :mod:`layout2img.data.prepare_vg`.

Every malformed entry is a :class:`DataError` naming the file, the image and the key.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from ..errors import DataError
from ..io import read_json

VG_FILES = {
    "image_data": "image_data.json",
    "objects": "objects.json",
    "attributes": "attributes.json",
    "relationships": "relationships.json",
    "object_aliases": "object_alias.txt",
    "relationship_aliases": "relationship_alias.txt",
}


# -- reading the official files ---------------------------------------------------------------
def _load_json_list(path: Path, progress: bool) -> list:
    if progress:
        print(f"Loading {path}", file=sys.stderr)
    data = read_json(path, "VG file")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of images, got {type(data).__name__}")
    return data


def _image_id(entry, path: Path, position: int) -> int:
    """The image id of a top-level entry; VG 1.0/1.2 files call it 'id', 1.4 'image_id'."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: entry {position} is a {type(entry).__name__}, not an object")
    image_id = entry.get("image_id", entry.get("id"))
    if image_id is None:
        raise DataError(f"{path}: entry {position} lacks key 'image_id'")
    return int(image_id)


def _require(entry: dict, keys: Iterable[str], path: Path, image_id: int, what: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: image {image_id}: {what} is a {type(entry).__name__}, not an object")
    for key in keys:
        if key not in entry:
            raise DataError(f"{path}: image {image_id}: {what} lacks key {key!r}")


def load_aliases(path: Path) -> dict[str, str]:
    """``a,b,c`` lines: every name on a line maps to the line's first name (sg2im's reading)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    aliases = {}
    for line in text.splitlines():
        names = [s.strip() for s in line.split(",")]
        if not names[0]:
            continue
        for name in names:
            aliases[name] = names[0]
    return aliases


def read_images(path: Path, progress: bool) -> dict[int, dict]:
    """image id -> {'width', 'height', 'path'}."""
    images = {}
    for i, entry in enumerate(tqdm(_load_json_list(path, progress), desc="images", disable=not progress)):
        image_id = _image_id(entry, path, i)
        _require(entry, ("width", "height", "url"), path, image_id, "the image entry")
        # sg2im's image_paths: the url's last folder and file name, e.g. 'VG_100K_2/1.jpg'.
        rel_path = "/".join(str(entry["url"]).rstrip("/").split("/")[-2:])
        try:
            width, height = int(entry["width"]), int(entry["height"])
        except (TypeError, ValueError):
            raise DataError(f"{path}: image {image_id}: width/height are not numbers") from None
        images[image_id] = {"width": width, "height": height, "path": rel_path}
    return images


def read_objects(path: Path, progress: bool) -> dict[int, list[tuple]]:
    """image id -> [(object id, names, [x, y, w, h]), ...] in file order."""
    out = {}
    for i, entry in enumerate(tqdm(_load_json_list(path, progress), desc="objects", disable=not progress)):
        image_id = _image_id(entry, path, i)
        _require(entry, ("objects",), path, image_id, "the image entry")
        objs = []
        for k, obj in enumerate(entry["objects"]):
            _require(obj, ("object_id", "x", "y", "w", "h"), path, image_id, f"object {k}")
            names = obj.get("names", [obj["name"]] if "name" in obj else None)
            if names is None:
                raise DataError(f"{path}: image {image_id}: object {k} lacks key 'names'")
            try:
                box = [int(round(float(obj[c]))) for c in ("x", "y", "w", "h")]
            except (TypeError, ValueError):
                raise DataError(f"{path}: image {image_id}: object {k} has a box that is not numbers") from None
            objs.append((int(obj["object_id"]), [str(n) for n in names], box))
        out[image_id] = objs
    return out


def read_attributes(path: Path, progress: bool) -> dict[int, dict[int, list[str]]]:
    """image id -> {object id: attribute names}; objects listed without attributes get []."""
    out = {}
    data = _load_json_list(path, progress)
    for i, entry in enumerate(tqdm(data, desc="attributes", disable=not progress)):
        image_id = _image_id(entry, path, i)
        _require(entry, ("attributes",), path, image_id, "the image entry")
        per_object = {}
        for k, obj in enumerate(entry["attributes"]):
            _require(obj, ("object_id",), path, image_id, f"attribute entry {k}")
            per_object[int(obj["object_id"])] = [str(a) for a in (obj.get("attributes") or [])]
        out[image_id] = per_object
    return out


def read_relationships(path: Path, aliases: dict[str, str], progress: bool) -> dict[int, list[tuple]]:
    """image id -> [(relationship id, subject object id, predicate, object object id), ...]."""
    out = {}
    data = _load_json_list(path, progress)
    for i, entry in enumerate(tqdm(data, desc="relationships", disable=not progress)):
        image_id = _image_id(entry, path, i)
        _require(entry, ("relationships",), path, image_id, "the image entry")
        rels = []
        for k, rel in enumerate(entry["relationships"]):
            _require(rel, ("predicate", "subject", "object"), path, image_id, f"relationship {k}")
            _require(rel["subject"], ("object_id",), path, image_id, f"relationship {k} subject")
            _require(rel["object"], ("object_id",), path, image_id, f"relationship {k} object")
            pred = str(rel["predicate"]).lower().strip()
            rels.append((int(rel.get("relationship_id", -1)), int(rel["subject"]["object_id"]),
                         aliases.get(pred, pred), int(rel["object"]["object_id"])))
        out[image_id] = rels
    return out
