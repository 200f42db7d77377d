"""Layout realism: do sampled layouts keep the relations and look like the real arrangements?

Against real (ground-truth) layouts of the same split, over every sample of every graph:

* relation satisfaction (:func:`layout2img.metrics.layout.relation_satisfaction`, sg2im's rules);
* :func:`thing_pairwise_iou`: the mean IoU between the things of one image (regression piles
  things in the middle: high; real scenes spread them out);
* :class:`BoxHistograms`: per-class 2-D histograms of box centres and of (w, h) sizes, compared by
  total variation, and per-class mean centres ("stuff where stuff is": sky above, ground below);
* :func:`seed_box_iou`: over K samples of one graph, the mean pairwise IoU of each object's boxes
  (1: every seed gives the same box; lower: more diverse).

:class:`LayoutRealism` accumulates all of them batch by batch. Index 0 of the objects is
``__image__`` (the vocabulary convention) and is left out of every figure.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import GraphError
from .layout import box_iou, relation_satisfaction

IMAGE_OBJECT_INDEX = 0


def _as_boxes(boxes, name: str = "boxes") -> torch.Tensor:
    b = torch.as_tensor(boxes, dtype=torch.float64).detach().cpu()
    if b.dim() != 2 or b.shape[1] != 4:
        raise GraphError(f"{name}: expected shape (O, 4), got {tuple(b.shape)}")
    return b


def thing_pairwise_iou(boxes: torch.Tensor, objs: torch.Tensor, obj_to_img: torch.Tensor,
                       is_thing: torch.Tensor) -> torch.Tensor:
    """(I,) for each image with >= 2 things, the mean IoU over its pairs of things.

    ``is_thing`` (num_classes,) bool says which object classes are things.
    """
    boxes = _as_boxes(boxes)
    objs, obj_to_img = torch.as_tensor(objs).cpu(), torch.as_tensor(obj_to_img).cpu()
    thing = torch.as_tensor(is_thing, dtype=torch.bool).cpu()[objs] & (objs != IMAGE_OBJECT_INDEX)
    idx = thing.nonzero().flatten()
    img = obj_to_img[idx]
    a, b = torch.triu((img[:, None] == img[None, :]).int(), diagonal=1).nonzero().unbind(1)
    if a.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    iou = box_iou(boxes[idx[a]], boxes[idx[b]])
    num_images = int(obj_to_img.max()) + 1
    sums = torch.bincount(img[a], weights=iou, minlength=num_images)
    counts = torch.bincount(img[a], minlength=num_images)
    return sums[counts > 0] / counts[counts > 0]


def seed_box_iou(boxes_per_seed: torch.Tensor) -> torch.Tensor:
    """(O,) for each object, the mean IoU of its boxes over every pair of the K samples (K, O, 4)."""
    b = torch.as_tensor(boxes_per_seed, dtype=torch.float64).detach().cpu()
    if b.dim() != 3 or b.shape[2] != 4 or b.shape[0] < 2:
        raise GraphError(f"seed_box_iou: expected (K >= 2, O, 4) boxes, got {tuple(b.shape)}")
    k, num = b.shape[:2]
    i, j = torch.triu_indices(k, k, offset=1)
    iou = box_iou(b[i].reshape(-1, 4), b[j].reshape(-1, 4)).view(-1, num)
    return iou.mean(0)


def _bin(values: torch.Tensor, bins: int) -> torch.Tensor:
    return (values * bins).floor().long().clamp(0, bins - 1)


class BoxHistograms:
    """Per-class ``bins x bins`` histograms over [0, 1]^2 of box centres (cx, cy) and sizes (w, h)."""

    def __init__(self, num_classes: int, bins: int = 10):
        if num_classes < 1 or bins < 1:
            raise GraphError(f"BoxHistograms: need num_classes >= 1 and bins >= 1, got {num_classes}, {bins}")
        self.num_classes, self.bins = int(num_classes), int(bins)
        self.centre = torch.zeros(num_classes, bins, bins, dtype=torch.float64)
        self.size = torch.zeros(num_classes, bins, bins, dtype=torch.float64)
        self.centre_sum = torch.zeros(num_classes, 2, dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, boxes: torch.Tensor, objs: torch.Tensor) -> None:
        """Add boxes (O, 4) of classes ``objs`` (O,); ``__image__`` rows are skipped."""
        boxes, objs = _as_boxes(boxes), torch.as_tensor(objs).long().cpu()
        if objs.shape != (boxes.shape[0],):
            raise GraphError(f"BoxHistograms.update: objs must have shape ({boxes.shape[0]},), got {tuple(objs.shape)}")
        if objs.numel() and (int(objs.min()) < 0 or int(objs.max()) >= self.num_classes):
            raise GraphError(f"BoxHistograms.update: object class outside 0..{self.num_classes - 1}")
        keep = objs != IMAGE_OBJECT_INDEX
        boxes, objs = boxes[keep], objs[keep]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        sizes = boxes[:, 2:] - boxes[:, :2]
        for hist, v in ((self.centre, centres), (self.size, sizes)):
            cell = (objs * self.bins + _bin(v[:, 1], self.bins)) * self.bins + _bin(v[:, 0], self.bins)
            hist += torch.bincount(cell, minlength=hist.numel()).view_as(hist).double()
        self.centre_sum.index_add_(0, objs, centres)
        self.count += torch.bincount(objs, minlength=self.num_classes).double()

    def mean_centres(self) -> torch.Tensor:
        """(num_classes, 2) mean (cx, cy) per class; NaN for classes never seen."""
        return self.centre_sum / self.count[:, None].where(self.count[:, None] > 0, torch.tensor(float("nan")))

    def total_variation(self, real: "BoxHistograms") -> dict:
        """Total variation ``0.5 * sum |p - q|`` of the normalised histograms, per class present in
        ``real`` (a class never predicted scores 1); ``centre`` / ``size``: the mean over those."""
        if (real.num_classes, real.bins) != (self.num_classes, self.bins):
            raise GraphError("BoxHistograms.total_variation: the two histograms differ in classes or bins")
        per_class: dict[int, dict[str, float]] = {}
        for c in (real.count > 0).nonzero().flatten().tolist():
            per_class[c] = {}
            for key, mine, theirs in (("centre", self.centre, real.centre), ("size", self.size, real.size)):
                if mine[c].sum() == 0:
                    per_class[c][key] = 1.0
                else:
                    p, q = mine[c] / mine[c].sum(), theirs[c] / theirs[c].sum()
                    per_class[c][key] = float(0.5 * (p - q).abs().sum())

        def mean(key: str) -> float:
            return sum(v[key] for v in per_class.values()) / len(per_class) if per_class else float("nan")

        return {"centre": mean("centre"), "size": mean("size"), "per_class": per_class}


class LayoutRealism:
    """Accumulates every realism figure of sampled layouts against real ones (module doc).

    ``class_names`` / ``predicate_names``: the vocabulary's; classes ``1..num_things`` are things,
    the rest stuff. ``update_real`` takes real layouts, ``update`` the K samples of each batch.
    """

    def __init__(self, class_names: Sequence[str], predicate_names: Sequence[str], num_things: int, bins: int = 10):
        if not 0 <= num_things < len(class_names):
            raise GraphError(f"LayoutRealism: num_things must be in 0..{len(class_names) - 1}, got {num_things}")
        self.class_names, self.predicate_names = list(class_names), list(predicate_names)
        self.is_thing = torch.zeros(len(class_names), dtype=torch.bool)
        self.is_thing[1:num_things + 1] = True
        self.pred_hist, self.real_hist = BoxHistograms(len(class_names), bins), BoxHistograms(len(class_names), bins)
        self.rel, self.rel_real = [0, 0], [0, 0]
        self.pair_iou: list[torch.Tensor] = []
        self.pair_iou_real: list[torch.Tensor] = []
        self.seed_iou: list[torch.Tensor] = []
        self.num_layouts = 0  # graphs x samples scored

    @classmethod
    def from_vocab(cls, vocab, bins: int = 10) -> "LayoutRealism":
        if vocab.num_things is None:
            raise GraphError(f"LayoutRealism: vocabulary {vocab.name!r} does not say which classes are things")
        return cls(vocab.object_names, vocab.predicate_names, vocab.num_things, bins)

    def _named(self, triples: torch.Tensor) -> list[tuple[int, str, int]]:
        triples = torch.as_tensor(triples).reshape(-1, 3).tolist()
        for i, (_, p, _) in enumerate(triples):
            if not 0 <= p < len(self.predicate_names):
                raise GraphError(f"LayoutRealism: triple {i} has predicate {p}, "
                                 f"outside 0..{len(self.predicate_names) - 1}")
        return [(s, self.predicate_names[p], o) for s, p, o in triples]

    def update_real(self, boxes, objs, obj_to_img, triples=None, centers=None) -> None:
        """Real layouts (O, 4) of a batch; ``triples`` / ``centers`` also score real relations."""
        self.real_hist.update(boxes, objs)
        self.pair_iou_real.append(thing_pairwise_iou(boxes, objs, obj_to_img, self.is_thing))
        if triples is not None:
            s, c = relation_satisfaction(_as_boxes(boxes), self._named(triples), centers)
            self.rel_real[0] += s
            self.rel_real[1] += c

    def update(self, samples, objs, obj_to_img, triples, centers=None, free=None) -> None:
        """K sampled layouts of one batch of graphs: ``samples`` (K, O, 4) (or (O, 4) for one);
        ``centers`` (K, O, 2) relation centres (mask centroids) or None for box centres;
        ``free`` (O,) bool: objects whose box was not given (diversity counts things among them)."""
        samples = torch.as_tensor(samples, dtype=torch.float64).detach().cpu()
        samples = samples[None] if samples.dim() == 2 else samples
        objs = torch.as_tensor(objs).long().cpu()
        if samples.dim() != 3 or samples.shape[1:] != (objs.shape[0], 4):
            raise GraphError(f"LayoutRealism.update: samples must be (K, {objs.shape[0]}, 4), "
                             f"got {tuple(samples.shape)}")
        named = self._named(triples)
        for k, boxes in enumerate(samples):
            self.pred_hist.update(boxes, objs)
            self.pair_iou.append(thing_pairwise_iou(boxes, objs, obj_to_img, self.is_thing))
            s, c = relation_satisfaction(boxes, named, centers[k] if centers is not None else None)
            self.rel[0] += s
            self.rel[1] += c
        self.num_layouts += samples.shape[0] * len(torch.as_tensor(obj_to_img).unique())
        if samples.shape[0] >= 2:
            chosen = self.is_thing[objs] & (objs != IMAGE_OBJECT_INDEX)
            if free is not None:
                chosen &= torch.as_tensor(free, dtype=torch.bool).cpu()
            self.seed_iou.append(seed_box_iou(samples)[chosen])

    def compute(self) -> dict:
        nan = float("nan")
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.float64)  # noqa: E731
        pair, pair_real, seed = cat(self.pair_iou), cat(self.pair_iou_real), cat(self.seed_iou)
        pair_mean = float(pair.mean()) if pair.numel() else nan
        pair_real_mean = float(pair_real.mean()) if pair_real.numel() else nan
        tv = self.pred_hist.total_variation(self.real_hist)
        pred_c, real_c = self.pred_hist.mean_centres(), self.real_hist.mean_centres()
        stuff = [c for c in range(1, len(self.class_names)) if not self.is_thing[c] and self.real_hist.count[c] > 0]
        return {
            "num_layouts": self.num_layouts,
            "relation_satisfaction": self.rel[0] / self.rel[1] if self.rel[1] else nan,
            "relation_satisfaction_real": self.rel_real[0] / self.rel_real[1] if self.rel_real[1] else nan,
            "num_relations": self.rel[1],
            "thing_pairwise_iou": pair_mean,
            "thing_pairwise_iou_real": pair_real_mean,
            "thing_pairwise_iou_ratio": pair_mean / pair_real_mean if pair_real_mean > 0 else nan,
            "centre_tv": tv["centre"],
            "size_tv": tv["size"],
            "per_class_tv": {self.class_names[c]: v for c, v in tv["per_class"].items()},
            "stuff_mean_y": {self.class_names[c]: {"pred": float(pred_c[c, 1]), "real": float(real_c[c, 1])}
                             for c in stuff},
            "seed_box_iou": float(seed.mean()) if seed.numel() else nan,
        }


__all__ = ["thing_pairwise_iou", "seed_box_iou", "BoxHistograms", "LayoutRealism"]
