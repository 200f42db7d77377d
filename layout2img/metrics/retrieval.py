"""Retrieval metrics of a CLIP: top-k caption retrieval among candidates, and zero-shot object naming.

* :func:`retrieval_accuracy` / :class:`RetrievalAccuracy`: for each image embedding, the rank of
  its own text among ``num_candidates`` texts (itself and others drawn with a fixed seed);
* :func:`caption_retrieval_accuracy`: the same from images and captions through an encoder;
* :func:`object_description_accuracy`: each object's crop classified among all object texts.

The encoder is a :class:`layout2img.models.text.TextEncoder` (``encode_image``, ``encode_text``,
``model``, ``device``, ``image_size``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..models.layout import crop_boxes
from ..models.text import CROP_MARGIN, TextEncoder


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [-1, 1]) images -> float in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def crop_own_images(images: torch.Tensor, boxes: torch.Tensor, size) -> torch.Tensor:
    """Box k from image k, grown by :data:`CROP_MARGIN` a side (the context the crops' texts describe)."""
    return crop_boxes(images, boxes, torch.arange(len(boxes), device=images.device), size, margin=CROP_MARGIN)


def retrieval_accuracy(image_emb: torch.Tensor, text_emb: torch.Tensor, num_candidates: int = 100, seed: int = 0,
                       keys: Sequence[Any] | None = None, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of finding row i of ``text_emb`` for row i of ``image_emb`` among
    ``num_candidates`` texts: the true one and ``num_candidates - 1`` others drawn (without
    replacement, fixed ``seed``) from the other rows. Rows with an equal key (e.g. the same
    caption text) are never each other's candidates. A tie counts against the true text."""
    n = image_emb.shape[0]
    if text_emb.shape[0] != n:
        raise ConfigError(f"retrieval: {n} images but {text_emb.shape[0]} texts")
    if num_candidates < 2:
        raise ConfigError(f"retrieval: num_candidates must be >= 2, got {num_candidates}")
    keys = list(range(n)) if keys is None else list(keys)
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    sims = image_emb.float() @ text_emb.float().T  # (n, n)
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in ks}
    for i in range(n):
        same = set(groups[keys[i]])
        pool = np.array([j for j in range(n) if j not in same])
        if len(pool) < num_candidates - 1:
            raise ConfigError(f"retrieval: {num_candidates} candidates asked, but only {len(pool) + 1} "
                              "distinct texts exist")
        others = rng.choice(pool, size=num_candidates - 1, replace=False)
        rank = int((sims[i, torch.from_numpy(others)] >= sims[i, i]).sum())  # texts scored at least as high
        for k in ks:
            hits[k] += rank < k
    out = {f"top{k}": hits[k] / n for k in ks}
    out.update(num_queries=n, num_candidates=num_candidates)
    return out


class RetrievalAccuracy:
    """:func:`retrieval_accuracy` over (image, text) embedding pairs accumulated by ``update``.

    ``keys`` name each pair's text (pairs with an equal key are never each other's candidates);
    an update without keys gives each of its pairs a key of its own.
    """

    def __init__(self, num_candidates: int = 100, seed: int = 0, ks: Sequence[int] = (1, 5)):
        self.num_candidates, self.seed, self.ks = int(num_candidates), int(seed), tuple(ks)
        self.image_rows: list[torch.Tensor] = []
        self.text_rows: list[torch.Tensor] = []
        self.keys: list[Any] = []

    def update(self, image_emb: torch.Tensor, text_emb: torch.Tensor, keys: Sequence[Any] | None = None) -> None:
        if image_emb.shape[0] != text_emb.shape[0] or (keys is not None and len(keys) != image_emb.shape[0]):
            raise ConfigError(f"retrieval: {image_emb.shape[0]} images, {text_emb.shape[0]} texts and "
                              f"{image_emb.shape[0] if keys is None else len(keys)} keys")
        start = len(self.keys)
        self.keys += [("row", start + i) for i in range(image_emb.shape[0])] if keys is None else list(keys)
        self.image_rows.append(image_emb.detach().cpu())
        self.text_rows.append(text_emb.detach().cpu())

    def compute(self) -> dict[str, float]:
        if not self.keys:
            raise ConfigError("retrieval: no embeddings given")
        return retrieval_accuracy(torch.cat(self.image_rows), torch.cat(self.text_rows), self.num_candidates,
                                  self.seed, self.keys, self.ks)


@torch.no_grad()
def embed_images(encoder: TextEncoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, D) normalised embeddings of images (uint8 or float in [-1, 1]), in eval mode."""
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        rows = [encoder.encode_image(to_float_images(images[s : s + batch_size]).to(encoder.device))
                for s in range(0, images.shape[0], batch_size)]
    finally:
        encoder.model.train(was_training)
    return torch.cat(rows).float().cpu()


@torch.no_grad()
def embed_texts(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """(N, D) normalised embeddings of texts, in eval mode."""
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        rows = [encoder.encode_text(list(texts[s : s + batch_size])) for s in range(0, len(texts), batch_size)]
    finally:
        encoder.model.train(was_training)
    return torch.cat(rows).float().cpu()


def caption_retrieval_accuracy(encoder: TextEncoder, images: torch.Tensor, captions: Sequence[str],
                               num_candidates: int = 100, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """Caption retrieval among ``num_candidates`` (see :func:`retrieval_accuracy`): images
    (N, 3, H, W) uint8 or float in [-1, 1], one caption per image. Returns top1, top5, ..."""
    if images.shape[0] != len(captions):
        raise ConfigError(f"retrieval: {images.shape[0]} images but {len(captions)} captions")
    metric = RetrievalAccuracy(num_candidates, seed)
    metric.update(embed_images(encoder, images, batch_size), embed_texts(encoder, list(captions), batch_size),
                  keys=list(captions))
    return metric.compute()


def object_description_accuracy(encoder: TextEncoder, pairs, max_objects: int = 1000, seed: int = 0,
                                batch_size: int = 256) -> dict[str, float]:
    """Zero-shot object naming: each object's crop (up to ``max_objects``, a fixed random
    sample) classified among all distinct object texts of ``pairs`` ("a red circle", ...).

    ``pairs``: images (N, 3, S, S) with objects ``obj_image`` (M,), ``obj_boxes`` (M, 4) and
    ``obj_texts`` (a :class:`layout2img.training.clip_data.ClipPairs`)."""
    if not pairs.obj_texts:
        raise ConfigError("object accuracy: the dataset has no objects")
    names = sorted(set(pairs.obj_texts))
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(pairs.obj_texts), generator=gen)[:max_objects]
    crops = torch.cat([crop_own_images(to_float_images(pairs.images[pairs.obj_image[pick[s : s + batch_size]]]),
                                       pairs.obj_boxes[pick[s : s + batch_size]], encoder.image_size)
                       for s in range(0, len(pick), batch_size)])
    img = embed_images(encoder, crops, batch_size)
    txt = embed_texts(encoder, names, batch_size)
    truth = torch.tensor([names.index(pairs.obj_texts[m]) for m in pick.tolist()])
    ranks = (img @ txt.T).argsort(dim=1, descending=True)
    return {"top1": float((ranks[:, 0] == truth).float().mean()),
            "top5": float((ranks[:, :5] == truth[:, None]).any(dim=1).float().mean()),
            "num_objects": len(pick), "num_texts": len(names)}
