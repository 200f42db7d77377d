"""COCO-Stuff scene graphs with the sg2im / LostGAN protocol.

Each item is one image with its annotated objects (things from ``instances_json``, stuff from
``stuff_json``) turned into a scene graph on the fly: one random geometric relation per object
plus an ``__in_image__`` triple per object (see ``data/batch.py`` for the item format).

The protocol, every knob configurable (defaults are sg2im's):

* an object is kept when its category is used (not ``"other"`` unless ``include_other``; in the
  whitelist when one is given), it is not a crowd region when ``drop_crowd`` (LostGAN), and its
  box covers strictly more than ``min_object_size`` of the image (``w*h / (W*H)``);
* an image is kept when it is in ``image_ids_file`` (if given), has at least one stuff annotation
  (``stuff_only``, only with a ``stuff_json``; counted before the object filters, as sg2im does),
  and keeps ``min_objects <= n <= max_objects`` objects. ``n`` does not count ``__image__`` (as in
  sg2im), so an item has up to ``max_objects + 1`` objects;
* ``split='val'`` keeps the first ``val_size`` (1024) of the kept image ids in sorted order,
  ``'test'`` the rest (sg2im's val2017 split); ``max_samples`` then truncates.

Masks are the annotation (polygons, RLE or crowd RLE, decoded with pycocotools) cropped to the
box rounded to pixels and reduced to ``mask_size``² by area averaging, thresholded at 0.5; a thin
object that would vanish keeps every cell it touches. Relations use the mask centroids.
Randomness (relations, the caption) is a function of ``(seed, epoch, image_id)`` only.
"""
from __future__ import annotations

import random
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from ..io import read_json
from ..relations import sample_relations
from ..vocab import GEOMETRIC_PREDICATES, IMAGE_OBJECT, IN_IMAGE, Vocab, suggest_name
from .coco_annotations import (crop_mask, decode_segmentation, load_image, mask_centers, read_image_ids,
                               require_field, require_list)

OTHER = "other"  # COCO-Stuff category 183: every non-stuff pixel; noisy, dropped by default

#: ``stats()`` keys, in filter order: images first, then annotations.
IMAGE_STATS = ("images", "dropped_not_in_id_list", "id_list_entries_not_in_json", "dropped_no_stuff",
               "dropped_too_few_objects", "dropped_too_many_objects", "dropped_by_split",
               "dropped_by_max_samples", "kept")
OBJECT_STATS = ("annotations", "objects_dropped_other", "objects_dropped_not_whitelisted",
                "objects_dropped_crowd", "objects_dropped_small", "objects_kept")

THINGS_ONLY_NOTICE = (
    "CocoSceneGraphDataset: stuff_json=None, so things only: objects come from instances_json "
    "alone and stuff_only does not apply"
)


# -- the dataset -----------------------------------------------------------------------------
class CocoSceneGraphDataset(Dataset):
    """COCO / COCO-Stuff images as scene graphs (sg2im / LostGAN protocol; module doc)."""

    def __init__(
        self,
        image_dir: str | Path,
        instances_json: str | Path,
        stuff_json: str | Path | None = None,
        captions_json: str | Path | None = None,
        image_size: int = 64,
        *,
        mask_size: int = 16,
        vocab: Vocab | None = None,
        min_object_size: float = 0.02,
        min_objects: int = 3,
        max_objects: int = 8,
        include_other: bool = False,
        stuff_only: bool = True,
        instance_whitelist: Iterable[str] | None = None,
        stuff_whitelist: Iterable[str] | None = None,
        drop_crowd: bool = False,
        image_ids_file: str | Path | None = None,
        split: str | None = None,
        val_size: int = 1024,
        include_relationships: bool = True,
        seed: int = 0,
        max_samples: int | None = None,
    ):
        super().__init__()
        self.image_size = _check_size(image_size, "image_size")
        self.mask_size = _check_size(mask_size, "mask_size")
        if not 0 <= float(min_object_size) < 1:
            raise ConfigError(f"min_object_size must be in [0, 1), got {min_object_size}")
        if min_objects < 0 or max_objects < min_objects:
            raise ConfigError(f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
        if split not in (None, "val", "test"):
            raise ConfigError(f"split must be None, 'val' or 'test', got {split!r}")
        if val_size < 0:
            raise ConfigError(f"val_size must be >= 0, got {val_size}")
        if max_samples is not None and max_samples < 0:
            raise ConfigError(f"max_samples must be >= 0 or None, got {max_samples}")
        self.image_dir = Path(image_dir)
        self.instances_json = Path(instances_json)
        self.stuff_json = Path(stuff_json) if stuff_json not in (None, "") else None
        self.captions_json = Path(captions_json) if captions_json not in (None, "") else None
        self.min_object_size = float(min_object_size)
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.include_other = bool(include_other)
        self.drop_crowd = bool(drop_crowd)
        self.include_relationships = bool(include_relationships)
        self.split, self.val_size = split, int(val_size)
        self.seed = int(seed)
        self.epoch = 0
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        if self.stuff_json is None:
            warnings.warn(THINGS_ONLY_NOTICE, UserWarning, stacklevel=2)
        self.stuff_only = bool(stuff_only) and self.stuff_json is not None

        instances = read_json(self.instances_json, "instances JSON")
        stuff = read_json(self.stuff_json, "stuff JSON") if self.stuff_json else None
        sources = [(self.instances_json, instances, "thing")]
        if stuff is not None:
            sources.append((self.stuff_json, stuff, "stuff"))

        # images: instances first (their order is the dataset order, as in sg2im), then any only in stuff
        self._file: dict[int, str] = {}
        self._size: dict[int, tuple[int, int]] = {}
        order: list[int] = []
        for path, data, _ in sources:
            for i, rec in enumerate(require_list(data, "images", path)):
                where = f"images[{i}]"
                image_id = require_field(rec, "id", path, where)
                if image_id in self._file:
                    continue
                w, h = require_field(rec, "width", path, where), require_field(rec, "height", path, where)
                if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
                    raise DataError(f"{path}: {where} (id {image_id}) has width/height {w!r}/{h!r}")
                self._file[image_id] = str(require_field(rec, "file_name", path, where))
                self._size[image_id] = (int(w), int(h))
                order.append(image_id)

        self.vocab, cat_index, cat_drop = self._categories(
            sources, vocab, instance_whitelist, stuff_whitelist)

        # objects: (vocab index, bbox, segmentation) per image, already filtered
        self._objects: dict[int, list[tuple[int, tuple[float, ...], Any]]] = defaultdict(list)
        obj_stats = dict.fromkeys(OBJECT_STATS, 0)
        with_stuff: set[int] = set()
        for path, data, kind in sources:
            for i, ann in enumerate(require_list(data, "annotations", path)):
                where = f"annotations[{i}]"
                image_id = require_field(ann, "image_id", path, where)
                cat_id = require_field(ann, "category_id", path, where)
                bbox = require_field(ann, "bbox", path, where)
                if image_id not in self._size:
                    raise DataError(f"{path}: {where} refers to image_id {image_id}, which is not in 'images'")
                if cat_id not in cat_index and cat_id not in cat_drop:
                    raise DataError(f"{path}: {where} has category_id {cat_id}, which is not in 'categories'")
                if kind == "stuff":
                    with_stuff.add(image_id)
                obj_stats["annotations"] += 1
                if cat_id in cat_drop:
                    obj_stats[cat_drop[cat_id]] += 1
                    continue
                if self.drop_crowd and ann.get("iscrowd", 0) == 1:
                    obj_stats["objects_dropped_crowd"] += 1
                    continue
                if not (isinstance(bbox, list) and len(bbox) == 4
                        and all(isinstance(v, (int, float)) for v in bbox)):
                    raise DataError(f"{path}: {where} has bbox {bbox!r}, expected [x, y, width, height]")
                w_img, h_img = self._size[image_id]
                if bbox[2] * bbox[3] / (w_img * h_img) <= self.min_object_size:
                    obj_stats["objects_dropped_small"] += 1
                    continue
                seg = require_field(ann, "segmentation", path, where)
                self._objects[image_id].append((cat_index[cat_id], tuple(float(v) for v in bbox), seg))

        # images, filter by filter, counting what each one drops
        stats = dict.fromkeys(IMAGE_STATS, 0)
        stats["images"] = len(order)
        ids = order
        if image_ids_file is not None:
            wanted = set(read_image_ids(image_ids_file))
            stats["id_list_entries_not_in_json"] = len(wanted - set(ids))
            ids = _keep(ids, lambda i: i in wanted, stats, "dropped_not_in_id_list")
        if self.stuff_only:
            ids = _keep(ids, lambda i: i in with_stuff, stats, "dropped_no_stuff")
        ids = _keep(ids, lambda i: len(self._objects.get(i, ())) >= self.min_objects,
                    stats, "dropped_too_few_objects")
        ids = _keep(ids, lambda i: len(self._objects.get(i, ())) <= self.max_objects,
                    stats, "dropped_too_many_objects")
        if split is not None:
            val_ids = set(sorted(ids)[: self.val_size])
            ids = _keep(ids, (lambda i: i in val_ids) if split == "val" else (lambda i: i not in val_ids),
                        stats, "dropped_by_split")
        if max_samples is not None:
            stats["dropped_by_max_samples"] = max(0, len(ids) - max_samples)
            ids = ids[:max_samples]
        stats["kept"] = len(ids)
        stats.update(obj_stats)
        stats["objects_kept"] = sum(len(self._objects[i]) for i in ids)
        self._stats = stats
        self.image_ids: list[int] = ids

        kept = set(ids)  # free what the kept images do not need
        self._objects = {i: self._objects.get(i, []) for i in ids}
        self._file = {i: f for i, f in self._file.items() if i in kept}
        self._size = {i: s for i, s in self._size.items() if i in kept}
        self._captions = self._read_captions(kept)
        if ids:
            first = self.image_dir / self._file[ids[0]]
            if not first.is_file():
                raise DataError(
                    f"{first}: image file not found (image_id {ids[0]} of {self.instances_json}); "
                    f"is image_dir the folder that holds these images?"
                )

    # -- index building ------------------------------------------------------------------------
    def _categories(self, sources, vocab, instance_whitelist, stuff_whitelist):
        """Map category ids to vocabulary indices by name; say why unused ones are dropped."""
        names: dict[int, str] = {}
        kinds: dict[int, str] = {}
        origin: dict[int, Path] = {}
        for path, data, kind in sources:
            for i, rec in enumerate(require_list(data, "categories", path)):
                cid = require_field(rec, "id", path, f"categories[{i}]")
                name = str(require_field(rec, "name", path, f"categories[{i}]"))
                if cid in names and names[cid] != name:
                    raise DataError(f"{path}: category id {cid} is {name!r} here but {names[cid]!r} "
                                    f"in {origin[cid]}")
                names[cid], kinds[cid], origin[cid] = name, kind, path
        whitelists = {"thing": instance_whitelist, "stuff": stuff_whitelist}
        for kind, wl in whitelists.items():
            if wl is None or (kind == "stuff" and self.stuff_json is None):
                continue
            if isinstance(wl, str):
                raise ConfigError(f"{'instance' if kind == 'thing' else 'stuff'}_whitelist must be a list of "
                                  f"names, got the string {wl!r}")
            known = tuple(sorted(n for c, n in names.items() if kinds[c] == kind))
            for n in wl:
                if n not in known:
                    label = "instance" if kind == "thing" else "stuff"
                    raise ConfigError(f"{label}_whitelist: {n!r} is not a category of "
                                      f"{self.instances_json if kind == 'thing' else self.stuff_json}"
                                      f"{suggest_name(n, known)}")
        drop: dict[int, str] = {}
        for cid, name in names.items():
            wl = whitelists[kinds[cid]]
            if name == OTHER and not self.include_other:
                drop[cid] = "objects_dropped_other"
            elif wl is not None and name not in set(wl):
                drop[cid] = "objects_dropped_not_whitelisted"
        used = {cid: names[cid] for cid in sorted(names) if cid not in drop}
        if vocab is None:
            coco = Vocab.coco_stuff(self.include_other)
            if all(coco.has_object(n) for n in used.values()):
                vocab = coco
            else:  # a dataset with its own categories (e.g. Shapes in COCO format)
                vocab = _vocab_from_categories(used, kinds, self.instances_json.name)
        if self.include_relationships:
            missing = [p for p in GEOMETRIC_PREDICATES if not vocab.has_predicate(p)]
            if missing:
                raise DataError(f"vocabulary {vocab.name!r} lacks the predicates {missing} that COCO "
                                f"relations use (or pass include_relationships=False)")
        index = {}
        for cid, name in used.items():
            if not vocab.has_object(name):
                raise DataError(f"{origin[cid]}: category {cid} {name!r} is not in vocabulary "
                                f"{vocab.name!r}{vocab.suggest_object(name)}")
            index[cid] = vocab.object_index(name)
        return vocab, index, drop

    def _read_captions(self, kept: set[int]) -> dict[int, list[str]]:
        if self.captions_json is None:
            return {}
        data = read_json(self.captions_json, "captions JSON")
        captions: dict[int, list[str]] = defaultdict(list)
        for i, ann in enumerate(require_list(data, "annotations", self.captions_json)):
            image_id = require_field(ann, "image_id", self.captions_json, f"annotations[{i}]")
            text = require_field(ann, "caption", self.captions_json, f"annotations[{i}]")
            if image_id in kept and isinstance(text, str) and text.strip():
                captions[image_id].append(" ".join(text.split()))
        return dict(captions)

    # -- public --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Vary the sampled relations and caption per epoch (still deterministic)."""
        self.epoch = int(epoch)

    def stats(self) -> dict[str, int]:
        """How many images were kept and how many each filter dropped (and the same for objects)."""
        return dict(self._stats)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        s = self._stats
        files = self.instances_json.name + (f" + {self.stuff_json.name}" if self.stuff_json else " (things only)")
        lines = [f"CocoSceneGraphDataset({s['kept']} images from {files}; image_size={self.image_size}, "
                 f"mask_size={self.mask_size}, objects {self.min_objects}-{self.max_objects} "
                 f"with box area > {self.min_object_size:g}{', no crowd' if self.drop_crowd else ''}"
                 f"{f', split={self.split}' if self.split else ''})",
                 f"  images in JSON: {s['images']}"]
        lines += [f"  {k.replace('_', ' ')}: {v}" for k, v in s.items()
                  if k.startswith(("dropped", "id_list")) and v]
        lines.append(f"  annotations: {s['annotations']}, objects kept: {s['objects_kept']}")
        lines += [f"  {k.replace('_', ' ')}: {v}" for k, v in s.items() if k.startswith("objects_dropped") and v]
        return "\n".join(lines)

    def captions_of(self, image_id: int) -> list[str]:
        return list(self._captions.get(image_id, ()))

    def objects_of(self, image_id: int) -> list[tuple[int, tuple[float, ...], Any]]:
        """A kept image's objects in item order: ``(vocab index, COCO bbox, segmentation)`` each."""
        return list(self._objects[image_id])

    def __getitem__(self, index: int) -> dict:
        n = len(self.image_ids)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        image_id = self.image_ids[index % n]
        width, height = self._size[image_id]
        image = load_image(self.image_dir / self._file[image_id], self.image_size)

        objs, boxes, masks = [], [], []
        for cls, bbox, seg in self._objects[image_id]:
            x, y, w, h = bbox
            # Boxes use the annotated size, so pre-resized image folders still line up.
            boxes.append([min(max(v, 0.0), 1.0) for v in (x / width, y / height, (x + w) / width, (y + h) / height)])
            masks.append(crop_mask(decode_segmentation(seg, height, width), bbox, self.mask_size))
            objs.append(cls)
        num_real = len(objs)
        objs.append(self.vocab.object_index(IMAGE_OBJECT))
        boxes.append([0.0, 0.0, 1.0, 1.0])
        masks.append(torch.ones(self.mask_size, self.mask_size))
        objs_t = torch.tensor(objs, dtype=torch.long)
        boxes_t = torch.tensor(boxes, dtype=torch.float32)
        masks_t = torch.stack(masks)

        triples = []
        if self.include_relationships and num_real >= 2:
            rng = random.Random(f"coco:{self.seed}:{self.epoch}:{image_id}:relations")
            centers = mask_centers(boxes_t[:num_real], masks_t[:num_real])
            for s, pred, o in sample_relations(boxes_t[:num_real].tolist(), rng, centers):
                triples.append([s, self.vocab.predicate_index(pred), o])
        in_image = self.vocab.predicate_index(IN_IMAGE)
        triples += [[i, in_image, num_real] for i in range(num_real)]

        captions = self.captions_of(image_id)
        caption = None
        if captions:
            caption = random.Random(f"coco:{self.seed}:{self.epoch}:{image_id}:caption").choice(captions)
        return {
            "image": image,
            "objs": objs_t,
            "boxes": boxes_t,
            "masks": masks_t,
            "triples": torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
            "caption": caption,
            "captions": captions,
            "descriptions": [None] * len(objs),
            "image_id": image_id,
        }


def _check_size(value: Any, name: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConfigError(f"{name} must be one int (images are square), got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def _keep(ids: list[int], pred, stats: dict[str, int], key: str) -> list[int]:
    kept = [i for i in ids if pred(i)]
    stats[key] = len(ids) - len(kept)
    return kept


def _vocab_from_categories(used: dict[int, str], kinds: dict[int, str], name: str) -> Vocab:
    """A vocabulary of the JSON's own categories, in category-id order."""
    ordered = sorted(used)
    num_things = None
    things = [c for c in ordered if kinds[c] == "thing"]
    stuff = [c for c in ordered if kinds[c] == "stuff"]
    if stuff and (not things or max(things) < min(stuff)):
        num_things = len(things)
    unique = list(dict.fromkeys(used[c] for c in ordered))  # one entry per name
    return Vocab((IMAGE_OBJECT, *unique), (IN_IMAGE, *GEOMETRIC_PREDICATES), name=name, num_things=num_things)
