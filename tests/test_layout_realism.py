"""Layout realism metrics on hand-made layouts with answers worked out by hand."""
import math

import pytest
import torch

from layout2img.errors import GraphError
from layout2img.metrics.layout_realism import BoxHistograms, LayoutRealism, seed_box_iou, thing_pairwise_iou
from layout2img.vocab import Vocab

# classes: 0 __image__, 1-2 things, 3 sky, 4 grass (stuff)
CLASSES = ("__image__", "circle", "square", "sky", "grass")
PREDICATES = ("__in_image__", "left of", "right of", "above", "below", "inside", "surrounding")
IS_THING = torch.tensor([False, True, True, False, False])


def test_thing_pairwise_iou_averages_pairs_of_things_per_image():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5],     # image 0: thing
                          [0.25, 0.0, 0.75, 0.5],   # image 0: thing, IoU 1/3 with the first
                          [0.8, 0.8, 1.0, 1.0],     # image 0: thing, disjoint from both
                          [0.0, 0.0, 1.0, 1.0],     # image 0: stuff over everything (not counted)
                          [0.0, 0.0, 1.0, 1.0],     # image 0: __image__ (not counted)
                          [0.1, 0.1, 0.2, 0.2],     # image 1: its only thing (no pair)
                          [0.0, 0.0, 1.0, 1.0],     # image 2: thing
                          [0.25, 0.25, 0.75, 0.75]])  # image 2: thing inside it, IoU 1/4
    objs = torch.tensor([1, 2, 1, 3, 0, 2, 1, 1])
    obj_to_img = torch.tensor([0, 0, 0, 0, 0, 1, 2, 2])
    per_image = thing_pairwise_iou(boxes, objs, obj_to_img, IS_THING)
    assert per_image.tolist() == pytest.approx([(1 / 3 + 0 + 0) / 3, 0.25])


def test_seed_box_iou_is_the_mean_over_pairs_of_samples():
    a, b = [0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]  # IoU 1/3
    samples = torch.tensor([[a, a], [a, a], [b, a]])  # object 0: a, a, b; object 1 never moves
    assert seed_box_iou(samples).tolist() == pytest.approx([(1 + 1 / 3 + 1 / 3) / 3, 1.0])
    with pytest.raises(GraphError, match="K >= 2"):
        seed_box_iou(samples[:1])


def test_histogram_total_variation_of_known_distributions():
    real, same, half, never = (BoxHistograms(len(CLASSES), bins=2) for _ in range(4))
    left, right = [0.1, 0.1, 0.3, 0.3], [0.6, 0.1, 0.8, 0.3]  # centre bins (0, 0) and (1, 0), same size
    real.update(torch.tensor([left, left]), torch.tensor([1, 1]))
    same.update(torch.tensor([left]), torch.tensor([1]))
    half.update(torch.tensor([left, right]), torch.tensor([1, 1]))
    never.update(torch.tensor([left]), torch.tensor([2]))  # predicts only class 2
    assert same.total_variation(real)["centre"] == 0.0
    assert half.total_variation(real)["centre"] == pytest.approx(0.5)
    assert half.total_variation(real)["size"] == 0.0
    tv = never.total_variation(real)
    assert tv["centre"] == 1.0 and list(tv["per_class"]) == [1]  # only classes present in real count
    centres = half.mean_centres()
    assert centres[1].tolist() == pytest.approx([0.45, 0.2])
    assert math.isnan(float(centres[3, 0]))


def test_histograms_skip_image_object_and_reject_bad_classes():
    h = BoxHistograms(len(CLASSES), bins=4)
    h.update(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0]))
    assert float(h.count.sum()) == 0.0
    with pytest.raises(GraphError, match="object class outside 0..4"):
        h.update(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([5]))


def test_layout_realism_scores_every_sample():
    metric = LayoutRealism(CLASSES, PREDICATES, num_things=2, bins=2)
    # one image: circle, square, sky, __image__; relations circle left of square, sky above square
    objs = torch.tensor([1, 2, 3, 0])
    obj_to_img = torch.zeros(4, dtype=torch.long)
    triples = torch.tensor([[0, 1, 1], [2, 3, 1], [0, 0, 3]])
    real = torch.tensor([[0.0, 0.6, 0.2, 0.8], [0.6, 0.6, 0.8, 0.8], [0.0, 0.0, 1.0, 0.4], [0.0, 0.0, 1.0, 1.0]])
    metric.update_real(real, objs, obj_to_img, triples)
    swapped = real[[1, 0, 2, 3]]  # circle now right of the square: one of two relations broken
    sky_low = real.clone()
    sky_low[2] = torch.tensor([0.0, 0.6, 1.0, 1.0])  # the sky drawn at the bottom
    metric.update(torch.stack([real, swapped]), objs, obj_to_img, triples, free=torch.tensor([True, False, True, True]))
    out = metric.compute()
    assert out["num_layouts"] == 2 and out["num_relations"] == 4
    assert out["relation_satisfaction"] == pytest.approx(3 / 4)
    assert out["relation_satisfaction_real"] == 1.0
    assert out["thing_pairwise_iou"] == 0.0 and out["thing_pairwise_iou_real"] == 0.0
    assert math.isnan(out["thing_pairwise_iou_ratio"])  # real things never overlap
    # the circle (free) sits at one of two disjoint places: IoU(real, swapped) = 0; the square is pinned
    assert out["seed_box_iou"] == 0.0
    assert out["stuff_mean_y"] == {"sky": {"pred": pytest.approx(0.2), "real": pytest.approx(0.2)}}
    assert out["centre_tv"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)

    metric.update(sky_low[None], objs, obj_to_img, triples)
    assert metric.compute()["stuff_mean_y"]["sky"]["pred"] == pytest.approx((0.2 + 0.2 + 0.8) / 3)


def test_layout_realism_rejects_bad_input_naming_it():
    metric = LayoutRealism.from_vocab(Vocab.shapes())
    objs = torch.tensor([1, 0])
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(GraphError, match="triple 0 has predicate 9"):
        metric.update(boxes, objs, torch.zeros(2, dtype=torch.long), torch.tensor([[0, 9, 1]]))
    with pytest.raises(GraphError, match=r"samples must be \(K, 2, 4\)"):
        metric.update(boxes[:1], objs, torch.zeros(2, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(GraphError, match="does not say which classes are things"):
        LayoutRealism.from_vocab(Vocab(("__image__", "a"), ("__in_image__",)))
