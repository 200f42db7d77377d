"""Object accuracy (the classification accuracy score, CAS): top-k accuracy of an object classifier.

:class:`ObjectAccuracy` crops each object (``__image__`` excluded) at its box, classifies the
crops with an :class:`~layout2img.models.classifier.ObjectClassifier` and counts how often the
class it was generated as (or annotated with) comes out on top. The evaluation applies it to
generated images at the boxes they were made from and to the real images at their ground-truth
boxes: a generator whose objects look like their class scores close to the real figure. The
classifier is trained by :mod:`layout2img.training.classifier`.
"""
from __future__ import annotations

import torch

from ..models.classifier import ObjectClassifier, object_crops


class TopKAccuracy:
    """Top-1 (and top-5 when there are more than 10 classes) accuracy over many updates."""

    def __init__(self):
        self.correct1 = self.correct5 = self.total = 0
        self.num_classes = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.numel() == 0:
            return
        self.num_classes = logits.shape[1]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        self.correct1 += int((top[:, 0] == labels).sum())
        self.correct5 += int((top == labels[:, None]).any(1).sum())
        self.total += int(labels.numel())

    def compute(self) -> dict:
        """``{"top1", "num_objects"}`` (+ ``"top5"`` past 10 classes); top1 NaN before any object."""
        if self.total == 0:
            return {"top1": float("nan"), "num_objects": 0}
        out = {"top1": self.correct1 / self.total, "num_objects": self.total}
        if self.num_classes - 1 > 10:  # class 0, __image__, is never a target
            out["top5"] = self.correct5 / self.total
        return out


class ObjectAccuracy:
    """The accuracy of ``classifier`` on object crops of images, accumulated over batches."""

    def __init__(self, classifier: ObjectClassifier):
        self.classifier = classifier
        self.counts = TopKAccuracy()

    @torch.no_grad()
    def update(self, images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor,
               objs: torch.Tensor) -> None:
        """Objects ``objs`` (O,) at normalised ``boxes`` (O, 4) of ``images`` (B, 3, H, W) in [-1, 1]."""
        crops, labels = object_crops(images, boxes, obj_to_img, objs, self.classifier.crop_size)
        self.counts.update(self.classifier(crops), labels)

    def compute(self) -> dict:
        return self.counts.compute()
