"""Visual Genome scene graphs, read from the HDF5 files ``datasets/prepare_vg.py`` writes.

Sampling follows sg2im's ``VgSceneGraphDataset``: objects that take part in a relationship come
first (a random subset when there are more than ``max_objects``), then, with
``use_orphaned_objects``, objects without relationships fill the item up to ``max_objects``; the
``__image__`` object is appended last. ``max_objects`` counts real objects (sg2im's code also
ends with up to 10 real objects when 10 or more are related; it stops filling orphans at 9).

What VG lacks, and what the items carry instead:

* masks: VG has only boxes (DESIGN: "masks weakly supervised"). ``masks`` are all ones, i.e. the
  whole box, and the item says so with ``masks_are_boxes=True``; a mask loss should skip them.
* captions: VG has none; ``caption`` is built from the item's relationships, e.g.
  ``"man wearing shirt, tree behind fence"`` (the object names, when there are no relationships).
* descriptions: the object's attributes and name, e.g. ``"white cloud"``; None for objects
  without attributes and for ``__image__``. ``attributes`` lists the attribute names per object.

Sampling is a pure function of ``(seed, epoch, index)``: call :meth:`set_epoch` each epoch.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import CHECK_HINT, ConfigError, DataError
from ..vocab import IMAGE_OBJECT, IN_IMAGE, Vocab

_REQUIRED = (
    "image_ids", "object_names", "object_boxes", "objects_per_image", "relationship_subjects",
    "relationship_predicates", "relationship_objects", "relationships_per_image",
)


class VisualGenomeDataset(Dataset):
    """Items in the ``layout2img.data.batch`` format (see the module doc for VG's specifics)."""

    def __init__(
        self,
        h5_path: str | Path,
        vocab: Vocab | str | Path,
        image_dir: str | Path,
        image_size: int | tuple[int, int] = 64,
        max_objects: int = 10,
        max_samples: int | None = None,
        include_relationships: bool = True,
        use_orphaned_objects: bool = True,
        seed: int = 0,
        mask_size: int = 16,
    ):
        if max_objects < 1:
            raise ConfigError(f"VisualGenomeDataset: max_objects must be >= 1, got {max_objects}")
        self.h5_path = Path(h5_path)
        self.image_dir = Path(image_dir)
        if not isinstance(vocab, Vocab):
            if str(vocab).endswith(".json") and not Path(vocab).is_file():
                raise DataError(f"{vocab}: vocabulary file not found")
            vocab = Vocab.by_name(str(vocab))  # 'vg' (sg2im's) or a vocab.json path
        self.vocab = vocab
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.max_objects = max_objects
        self.max_samples = max_samples
        self.include_relationships = include_relationships
        self.use_orphaned_objects = use_orphaned_objects
        self.seed = seed
        self.mask_size = mask_size
        self.epoch = 0
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: Visual Genome image folder not found")
        self.data, self.image_paths, names = _read_h5(self.h5_path)
        self._check_vocab(names)
        self._image_obj = vocab.object_index(IMAGE_OBJECT)
        self._in_image = vocab.predicate_index(IN_IMAGE)

    def _check_vocab(self, h5_names: dict[str, list[str]]) -> None:
        # A file preprocessed with another vocab.json would silently mislabel every object.
        for kind, mine in (("object", self.vocab.object_names), ("predicate", self.vocab.predicate_names),
                           ("attribute", self.vocab.attribute_names)):
            theirs = h5_names.get(kind)
            if theirs is None or (kind == "attribute" and not mine):
                continue
            for i, (a, b) in enumerate(zip(theirs, mine)):
                if a != b:
                    raise DataError(f"{self.h5_path}: made with another vocabulary: its {kind} {i} is {a!r}, "
                                    f"vocabulary {self.vocab.name!r} has {b!r}")
            if len(theirs) > len(mine):
                raise DataError(f"{self.h5_path}: made with another vocabulary: {len(theirs)} {kind}s, "
                                f"vocabulary {self.vocab.name!r} has {len(mine)}")
        for key, limit, kind in (("object_names", self.vocab.num_objects, "objects"),
                                 ("relationship_predicates", self.vocab.num_predicates, "predicates"),
                                 ("object_attributes", len(self.vocab.attribute_names), "attributes")):
            values = self.data.get(key)
            if values is not None and values.size and values.max() >= limit:
                raise DataError(f"{self.h5_path}: {key} uses index {int(values.max())} but vocabulary "
                                f"{self.vocab.name!r} has {limit} {kind}; was it made with another vocab.json?")

    def set_epoch(self, epoch: int) -> None:
        """Pick the object sample of ``epoch`` (each epoch sees another subset of busy images)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.data["image_ids"])
        return n if self.max_samples is None else min(n, self.max_samples)

    @property
    def image_ids(self) -> list[int]:
        return [int(i) for i in self.data["image_ids"][: len(self)]]

    # -- one item --------------------------------------------------------------------------
    def sample_objects(self, index: int) -> list[int]:
        """Indices (into the image's objects in the HDF5) of the objects item ``index`` shows."""
        rng = random.Random(f"vg:{self.seed}:{self.epoch}:{index}")
        n_objs = int(self.data["objects_per_image"][index])
        n_rels = int(self.data["relationships_per_image"][index])
        related = set(self.data["relationship_subjects"][index, :n_rels].tolist())
        related |= set(self.data["relationship_objects"][index, :n_rels].tolist())
        orphans = [i for i in range(n_objs) if i not in related]
        related = sorted(related)
        if len(related) > self.max_objects:
            related = sorted(rng.sample(related, self.max_objects))
        chosen = related
        if self.use_orphaned_objects and len(chosen) < self.max_objects:
            k = min(self.max_objects - len(chosen), len(orphans))
            chosen = chosen + sorted(rng.sample(orphans, k))
        return chosen

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, (width, height) = self._load_image(index)
        chosen = self.sample_objects(index)
        local = {obj: k for k, obj in enumerate(chosen)}
        n = len(chosen) + 1  # + __image__

        objs = torch.empty(n, dtype=torch.long)
        boxes = torch.empty(n, 4)
        for k, obj in enumerate(chosen):
            objs[k] = int(self.data["object_names"][index, obj])
            x, y, w, h = (float(v) for v in self.data["object_boxes"][index, obj])
            # VG boxes may reach past the image; the convention is boxes inside [0, 1].
            boxes[k] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height]).clamp(0, 1)
        objs[-1] = self._image_obj
        boxes[-1] = torch.tensor([0.0, 0.0, 1.0, 1.0])

        triples = []
        if self.include_relationships:
            n_rels = int(self.data["relationships_per_image"][index])
            for r in range(n_rels):
                s = local.get(int(self.data["relationship_subjects"][index, r]))
                o = local.get(int(self.data["relationship_objects"][index, r]))
                if s is not None and o is not None:
                    triples.append([s, int(self.data["relationship_predicates"][index, r]), o])
        caption = self._caption(objs, triples)
        triples += [[k, self._in_image, n - 1] for k in range(n - 1)]

        attributes = [self._attributes(index, obj) for obj in chosen] + [[]]
        names = [self.vocab.object_names[int(o)] for o in objs]
        descriptions = [" ".join([*attrs, name]) if attrs else None for attrs, name in zip(attributes, names)]
        descriptions[-1] = None
        return {
            "image": image,
            "objs": objs,
            "boxes": boxes,
            "masks": torch.ones(n, self.mask_size, self.mask_size),
            "masks_are_boxes": True,
            "triples": torch.tensor(triples, dtype=torch.long).reshape(-1, 3),
            "caption": caption,
            "descriptions": descriptions,
            "attributes": attributes,
            "image_id": int(self.data["image_ids"][index]),
        }

    def _attributes(self, index: int, obj: int) -> list[str]:
        table = self.data.get("object_attributes")
        if table is None or not self.vocab.attribute_names:
            return []
        names = (self.vocab.attribute_names[a].strip() for a in table[index, obj].tolist() if a >= 0)
        return list(dict.fromkeys(n for n in names if n))  # sg2im's vocab has 'white' and 'white '

    def _caption(self, objs: torch.Tensor, triples: list[list[int]]) -> str:
        obj_name = self.vocab.object_names
        if triples:
            phrases = [f"{obj_name[int(objs[s])]} {self.vocab.predicate_names[p]} {obj_name[int(objs[o])]}"
                       for s, p, o in triples]
        else:
            phrases = [obj_name[int(o)] for o in objs[:-1]]
        return ", ".join(dict.fromkeys(phrases))  # VG repeats relationships; say each once

    def _load_image(self, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
        path = self.image_dir / self.image_paths[index]
        try:
            with Image.open(path) as img:
                size = img.size
                img = img.convert("RGB").resize(self.image_size[::-1], Image.Resampling.BILINEAR)
        except FileNotFoundError:
            raise DataError(f"{path}: image not found (image {int(self.data['image_ids'][index])}); "
                            f"{CHECK_HINT}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: cannot read image: {e}; {CHECK_HINT}") from None
        # sg2im squashes the whole image to the output size; boxes stay relative to it.
        array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), size


def _read_h5(path: Path) -> tuple[dict[str, np.ndarray], list[str], dict[str, list[str]]]:
    if not path.is_file():
        raise DataError(f"{path}: Visual Genome HDF5 file not found (make it with datasets/prepare_vg.py)")
    try:
        with h5py.File(path, "r") as f:
            for key in (*_REQUIRED, "image_paths"):
                if key not in f:
                    raise DataError(f"{path}: no dataset {key!r}; not a prepare_vg.py file?")
            data = {k: np.asarray(v) for k, v in f.items() if k != "image_paths"}
            if data.get("object_attributes") is not None and data["object_attributes"].ndim != 3:
                # sg2im's own script writes one flat list that does not line up with the images
                data.pop("object_attributes")
            paths = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in f["image_paths"][()]]
            names = {kind: json.loads(f.attrs[f"vocab_{kind}_names"])
                     for kind in ("object", "predicate", "attribute") if f"vocab_{kind}_names" in f.attrs}
    except OSError as e:
        raise DataError(f"{path}: cannot read HDF5 file: {e}") from None
    if len(paths) != len(data["image_ids"]):
        raise DataError(f"{path}: {len(paths)} image_paths for {len(data['image_ids'])} image_ids")
    return data, paths, names
