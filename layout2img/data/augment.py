"""Batch augmentation that keeps boxes, masks and relations aligned with the image.

Runs on whole batches (on the GPU when training there) with kornia. Only geometric flips:
colour jitter would contradict captions and descriptions ("a red circle").
"""
from __future__ import annotations

import re
from dataclasses import replace

import kornia.geometry.transform as KT
import torch
from torch import nn

from ..relations import HFLIP_PREDICATES
from ..vocab import Vocab
from .batch import Batch


def hflip_predicate_map(vocab: Vocab) -> torch.Tensor:
    """(P,) long: the predicate index each predicate becomes under a horizontal flip."""
    table = torch.arange(vocab.num_predicates)
    for a, b in HFLIP_PREDICATES.items():
        if vocab.has_predicate(a) and vocab.has_predicate(b):
            table[vocab.predicate_index(a)] = vocab.predicate_index(b)
    return table


_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def hflip_text(text: str | None) -> str | None:
    """Swap the words 'left' and 'right' so a caption still describes the mirrored image."""
    if text is None:
        return None
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def hflip_batch(batch: Batch, flip: torch.Tensor, predicate_map: torch.Tensor) -> Batch:
    """Mirror the images where ``flip`` (B,) is True, with their boxes, masks and predicates."""
    flip = flip.to(batch.objs.device)
    obj_flip = flip[batch.obj_to_img]
    boxes = batch.boxes.clone()
    x0, x1 = batch.boxes[:, 0], batch.boxes[:, 2]
    boxes[:, 0] = torch.where(obj_flip, 1 - x1, x0)
    boxes[:, 2] = torch.where(obj_flip, 1 - x0, x1)
    masks = batch.masks
    if masks is not None:  # box-relative masks mirror inside their box
        masks = torch.where(obj_flip[:, None, None], KT.hflip(masks), masks)
    triples = batch.triples.clone()
    t_flip = flip[batch.triple_to_img]
    pm = predicate_map.to(triples.device)
    triples[:, 1] = torch.where(t_flip, pm[triples[:, 1]], triples[:, 1])
    images = batch.images
    if images is not None:
        images = torch.where(flip[:, None, None, None], KT.hflip(images), images)
    captions = [hflip_text(c) if f else c for c, f in zip(batch.captions, flip.tolist())]
    descriptions = [hflip_text(d) if f else d for d, f in zip(batch.descriptions, obj_flip.tolist())]
    return replace(batch, boxes=boxes, masks=masks, triples=triples, images=images,
                   captions=captions, descriptions=descriptions)


class BatchAugment(nn.Module):
    """Random horizontal flips with probability ``p`` per image, boxes and relations included."""

    def __init__(self, vocab: Vocab, hflip: float = 0.5):
        super().__init__()
        self.p = float(hflip)
        self.register_buffer("predicate_map", hflip_predicate_map(vocab), persistent=False)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        if self.p <= 0:
            return batch
        flip = torch.rand(batch.num_images, generator=generator) < self.p
        return hflip_batch(batch, flip, self.predicate_map)
