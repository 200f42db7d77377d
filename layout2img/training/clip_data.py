"""The domain CLIP's training data: images with their captions and object crops' short texts.

:func:`load_clip_pairs` reads the split of a ``data:`` section (Shapes or COCO files) into
:class:`ClipPairs`, decoding every image once into one uint8 tensor (10k Shapes images at 64 px:
123 MB), so that a step costs no file reads.

Why not :class:`layout2img.data.coco.CocoSceneGraphDataset`: that reader applies the scene-graph
protocol (object counts, minimum box area, ``other`` dropped, sg2im's val cut), decodes masks for
every item, resizes bilinearly to float and orders objects image by image. A CLIP wants every
captioned image and every non-crowd object, and the measured domain CLIP was trained on this
reader's objects (file order) and bicubic resize; reading through the dataset would change both.
The Shapes files are found with the Shapes reader's own :func:`~layout2img.data.shapes.shapes_paths`.

Hard negatives are captions with one word swapped (:func:`swap_word`); :class:`SwappedTokens`
makes the same negatives directly as token ids: tokenising ~2 000 new texts a step costs ~0.16 s
of CPU, which bounds a GPU run's step.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from ..errors import ConfigError, DataError
from ..io import read_json


@dataclass
class ClipPairs:
    """Images with their captions, and objects (box + short text) inside them."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    captions: list[list[str]]  # per image, the first one is the full caption
    obj_image: torch.Tensor  # (M,) long: the image of each object
    obj_boxes: torch.Tensor  # (M, 4) float [x0, y0, x1, y1] in [0, 1]
    obj_texts: list[str]  # (M,)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int) -> "ClipPairs":
        keep = self.obj_image < n
        idx = keep.nonzero().flatten().tolist()
        return ClipPairs(self.images[:n], self.captions[:n], self.obj_image[keep], self.obj_boxes[keep],
                         [self.obj_texts[i] for i in idx])


def category_phrase(name: str) -> str:
    """A COCO category name as a short text: "a person", "an apple", "a wall stone" (from wall-stone-other)."""
    name = name.replace("-other", "").replace("-", " ")
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def read_coco_pairs(image_dir: str | Path, captions_json: str | Path, object_jsons: Sequence[str | Path] = (),
                    image_size: int = 64, max_images: int | None = None, progress: bool = True) -> ClipPairs:
    """Images that have captions, from COCO-format files, decoded once to (N, 3, S, S) uint8.

    Objects come from ``object_jsons`` (instances / stuff): their ``description`` when present
    (Shapes: "a red circle"), else :func:`category_phrase` of their category.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    image_dir = Path(image_dir)
    caps = read_json(captions_json, "captions JSON")
    try:
        files = {int(im["id"]): (im["file_name"], float(im["width"]), float(im["height"])) for im in caps["images"]}
        by_image: dict[int, list[str]] = {}
        for a in caps["annotations"]:
            by_image.setdefault(int(a["image_id"]), []).append(" ".join(str(a["caption"]).split()))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{captions_json}: not a COCO captions file ({e!r})") from None
    ids = sorted(i for i in by_image if i in files)
    if max_images is not None:
        ids = ids[: int(max_images)]
    if not ids:
        raise DataError(f"{captions_json}: no image has a caption")
    row = {image_id: r for r, image_id in enumerate(ids)}
    obj_image, obj_boxes, obj_texts = [], [], []
    for path in object_jsons:
        data = read_json(path, "annotation JSON")
        try:
            names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
            for a in data["annotations"]:
                r = row.get(int(a["image_id"]))
                if r is None or a.get("iscrowd", 0):
                    continue
                _, w, h = files[ids[r]]
                x, y, bw, bh = (float(v) for v in a["bbox"])
                if bw <= 0 or bh <= 0:
                    continue
                text = a.get("description") or category_phrase(names.get(int(a["category_id"]), "object"))
                obj_image.append(r)
                obj_boxes.append([x / w, y / h, (x + bw) / w, (y + bh) / h])
                obj_texts.append(" ".join(str(text).split()))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a COCO annotation file ({e!r})") from None
    images = torch.empty(len(ids), 3, image_size, image_size, dtype=torch.uint8)
    for r, image_id in enumerate(tqdm(ids, desc="images", unit="img", disable=not progress or None,
                                      leave=False)):
        p = image_dir / files[image_id][0]
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BICUBIC)
                images[r] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except FileNotFoundError:
            raise DataError(f"{p}: image file not found") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{p}: cannot read image ({e})") from None
    return ClipPairs(images, [by_image[i] for i in ids],
                     torch.tensor(obj_image, dtype=torch.long),
                     torch.tensor(obj_boxes, dtype=torch.float32).reshape(-1, 4).clamp_(0, 1), obj_texts)


def load_clip_pairs(data_cfg: Mapping[str, Any], split: str, image_size: int, progress: bool = True) -> ClipPairs:
    """The ``split`` of the dataset a config's ``data:`` section names (shapes or coco)."""
    cfg = dict(OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else data_cfg)
    kind = cfg.get("dataset")
    max_images = (cfg.get(split) or {}).get("max_images", cfg.get("max_images"))
    if kind == "shapes":
        from ..data.shapes import ensure_shapes, shapes_paths

        prep = dict(cfg.get("prepare") or {})
        root = ensure_shapes(Path(cfg["root"]), **prep) if prep else Path(cfg["root"])
        paths = shapes_paths(root, split)
        return read_coco_pairs(paths["image_dir"], paths["captions_json"],
                               [paths["instances_json"], paths["stuff_json"]], image_size, max_images, progress)
    if kind == "coco":
        section = dict(cfg.get(split) or {})
        for key in ("image_dir", "captions_json"):
            if not section.get(key):
                raise ConfigError(f"data.{split}.{key}: needed to train a CLIP on COCO")
        objects = [section[k] for k in ("instances_json", "stuff_json") if section.get(k)]
        return read_coco_pairs(section["image_dir"], section["captions_json"], objects, image_size, max_images,
                               progress)
    if kind == "vg":
        raise ConfigError("data.dataset: vg has no captions; train the CLIP on shapes or coco")
    raise ConfigError(f"data.dataset: unknown dataset {kind!r} (shapes or coco)")


# -- hard negatives --------------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z]+")
_ARTICLE = re.compile(r"\b(a|an) $")


def _swap_sites(text: str, groups: Sequence[set[str]]) -> list[tuple[re.Match, int]]:
    """(word, index of its group) for each word of ``text`` in a group, a word in two groups twice."""
    return [(m, gi) for m in _WORD.finditer(text) for gi, g in enumerate(groups) if m.group(0).lower() in g
            and len(g) > 1]


def swap_word(text: str, groups: Sequence[Iterable[str]], rng: random.Random) -> str | None:
    """``text`` with one word that belongs to a group replaced by another word of the same group
    ("a red circle above ..." -> "a red star above ..."), the article before it fixed (a / an).
    None when no word of ``text`` is in any group."""
    sets = [{w.lower() for w in g} for g in groups]
    where = _swap_sites(text, sets)
    if not where:
        return None
    m, gi = rng.choice(where)
    new = rng.choice(sorted(sets[gi] - {m.group(0).lower()}))
    head = text[: m.start()]
    article = _ARTICLE.search(head)
    if article:  # "a red" -> "an orange", as the captions write it
        head = head[: article.start()] + ("an " if new[0] in "aeiou" else "a ")
    return head + new + text[m.end():]


class SwappedTokens:
    """:func:`swap_word` on token ids: ``swap(text, rng)`` is the row ``tokenizer([swap_word(text,
    groups, rng)])`` gives, drawn from ``rng`` exactly as swap_word draws.

    Each text is tokenised once, in pieces cut at its swappable words, which locates them in its
    ids; a negative is then a splice of the word's (and article's) ids. A text whose pieces do not
    add up to its ids (the tokenizer joins across a cut), or a tokenizer without open_clip's
    ``encode`` / ``sot_token_id`` / ``eot_token_id``, takes the text path: swap_word, then the tokenizer.
    """

    MAX_PLANS = 65536  # texts whose word positions are kept (~1.5 kB each)

    def __init__(self, tokenizer, groups: Sequence[Iterable[str]], context_length: int):
        self.tokenizer = tokenizer
        self.groups = [{w.lower() for w in g} for g in groups]
        self.length = int(context_length)
        self.by_ids = all(hasattr(tokenizer, a) for a in ("encode", "sot_token_id", "eot_token_id")) \
            and getattr(tokenizer, "reduction_fn", None) is None
        self._plans: dict[str, tuple | None] = {}
        self._words: dict[str, list[int]] = {}
        self._alternatives: dict[tuple[int, str], list[str]] = {}

    def _encode(self, text: str) -> list[int]:
        if text not in self._words:
            self._words[text] = list(self.tokenizer.encode(text))
        return self._words[text]

    def _plan(self, text: str) -> tuple | None:
        """(ids, sites): the text's ids (no start / end token, not cut) and per swap site of
        swap_word's list (token start, token end, the article's token or -1, group index, word);
        None: the text path."""
        where = _swap_sites(text, self.groups)
        ids = list(self.tokenizer.encode(text))
        cuts = sorted({0, len(text), *(p for m, _ in where for p in (m.start(), m.end()))})
        offset, joined = {0: 0}, []
        for a, b in zip(cuts, cuts[1:]):
            # the short pieces (swappable words, ' a ') repeat across texts: encode each once
            joined += self._encode(text[a:b]) if b - a <= 12 else list(self.tokenizer.encode(text[a:b]))
            offset[b] = len(joined)
        if joined != ids:
            return None
        sites = []
        for m, gi in where:
            start, end = offset[m.start()], offset[m.end()]
            article = _ARTICLE.search(text[: m.start()])
            at = -1
            if article:
                if start == 0 or ids[start - 1 : start] != self._encode(article.group(1)):
                    return None
                at = start - 1
            sites.append((start, end, at, gi, m.group(0).lower()))
        return tuple(ids), sites

    def swap(self, text: str, rng: random.Random) -> list[int] | None:
        """A negative of ``text`` as a row of ``context_length`` token ids; None when no word of
        ``text`` is in any group (nothing drawn from ``rng`` then, as swap_word)."""
        if text not in self._plans:
            if len(self._plans) >= self.MAX_PLANS:  # the oldest goes first (a COCO-sized caption set)
                del self._plans[next(iter(self._plans))]
            self._plans[text] = self._plan(text) if self.by_ids else None
        plan = self._plans[text]
        if plan is None:
            new_text = swap_word(text, self.groups, rng)
            return None if new_text is None else self.tokenizer([new_text])[0].tolist()
        ids, sites = plan
        if not sites:
            return None
        start, end, at, gi, word = rng.choice(sites)
        key = (gi, word)
        if key not in self._alternatives:
            self._alternatives[key] = sorted(self.groups[gi] - {word})
        new = rng.choice(self._alternatives[key])
        head = list(ids[:start])
        if at >= 0:
            head = head[:at] + self._encode("an" if new[0] in "aeiou" else "a")
        row = [self.tokenizer.sot_token_id, *head, *self._encode(new), *ids[end:], self.tokenizer.eot_token_id]
        if len(row) > self.length:  # cut as open_clip's tokenizer cuts: the end token kept last
            row = row[: self.length]
            row[-1] = self.tokenizer.eot_token_id
        return row + [0] * (self.length - len(row))
