"""CLIP score: agreement between generated images and their texts under a CLIP model.

``score = 100 * max(cos(image embedding, text embedding), 0)`` per image, averaged (the
torchmetrics convention; Hessel et al.'s CLIPScore is 2.5 * max(cos, 0)). The encoder is any
object with ``encode_text(list[str])`` and ``encode_image(images in [-1, 1])`` returning
L2-normalised embeddings (``layout2img.models.text``'s wrapper has them); embeddings are
normalised again here, so an encoder that forgets does not change the number.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

NO_ENCODER = "model has no text encoder"


def clip_unavailable_reason(encoder: Any) -> str | None:
    if encoder is None:
        return NO_ENCODER
    missing = [m for m in ("encode_text", "encode_image") if not callable(getattr(encoder, m, None))]
    if missing:
        return f"the text encoder has no {' / '.join(missing)}"
    return None


def graph_text(names: Sequence[str], triples: Sequence[tuple[int, str, int]]) -> str:
    """A plain sentence for a scene graph without a caption: "circle left of square, sky"."""
    parts, used = [], set()
    for s, p, o in triples:
        if p.startswith("__"):
            continue
        parts.append(f"{names[s]} {p} {names[o]}")
        used.update((s, o))
    parts += [n for i, n in enumerate(names) if i not in used and not n.startswith("__")]
    return ", ".join(parts)


def batch_texts(batch, vocab) -> list[str]:
    """The text of each image of a batch: its caption, else its scene graph as :func:`graph_text`."""
    texts = []
    for i, cap in enumerate(batch.captions):
        if cap:
            texts.append(cap)
            continue
        objs = batch.objects_of(i)
        local = {int(g): j for j, g in enumerate(objs.tolist())}
        names = [vocab.object_names[int(batch.objs[g])] for g in objs.tolist()]
        triples = [(local[int(s)], vocab.predicate_names[int(p)], local[int(o)])
                   for s, p, o in batch.triples[batch.triple_to_img == i].tolist()]
        texts.append(graph_text(names, triples))
    return texts


@torch.no_grad()
def clip_scores(encoder: Any, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """(N,) ``100 * max(cos, 0)`` of each image (N, 3, H, W) in [-1, 1] with its text."""
    if images.shape[0] != len(texts):
        raise ValueError(f"clip_scores: {images.shape[0]} images but {len(texts)} texts")
    img = torch.as_tensor(encoder.encode_image(images)).float()
    txt = torch.as_tensor(encoder.encode_text(list(texts))).float().to(img.device)
    img = img / img.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    txt = txt / txt.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return 100 * (img * txt).sum(-1).clamp(min=0)


class CLIPScore:
    """Mean :func:`clip_scores` of every image given to ``update`` with its text."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.scores: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, texts: Sequence[str]) -> None:
        self.scores.append(clip_scores(self.encoder, images, texts).cpu())

    def compute(self) -> float:
        return float(torch.cat(self.scores).mean()) if self.scores else float("nan")
