"""Layout metrics on hand-made boxes, masks and relations with known answers."""
import math

import pytest
import torch

from layout2img.data.batch import collate
from layout2img.metrics.layout import (LayoutMetrics, binary_iou, box_iou, box_recall, class_mean_mask_iou,
                                      composed_mask_iou, mask_centroids, mask_iou, relation_satisfaction)

SHAPES_PREDICATES = ("__in_image__", "left of", "right of", "above", "below", "inside", "surrounding")


def test_box_iou_of_hand_made_boxes():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5],   # itself
                      [0.0, 0.0, 0.5, 0.5],   # half overlapping a box of the same size: 1/3
                      [0.0, 0.0, 0.2, 0.2],   # disjoint: 0
                      [0.0, 0.0, 1.0, 1.0],   # contains a quarter-size box: 1/4
                      [0.1, 0.1, 0.1, 0.3]])  # degenerate (zero area) vs itself: 0
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5],
                      [0.25, 0.0, 0.75, 0.5],
                      [0.5, 0.5, 1.0, 1.0],
                      [0.25, 0.25, 0.75, 0.75],
                      [0.1, 0.1, 0.1, 0.3]])
    assert box_iou(a, b).tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.25, 0.0])
    assert torch.equal(box_iou(a, b), box_iou(b, a))


def test_recall_at_thresholds_is_the_share_of_boxes_above_them():
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 4)
    pred = torch.tensor([[0.0, 0.0, 0.5, 0.5],     # IoU 1
                         [0.0, 0.0, 0.5, 0.25],    # IoU 0.5 (on the threshold counts)
                         [0.25, 0.0, 0.75, 0.5],   # IoU 1/3
                         [0.6, 0.6, 0.9, 0.9]])    # IoU 0
    assert box_recall(pred, gt) == {0.3: 0.75, 0.5: 0.5}


def test_relation_satisfaction_of_hand_built_layouts():
    boxes = torch.tensor([[0.0, 0.4, 0.2, 0.6],   # 0: on the left, middle height
                          [0.7, 0.4, 0.9, 0.6],   # 1: on the right
                          [0.4, 0.0, 0.6, 0.2],   # 2: at the top
                          [0.3, 0.3, 0.8, 0.8],   # 3: big box in the middle
                          [0.4, 0.4, 0.5, 0.5]])  # 4: inside 3
    triples = [(0, "left of", 1), (1, "right of", 0), (2, "above", 1), (1, "below", 2), (4, "inside", 3),
               (3, "surrounding", 4),                                           # all six hold
               (0, "right of", 1), (2, "below", 0), (3, "inside", 4),           # three that do not
               (0, "__in_image__", 4), (0, "wearing", 1)]                       # not geometric: not counted
    assert relation_satisfaction(boxes, triples) == (6, 9)
    # mask centroids decide: a wide box whose mask sits at its right end is right of a box at its centre
    wide = torch.tensor([[0.0, 0.0, 1.0, 0.2], [0.45, 0.25, 0.55, 0.35]])
    masks = torch.zeros(2, 4, 4)
    masks[0, :, 3] = 1
    masks[1] = 1
    centers = mask_centroids(wide, masks)
    assert centers[0].tolist() == pytest.approx([0.875, 0.1])
    assert relation_satisfaction(wide, [(0, "above", 1)]) == (1, 1)
    assert relation_satisfaction(wide, [(0, "above", 1)], centers) == (0, 1)
    assert relation_satisfaction(wide, [(0, "right of", 1)], centers) == (1, 1)


def test_mask_iou_pastes_masks_at_their_boxes():
    full = torch.ones(1, 4, 4)
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.25, 0.0, 0.75, 0.5]])
    assert mask_iou(a, full, a, full, size=16).item() == pytest.approx(1.0)
    assert mask_iou(a, full, b, full, size=16).item() == pytest.approx(1 / 3)
    left_half = torch.zeros(1, 4, 4)
    left_half[:, :, :2] = 1
    assert mask_iou(a, left_half, a, full, size=16).item() == pytest.approx(0.5)


def _item(boxes, masks, triples):
    n = len(boxes)
    return {"objs": torch.tensor([1] * n + [0]), "boxes": torch.tensor(boxes + [[0.0, 0.0, 1.0, 1.0]]),
            "masks": torch.cat([masks, torch.ones(1, 4, 4)]),
            "triples": torch.tensor(triples + [[i, 0, n] for i in range(n)])}


def test_layout_metrics_accumulate_over_batches_and_skip_image_object():
    masks = torch.ones(2, 4, 4)
    item = _item([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], masks, [[0, 1, 1]])  # 0 left of 1: true
    batch = collate([item, item])
    pred = batch.boxes.clone()
    pred[1] = torch.tensor([0.0, 0.0, 0.25, 0.5])  # second object of image 0 moved: IoU 0, relation broken
    metrics = LayoutMetrics(image_size=16)
    probs = torch.ones(batch.objs.shape[0], 4, 4)
    metrics.update(batch, pred, probs, SHAPES_PREDICATES)
    r = metrics.compute()
    assert r["num_objects"] == 4  # __image__ excluded
    assert r["box_iou"] == pytest.approx(0.75)
    assert r["recall@0.5"] == pytest.approx(0.75) and r["recall@0.3"] == pytest.approx(0.75)
    assert r["relation_satisfaction"] == pytest.approx(0.5) and r["num_relations"] == 2
    assert r["relation_satisfaction_gt"] == 1.0 and r["relation_centres"] == "mask centroids"
    assert r["mask_iou"] == pytest.approx(0.75) and r["mask_iou_in_box"] == 1.0


def test_layout_metrics_without_masks_say_so():
    item = _item([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], torch.ones(2, 4, 4), [[0, 1, 1]])
    item["masks"] = None
    batch = collate([item])
    metrics = LayoutMetrics(image_size=16)
    metrics.update(batch, batch.boxes, None, SHAPES_PREDICATES)
    r = metrics.compute()
    assert r["box_iou"] == 1.0 and r["relation_centres"] == "box centres"
    assert "no ground-truth masks" in r["mask_iou"]["skipped"]
    assert math.isnan(LayoutMetrics().compute()["box_iou"])


def test_class_mean_mask_iou_is_the_bound_of_a_mask_from_the_class_alone():
    full = torch.ones(4, 4, dtype=torch.bool)
    half = full.clone()
    half[:, 2:] = False  # the right half occluded
    # class 1: two whole squares and one half-occluded one -> mean mask is all ones
    # class 2: a single mask -> its own mean, IoU 1
    classes = torch.tensor([1, 1, 1, 2])
    masks = torch.stack([full, full, half, half])
    iou = class_mean_mask_iou(classes, masks)
    assert iou.tolist() == [1.0, 1.0, 0.5, 1.0]


def test_layout_metrics_report_the_class_mean_bound_beside_mask_iou_in_box():
    masks = torch.ones(2, 4, 4)
    masks[1, :, 2:] = 0  # the second object's visible mask is its left half
    item = _item([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], masks, [[0, 1, 1]])
    batch = collate([item])
    metrics = LayoutMetrics(image_size=16)
    metrics.update(batch, batch.boxes.clone(), torch.ones(batch.objs.shape[0], 4, 4), SHAPES_PREDICATES)
    r = metrics.compute()
    # predicted full masks: 1.0 for the whole object, 0.5 for the half one
    assert r["mask_iou_in_box"] == pytest.approx(0.75)
    # both objects are class 1: the mean of a whole and a left-half mask, > 0.5, is the left half -
    # IoU 0.5 with the whole one, 1 with the half one
    assert r["mask_iou_in_box_class_mean"] == pytest.approx(0.75)
    batch.masks[1] = 1.0  # both whole: the class-mean mask fits both
    metrics = LayoutMetrics(image_size=16)
    metrics.update(batch, batch.boxes.clone(), torch.ones(batch.objs.shape[0], 4, 4), SHAPES_PREDICATES)
    assert metrics.compute()["mask_iou_in_box_class_mean"] == pytest.approx(1.0)


def test_composed_mask_iou_forgives_what_an_occluder_covers_and_counts_what_it_uncovers():
    """A background object whose ground-truth (visible) mask has a hole where a smaller object sits
    on it: a predicted full mask is wrong in its box (in-box IoU 0.75) but owns the same pixels once
    composed; a predicted occluder half its true shape hands the other half to the background."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    objs, obj_to_img = torch.tensor([1, 2, 0]), torch.zeros(3, dtype=torch.long)
    gt = torch.ones(3, 4, 4)
    gt[0, 1:3, 1:3] = 0  # the background's visible part: the occluder's box cut out
    full = torch.ones(3, 4, 4)
    assert binary_iou(full[:1] > 0.5, gt[:1] > 0.5).item() == pytest.approx(0.75)
    iou = composed_mask_iou(boxes, full, gt, obj_to_img, 1, objs, 16)
    assert iou.tolist() == pytest.approx([1.0, 1.0])  # __image__ left out
    half = full.clone()
    half[1, :, 2:] = 0  # the occluder's right half missing
    iou = composed_mask_iou(boxes, half, gt, obj_to_img, 1, objs, 16)
    assert iou[1].item() == pytest.approx(0.5) and iou[0].item() == pytest.approx(192 / 224)
