"""Layout metrics: predicted boxes and masks against the ground truth, and relation satisfaction.

* :func:`box_iou`: IoU of paired boxes; :func:`box_recall`: the share of objects whose predicted
  box has IoU >= t with its ground-truth box (R@0.3, R@0.5 as in sg2im's evaluation).
* :func:`relation_satisfaction`: the share of input relations a layout satisfies under the
  geometric rules that made them (:func:`layout2img.relations.geometric_relation`, on mask
  centroids when masks are given, else box centres). Non-geometric predicates are not counted.
* :func:`mask_iou`: IoU of binarised masks pasted into the image at their boxes.
* :func:`class_mean_mask_iou`: the box-relative IoU each class's mean ground-truth mask reaches -
  reported beside ``mask_iou_in_box`` as the bound of a mask that sees only the object's class.
* :func:`composed_mask_iou`: each object's region in the layout composed (occlusion resolved,
  stuff under things, as the generator's) from predicted masks vs from the ground-truth ones,
  both at the ground-truth boxes - how well the masks fit in the picture the generator is given.
* :class:`LayoutMetrics`: accumulates all of these over batches.

Boxes are normalised ``[x0, y0, x1, y1]``; masks are box-relative ``(O, M, M)`` in [0, 1].
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..models.layout import mask_centroids
from ..relations import relation_holds

RECALL_THRESHOLDS = (0.3, 0.5)


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of each box in ``boxes_a`` (N, 4) with the box at the same row of ``boxes_b``."""
    a, b = torch.as_tensor(boxes_a, dtype=torch.float64), torch.as_tensor(boxes_b, dtype=torch.float64)
    a, b = a.reshape(-1, 4), b.reshape(-1, 4)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def box_recall(boxes_pred: torch.Tensor, boxes_gt: torch.Tensor,
               thresholds: Sequence[float] = RECALL_THRESHOLDS) -> dict[float, float]:
    """{t: share of objects whose predicted box has IoU >= t with its ground-truth box}."""
    iou = box_iou(boxes_pred, boxes_gt)
    if iou.numel() == 0:
        return {float(t): float("nan") for t in thresholds}
    return {float(t): float((iou >= t).double().mean()) for t in thresholds}


def relation_satisfaction(boxes: torch.Tensor, triples: Sequence[tuple[int, str, int]],
                          centers: torch.Tensor | None = None) -> tuple[int, int]:
    """(satisfied, counted) over ``triples`` = ``(subject, predicate name, object)``.

    Predicates outside the geometric six (``__in_image__``, VG's "wearing") are not counted.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).tolist()
    cl = torch.as_tensor(centers, dtype=torch.float64).tolist() if centers is not None else None
    satisfied = counted = 0
    for s, pred, o in triples:
        holds = relation_holds(pred, boxes[s], boxes[o], cl[s] if cl else None, cl[o] if cl else None)
        if holds is None:
            continue
        counted += 1
        satisfied += int(holds)
    return satisfied, counted


def paste_masks(boxes: torch.Tensor, masks: torch.Tensor, size: int, threshold: float = 0.5) -> torch.Tensor:
    """(O, size, size) bool: each mask resampled into its box in a size x size image, then binarised."""
    from ..models.layout import boxes_to_masks_full

    full = boxes_to_masks_full(boxes.float(), masks.float(), size)
    return full > threshold


def mask_iou(boxes_a: torch.Tensor, masks_a: torch.Tensor, boxes_b: torch.Tensor, masks_b: torch.Tensor,
             size: int = 64, threshold: float = 0.5) -> torch.Tensor:
    """(O,) IoU of paired objects' binarised masks pasted at their boxes in a size x size image."""
    return binary_iou(paste_masks(boxes_a, masks_a, size, threshold), paste_masks(boxes_b, masks_b, size, threshold))


def binary_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(O,) IoU of paired bool masks (O, ...); 0 where both are empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def class_mean_mask_iou(classes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(O,) IoU of each bool box-relative mask (O, M, M) with its class's mean mask, thresholded
    at 0.5: what a mask predicted from the class alone - blind to the rest of the scene, to what
    occludes the object and to the things cut out of stuff - reaches on these masks."""
    out = torch.zeros(classes.shape[0], dtype=torch.float64)
    for c in classes.unique():
        pick = classes == c
        mean = masks[pick].double().mean(0) > 0.5
        out[pick] = binary_iou(mean.expand_as(masks[pick]), masks[pick])
    return out


def composed_mask_iou(boxes: torch.Tensor, masks_a: torch.Tensor, masks_b: torch.Tensor, obj_to_img: torch.Tensor,
                      num_images: int, objs: torch.Tensor, size: int,
                      stuff_classes: torch.Tensor | None = None) -> torch.Tensor:
    """(O',) IoU, per object but ``__image__``, of the pixels it owns in the instance map composed
    from ``masks_a`` and in the one from ``masks_b`` (both (O, M, M) at ``boxes``; ``compose``'s
    occlusion order, ``stuff_classes`` painted under the things); 0 where it owns none in either."""
    from ..models.layout import compose

    skip = objs == 0
    maps = [compose(boxes.float(), m.float(), obj_to_img, num_images, size, objs=objs, stuff_classes=stuff_classes,
                    skip=skip).instances for m in (masks_a, masks_b)]
    ids = torch.arange(1, objs.shape[0] + 1)[~skip]
    owned = [(inst[obj_to_img[~skip]] == ids[:, None, None]) for inst in maps]  # (O', H, W) each
    return binary_iou(*owned)


class LayoutMetrics:
    """Accumulates layout metrics of predicted layouts against dataset batches.

    ``update(batch, boxes_pred, mask_probs, predicate_names)`` per batch; ``compute()`` at the end.
    ``__image__`` (object index 0) is excluded from every per-object figure. ``stuff_classes``: the
    model's (V,) bool stuff table, for the composed layouts of ``mask_iou_composed``.
    """

    def __init__(self, image_size: int = 64, stuff_classes: torch.Tensor | None = None):
        self.image_size = image_size
        self.stuff_classes = stuff_classes.cpu() if stuff_classes is not None else None
        self.composed_ious: list[torch.Tensor] = []
        self.ious: list[torch.Tensor] = []
        self.mask_ious: list[torch.Tensor] = []
        self.mask_ious_in_box: list[torch.Tensor] = []
        self.gt_masks_in_box: list[torch.Tensor] = []
        self.mask_classes: list[torch.Tensor] = []
        self.rel = [0, 0]
        self.rel_gt = [0, 0]
        self.has_masks = False

    @torch.no_grad()
    def update(self, batch, boxes_pred: torch.Tensor, mask_probs: torch.Tensor | None,
               predicate_names: Sequence[str]) -> None:
        keep = batch.objs != 0
        gt_boxes, pred_boxes = batch.boxes.float().cpu(), boxes_pred.float().cpu()
        self.ious.append(box_iou(pred_boxes[keep.cpu()], gt_boxes[keep.cpu()]))
        gt_masks = batch.masks.float().cpu() if batch.masks is not None else None
        pred_masks = mask_probs.float().cpu() if mask_probs is not None else None
        if gt_masks is not None and pred_masks is not None and keep.any():
            self.has_masks = True
            k = keep.cpu()
            self.mask_ious.append(mask_iou(pred_boxes[k], pred_masks[k], gt_boxes[k], gt_masks[k], self.image_size))
            self.mask_ious_in_box.append(binary_iou(pred_masks[k] > 0.5, gt_masks[k] > 0.5))
            self.gt_masks_in_box.append(gt_masks[k] > 0.5)
            self.mask_classes.append(batch.objs.cpu()[k])
            self.composed_ious.append(composed_mask_iou(gt_boxes, pred_masks, gt_masks, batch.obj_to_img.cpu(),
                                                        batch.num_images, batch.objs.cpu(), self.image_size,
                                                        self.stuff_classes))
        triples = [(int(s), predicate_names[int(p)], int(o)) for s, p, o in batch.triples.cpu().tolist()]
        pred_centers = mask_centroids(pred_boxes, pred_masks) if pred_masks is not None else None
        gt_centers = mask_centroids(gt_boxes, gt_masks) if gt_masks is not None else None
        for acc, boxes, centers in ((self.rel, pred_boxes, pred_centers), (self.rel_gt, gt_boxes, gt_centers)):
            s, c = relation_satisfaction(boxes, triples, centers)
            acc[0] += s
            acc[1] += c

    def compute(self) -> dict:
        iou = torch.cat(self.ious) if self.ious else torch.zeros(0, dtype=torch.float64)
        n = int(iou.numel())
        out = {
            "num_objects": n,
            "box_iou": float(iou.mean()) if n else float("nan"),
            **{f"recall@{t}": (float((iou >= t).double().mean()) if n else float("nan")) for t in RECALL_THRESHOLDS},
            "relation_satisfaction": self.rel[0] / self.rel[1] if self.rel[1] else float("nan"),
            "relation_satisfaction_gt": self.rel_gt[0] / self.rel_gt[1] if self.rel_gt[1] else float("nan"),
            "num_relations": self.rel[1],
            "relation_centres": "mask centroids" if self.has_masks else "box centres",
        }
        if self.has_masks:
            out["mask_iou"] = float(torch.cat(self.mask_ious).mean())
            out["mask_iou_in_box"] = float(torch.cat(self.mask_ious_in_box).mean())
            # beside it, as FID's real-vs-real floor: the same IoU for each class's mean mask
            out["mask_iou_in_box_class_mean"] = float(class_mean_mask_iou(
                torch.cat(self.mask_classes), torch.cat(self.gt_masks_in_box)).mean())
            # the masks where the generator sees them: composed at the true boxes, with occlusion
            out["mask_iou_composed"] = float(torch.cat(self.composed_ious).mean())
        else:
            out["mask_iou"] = {"skipped": "the dataset has no ground-truth masks"}
        return out


__all__ = ["box_iou", "box_recall", "mask_centroids", "relation_satisfaction", "mask_iou", "paste_masks",
           "binary_iou", "class_mean_mask_iou", "composed_mask_iou", "LayoutMetrics"]
