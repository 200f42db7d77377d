"""Visual Genome -> ``{split}.h5`` + ``vocab.json``, by sg2im's preprocessing protocol
(``layout2img prepare vg``; ``datasets/prepare_vg.py`` is the same command).

Inputs (the official VG download, all in ``--vg-dir``): ``image_data.json``, ``objects.json``,
``attributes.json``, ``relationships.json``, ``object_alias.txt``, ``relationship_alias.txt``.

The protocol (sg2im ``scripts/preprocess_vg.py``), in order:

1. Splits: a splits JSON ``{"train": [image ids], "val": [...], "test": [...]}`` (sg2im uses
   densecap's ``vg_splits.json``), or, when none is given, a seeded shuffle of all image ids cut
   by ``split_fractions``.
2. Images whose shorter side is below ``image_size_min`` px leave every split.
3. Object vocabulary: names mapped through ``object_alias.txt``, each name counted once per object,
   over the *train* images only; names with ``>= min_object_instances`` instances are kept.
4. Attribute vocabulary: the same over train images (``min_attribute_instances``); names are kept
   verbatim, as sg2im does ('white' and 'white ' are two attributes).
5. Objects: named by their first (aliased) name in the vocabulary; dropped when no name is in it or
   when the box is narrower or lower than ``min_object_size`` px.
6. Predicate vocabulary: predicates lower-cased, stripped and mapped through
   ``relationship_alias.txt``; counted over train relationships whose two ends survived step 5
   (``min_relationship_instances``).
7. Images keep ``min_objects..max_objects`` objects and ``min_relationships..max_relationships``
   relationships, or are dropped.

Differences from sg2im's script, all deliberate: vocabulary ties are ordered by name (sg2im: file
order; predicates sg2im lists in file order, we by count), so the output does not depend on the
order of the JSON files (``--vocab vg`` encodes with sg2im's shipped vocabulary instead); predicates are normalised in every split (sg2im normalises only the train
split, so val/test relationships written 'ON' were lost); attributes are stored per image and object
(sg2im's ``object_attributes`` is one flat list that does not line up with the images).

HDF5 layout (one file per split; ``-1`` pads every per-image array):

======================================  =============================================================
``image_ids`` (N,)                      VG image ids
``image_paths`` (N,) str                ``VG_100K/1.jpg``: relative to the images folder
``image_widths``, ``image_heights``     from ``image_data.json``
``object_ids`` (N, O)                   VG object ids
``object_names`` (N, O)                 object vocabulary indices
``object_boxes`` (N, O, 4)              ``[x, y, w, h]`` in pixels of the original image
``objects_per_image`` (N,)
``object_attributes`` (N, O, A)         attribute vocabulary indices
``attributes_per_object`` (N, O)
``relationship_ids`` (N, R)
``relationship_subjects`` (N, R)        index into the image's objects
``relationship_predicates`` (N, R)      predicate vocabulary indices
``relationship_objects`` (N, R)
``relationships_per_image`` (N,)
======================================  =============================================================

with ``O = max_objects``, ``R = max_relationships``, ``A = max_attributes_per_object``; the
thresholds and the vocabulary's names (JSON lists) are stored as the file's HDF5 attributes. Every output is written under a temporary name
and renamed into place only when all of them are complete.

Usage::

    layout2img prepare vg --vg-dir data/vg --out data/vg --splits-json data/vg/vg_splits.json
"""
from __future__ import annotations

import contextlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..io import atomic_path, read_json
from ..vocab import IMAGE_OBJECT, IN_IMAGE, Vocab
from .prepare_vg_files import (VG_FILES, load_aliases, read_attributes, read_images, read_objects,
                               read_relationships)

TRAIN_SPLIT = "train"
DEFAULT_SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train / val / test when no splits JSON is given
FORMAT_VERSION = 1


# -- splits ----------------------------------------------------------------------------------
def load_splits(path: Path, images: dict[int, dict]) -> dict[str, list[int]]:
    data = read_json(path, "splits file")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{path}: expected {{\"train\": [image ids], \"val\": [...], ...}}")
    if TRAIN_SPLIT not in data:
        raise DataError(f"{path}: no {TRAIN_SPLIT!r} split (the vocabulary is counted on it)")
    splits = {}
    for name, ids in data.items():
        splits[name] = [int(i) for i in ids]
        for image_id in splits[name]:
            if image_id not in images:
                raise DataError(f"{path}: split {name!r} names image {image_id}, "
                                f"which {VG_FILES['image_data']} lacks")
    return splits


def seeded_splits(image_ids: Iterable[int], fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Shuffle the sorted ids with ``seed`` and cut them train / val / test by ``fractions``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    ids = sorted(image_ids)
    random.Random(seed).shuffle(ids)
    n_train = round(fractions[0] * len(ids))
    n_val = round(fractions[1] * len(ids))
    return {"train": sorted(ids[:n_train]), "val": sorted(ids[n_train:n_train + n_val]),
            "test": sorted(ids[n_train + n_val:])}


# -- vocabularies ----------------------------------------------------------------------------
def _train_vocabulary(name_sets, min_count: int) -> list[str]:
    """The names of at least ``min_count`` instances (one name set per instance), by :func:`_frequent`."""
    counts = Counter()
    for names in name_sets:
        counts.update(names)
    return _frequent(counts, min_count)


def _frequent(counter: Counter, min_count: int) -> list[str]:
    """Names with ``>= min_count`` instances, most frequent first, ties by name (stable output)."""
    return [n for n, c in sorted(counter.items(), key=lambda nc: (-nc[1], nc[0])) if c >= min_count]


def _pad(rows: list[list], width: int, fill) -> list[list]:
    return rows + [fill] * (width - len(rows))


# -- the whole protocol ----------------------------------------------------------------------
def prepare_visual_genome(
    vg_dir: str | Path,
    out_dir: str | Path,
    *,
    splits_json: str | Path | None = None,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    split_seed: int = 0,
    min_object_instances: int = 2000,
    min_attribute_instances: int = 2000,
    min_relationship_instances: int = 500,
    min_object_size: int = 32,
    min_objects: int = 3,
    max_objects: int = 30,
    min_relationships: int = 1,
    max_relationships: int = 30,
    max_attributes_per_object: int = 30,
    image_size_min: int = 200,
    vocab: Vocab | str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the protocol (module doc); write ``{split}.h5`` and ``vocab.json`` into ``out_dir``.

    With ``vocab`` (a :class:`Vocab`, ``'vg'`` for sg2im's, or a vocab.json path) the names and
    indices come from it instead of being counted (the ``min_*_instances`` thresholds are unused),
    so the files match models trained with that vocabulary.

    Returns a summary: ``{"splits": {name: {"images": kept, "skipped": {reason: count}}},
    "vocab": {"objects": n, "predicates": n, "attributes": n}, "files": [paths]}``.
    """
    vg_dir, out_dir = Path(vg_dir), Path(out_dir)
    if not vg_dir.is_dir():
        raise DataError(f"{vg_dir}: Visual Genome folder not found")
    paths = {key: vg_dir / name for key, name in VG_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path}: file not found (download it from visualgenome.org)")
    if min_objects > max_objects or min_relationships > max_relationships:
        raise ConfigError("min_objects/min_relationships must not exceed max_objects/max_relationships")
    if vocab is not None and not isinstance(vocab, Vocab):
        vocab = Vocab.by_name(str(vocab))

    images = read_images(paths["image_data"], progress)
    if splits_json is not None:
        splits = load_splits(Path(splits_json), images)
        split_source = str(splits_json)
    else:
        splits = seeded_splits(images, split_fractions, split_seed)
        split_source = f"seeded: fractions={list(split_fractions)} seed={split_seed}"
    skipped = {name: Counter() for name in splits}
    for name, ids in splits.items():
        kept = [i for i in ids if min(images[i]["width"], images[i]["height"]) >= image_size_min]
        skipped[name]["image_too_small"] = len(ids) - len(kept)
        splits[name] = kept
    train_ids = set(splits[TRAIN_SPLIT])
    all_ids = set().union(*splits.values())

    obj_aliases = load_aliases(paths["object_aliases"])
    rel_aliases = load_aliases(paths["relationship_aliases"])

    # Objects: vocabulary from the train split, then name and size filtering everywhere.
    objects = read_objects(paths["objects"], progress)
    if vocab is not None:
        object_names = list(vocab.object_names)
    else:
        object_names = [IMAGE_OBJECT] + _train_vocabulary(
            ({obj_aliases.get(n, n) for n in names} for image_id in train_ids
             for _, names, _ in objects.get(image_id, ())), min_object_instances)
    if len(object_names) == 1:
        raise DataError(f"no object name has >= {min_object_instances} instances in the "
                        f"{len(train_ids)} train images; lower --min-object-instances")
    object_index = {n: i for i, n in enumerate(object_names) if n != IMAGE_OBJECT}

    kept_objects = {}  # image id -> [(object id, name index, box)]
    for image_id in all_ids:
        kept = []
        for object_id, names, box in objects.get(image_id, ()):
            idx = next((object_index[a] for a in (obj_aliases.get(n, n) for n in names)
                        if a in object_index), None)
            if idx is not None and box[2] >= min_object_size and box[3] >= min_object_size:
                kept.append((object_id, idx, box))
        kept_objects[image_id] = kept
    del objects

    attributes = read_attributes(paths["attributes"], progress)
    if vocab is not None:
        attribute_names = list(vocab.attribute_names)
    else:
        attribute_names = _train_vocabulary(
            (set(names) for image_id in train_ids for names in attributes.get(image_id, {}).values()),
            min_attribute_instances)
    attribute_index = {n: i for i, n in enumerate(attribute_names)}

    relationships = read_relationships(paths["relationships"], rel_aliases, progress)
    if vocab is not None:
        predicate_names = list(vocab.predicate_names)
    else:
        pred_counts = Counter()
        for image_id in train_ids:
            alive = {o[0] for o in kept_objects[image_id]}
            for _, s, pred, o in relationships.get(image_id, ()):
                if s in alive and o in alive:
                    pred_counts[pred] += 1
        predicate_names = [IN_IMAGE] + [p for p in _frequent(pred_counts, min_relationship_instances)
                                        if p != IN_IMAGE]
    predicate_index = {n: i for i, n in enumerate(predicate_names) if n != IN_IMAGE}

    vocab = Vocab(object_names, predicate_names, attribute_names, name="visual-genome")
    arrays = {}
    for split, ids in splits.items():
        rows = defaultdict(list)
        for image_id in tqdm(ids, desc=f"encode {split}", disable=not progress):
            objs = kept_objects[image_id]
            if not min_objects <= len(objs) <= max_objects:
                skipped[split]["too_few_objects" if len(objs) < min_objects else "too_many_objects"] += 1
                continue
            local = {object_id: k for k, (object_id, _, _) in enumerate(objs)}
            rels = [(rid, local[s], predicate_index[p], local[o])
                    for rid, s, p, o in relationships.get(image_id, ())
                    if p in predicate_index and s in local and o in local]
            if not min_relationships <= len(rels) <= max_relationships:
                skipped[split]["too_few_relationships" if len(rels) < min_relationships
                               else "too_many_relationships"] += 1
                continue
            image_attrs = attributes.get(image_id, {})
            obj_attrs = []
            for object_id, _, _ in objs:
                idxs = list(dict.fromkeys(attribute_index[a] for a in image_attrs.get(object_id, ())
                                          if a in attribute_index))[:max_attributes_per_object]
                obj_attrs.append(idxs)
            rows["image_ids"].append(image_id)
            rows["image_paths"].append(images[image_id]["path"])
            rows["image_widths"].append(images[image_id]["width"])
            rows["image_heights"].append(images[image_id]["height"])
            rows["object_ids"].append(_pad([o[0] for o in objs], max_objects, -1))
            rows["object_names"].append(_pad([o[1] for o in objs], max_objects, -1))
            rows["object_boxes"].append(_pad([o[2] for o in objs], max_objects, [-1] * 4))
            rows["objects_per_image"].append(len(objs))
            rows["object_attributes"].append(_pad([_pad(a, max_attributes_per_object, -1) for a in obj_attrs],
                                                  max_objects, [-1] * max_attributes_per_object))
            rows["attributes_per_object"].append(_pad([len(a) for a in obj_attrs], max_objects, -1))
            for key, col in (("relationship_ids", 0), ("relationship_subjects", 1),
                             ("relationship_predicates", 2), ("relationship_objects", 3)):
                rows[key].append(_pad([r[col] for r in rels], max_relationships, -1))
            rows["relationships_per_image"].append(len(rels))
        arrays[split] = _to_numpy(rows, max_objects, max_relationships, max_attributes_per_object)

    attrs = dict(
        format_version=FORMAT_VERSION, split_source=split_source,
        min_object_instances=min_object_instances, min_attribute_instances=min_attribute_instances,
        min_relationship_instances=min_relationship_instances, min_object_size=min_object_size,
        min_objects=min_objects, max_objects=max_objects, min_relationships=min_relationships,
        max_relationships=max_relationships, max_attributes_per_object=max_attributes_per_object,
        image_size_min=image_size_min,
        # The names behind the indices: the dataset refuses a vocabulary that does not match them.
        vocab_object_names=json.dumps(object_names), vocab_predicate_names=json.dumps(predicate_names),
        vocab_attribute_names=json.dumps(attribute_names),
    )
    files = [out_dir / f"{split}.h5" for split in arrays] + [out_dir / "vocab.json"]
    # Every file goes to a temporary name first; all are renamed only once all are complete.
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(f)) for f in files]
        for (split, split_arrays), tmp in zip(arrays.items(), tmps):
            _write_h5(tmp, split, split_arrays, attrs)
        tmps[-1].write_text(json.dumps(vocab.to_dict(), indent=1), encoding="utf-8")
    return {
        "splits": {s: {"images": int(len(arrays[s]["image_ids"])), "skipped": dict(skipped[s])} for s in arrays},
        "vocab": {"objects": vocab.num_objects, "predicates": vocab.num_predicates,
                  "attributes": len(vocab.attribute_names)},
        "files": [str(f) for f in files],
    }


def _to_numpy(rows: dict, max_objects: int, max_relationships: int, max_attributes: int) -> dict:
    shapes = {
        "image_ids": (), "image_widths": (), "image_heights": (), "objects_per_image": (),
        "relationships_per_image": (), "object_ids": (max_objects,), "object_names": (max_objects,),
        "object_boxes": (max_objects, 4), "object_attributes": (max_objects, max_attributes),
        "attributes_per_object": (max_objects,), "relationship_ids": (max_relationships,),
        "relationship_subjects": (max_relationships,), "relationship_predicates": (max_relationships,),
        "relationship_objects": (max_relationships,),
    }
    out = {k: np.asarray(rows[k], dtype=np.int32).reshape((-1, *shape)) for k, shape in shapes.items()}
    out["image_paths"] = list(rows["image_paths"])
    return out


def _write_h5(path: Path, split: str, arrays: dict, attrs: dict) -> None:
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            if name == "image_paths":
                f.create_dataset(name, data=np.array(value, dtype=object), dtype=h5py.string_dtype(),
                                 shape=(len(value),))
            else:
                f.create_dataset(name, data=value)
        f.attrs.update(attrs)
        f.attrs["split"] = split
