"""sg2im's geometric relations: hand-built boxes for each rule, mirror symmetry, seeded sampling."""
import random

import pytest

from layout2img.relations import (
    HFLIP_PREDICATES,
    box_center,
    geometric_relation,
    relation_holds,
    sample_relations,
)
from layout2img.vocab import GEOMETRIC_PREDICATES

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "inside": "surrounding", "surrounding": "inside"}

# (subject box, object box, relation of subject to object); y points down
CASES = [
    ([0.0, 0.4, 0.2, 0.6], [0.6, 0.4, 0.8, 0.6], "left of"),
    ([0.6, 0.4, 0.8, 0.6], [0.0, 0.4, 0.2, 0.6], "right of"),
    ([0.4, 0.0, 0.6, 0.2], [0.4, 0.7, 0.6, 0.9], "above"),
    ([0.4, 0.7, 0.6, 0.9], [0.4, 0.0, 0.6, 0.2], "below"),
    ([0.3, 0.3, 0.5, 0.5], [0.1, 0.1, 0.9, 0.9], "inside"),
    ([0.0, 0.0, 1.0, 1.0], [0.2, 0.3, 0.4, 0.5], "surrounding"),
    # diagonal offsets fall into the quadrant of the larger displacement
    ([0.0, 0.30, 0.2, 0.50], [0.6, 0.40, 0.8, 0.60], "left of"),
    ([0.30, 0.7, 0.50, 0.9], [0.40, 0.0, 0.60, 0.2], "below"),
]


@pytest.mark.parametrize("box_s, box_o, expected", CASES)
def test_each_relation_from_hand_built_boxes(box_s, box_o, expected):
    assert geometric_relation(box_s, box_o) == expected
    assert geometric_relation(box_o, box_s) == OPPOSITE[expected]
    assert relation_holds(expected, box_s, box_o) is True
    assert relation_holds(OPPOSITE[expected], box_s, box_o) is False


def test_all_six_relations_are_the_vocabulary_predicates():
    assert {c[2] for c in CASES} == set(GEOMETRIC_PREDICATES)


def test_containment_must_be_strict():
    # sharing an edge is not "inside": the centres decide instead
    assert geometric_relation([0.0, 0.2, 0.5, 0.8], [0.0, 0.0, 1.0, 1.0]) == "left of"
    assert geometric_relation([0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]) == "right of"  # same box: angle 0


def test_centers_override_box_centres():
    a, b = [0.0, 0.4, 0.2, 0.6], [0.6, 0.4, 0.8, 0.6]  # a left of b by their boxes
    assert geometric_relation(a, b, center_s=(0.5, 0.1), center_o=(0.5, 0.9)) == "above"
    assert box_center([0.2, 0.4, 0.6, 1.0]) == pytest.approx((0.4, 0.7))


def test_non_geometric_predicates_are_not_judged():
    assert relation_holds("riding", [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]) is None


def _random_box(rng):
    x0, x1 = sorted(rng.uniform(0, 1) for _ in range(2))
    y0, y1 = sorted(rng.uniform(0, 1) for _ in range(2))
    return [x0, y0, x1, y1]


def test_swapping_and_flipping_on_random_boxes():
    rng = random.Random(0)
    for _ in range(500):
        a, b = _random_box(rng), _random_box(rng)
        rel = geometric_relation(a, b)
        assert rel in GEOMETRIC_PREDICATES
        assert geometric_relation(b, a) == OPPOSITE[rel]
        flip = lambda box: [1 - box[2], box[1], 1 - box[0], box[3]]  # noqa: E731
        assert geometric_relation(flip(a), flip(b)) == HFLIP_PREDICATES.get(rel, rel)


def test_hflip_predicates():
    assert HFLIP_PREDICATES == {"left of": "right of", "right of": "left of"}
    for p, q in HFLIP_PREDICATES.items():
        assert HFLIP_PREDICATES[q] == p


def _boxes(n, seed=1):
    rng = random.Random(seed)
    return [_random_box(rng) for _ in range(n)]


def test_sample_relations_is_deterministic_for_a_seed():
    boxes = _boxes(6)
    first = sample_relations(boxes, random.Random(42))
    assert first == sample_relations(boxes, random.Random(42))
    assert len(first) == 6
    for cur, (s, p, o) in enumerate(first):
        assert s != o and cur in (s, o)  # one triple per object, with that object in it
        assert p == geometric_relation(boxes[s], boxes[o])


def test_sample_relations_depends_on_the_seed():
    boxes = _boxes(6)
    reference = sample_relations(boxes, random.Random(0))
    assert any(sample_relations(boxes, random.Random(seed)) != reference for seed in range(1, 50))


def test_sample_relations_uses_centers_and_small_inputs():
    assert sample_relations([], random.Random(0)) == []
    assert sample_relations([[0, 0, 1, 1]], random.Random(0)) == []
    boxes = [[0.0, 0.4, 0.2, 0.6], [0.6, 0.4, 0.8, 0.6]]
    centers = [(0.5, 0.1), (0.5, 0.9)]  # object 0 is above object 1 by its mask centroid
    for s, p, o in sample_relations(boxes, random.Random(3), centers=centers):
        assert p == ("above" if s == 0 else "below")
