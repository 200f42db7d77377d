import pytest
import torch

from layout2img.data.batch import collate
from layout2img.errors import DataError


def _item(n, with_boxes=True, with_masks=True):
    objs = torch.arange(1, n + 1)
    objs[-1] = 0
    triples = torch.tensor([[i, 0, n - 1] for i in range(n - 1)])
    return dict(
        objs=objs, triples=triples,
        boxes=torch.rand(n, 4) if with_boxes else None,
        masks=torch.ones(n, 4, 4) if with_masks else None,
        image=torch.zeros(3, 8, 8), caption=f"{n} objects", descriptions=[f"o{i}" for i in range(n)],
        image_id=n,
    )


def test_collate_offsets_triples_and_maps_objects_to_images():
    a, b = _item(3), _item(4)
    batch = collate([a, b])
    assert batch.objs.tolist() == a["objs"].tolist() + b["objs"].tolist()
    assert batch.obj_to_img.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert batch.triple_to_img.tolist() == [0, 0, 1, 1, 1]
    # the second item's triples point at its own objects (offset 3)
    assert batch.triples[2:, [0, 2]].tolist() == [[3, 6], [4, 6], [5, 6]]
    assert batch.images.shape == (2, 3, 8, 8) and batch.masks.shape == (7, 4, 4)
    assert batch.boxes_known.all() and batch.captions == ["3 objects", "4 objects"]
    assert batch.descriptions[3] == "o0" and batch.image_ids == [3, 4]
    assert batch.objects_of(1).tolist() == [3, 4, 5, 6]


def test_collate_marks_unknown_boxes_and_missing_masks():
    batch = collate([_item(3, with_boxes=False, with_masks=False), _item(2, with_masks=False)])
    assert batch.boxes_known.tolist() == [False] * 3 + [True] * 2
    assert batch.boxes[:3].eq(0).all() and batch.masks is None


def test_collate_rejects_bad_items_with_a_clear_error():
    bad = _item(3)
    bad["triples"] = torch.tensor([[0, 0, 5]])
    with pytest.raises(DataError, match="item 1 has a triple whose object index is outside 0..2"):
        collate([_item(2), bad])
    with pytest.raises(DataError, match="item 1 has no masks"):
        collate([_item(2), _item(2, with_masks=False)])
    with pytest.raises(DataError, match="empty"):
        collate([])


def test_select_is_the_collate_of_the_selected_items():
    items = [_item(3), _item(4), _item(2)]
    picked = collate(items).select([2, 0])
    expected = collate([items[2], items[0]])
    for name in ("objs", "triples", "obj_to_img", "triple_to_img", "boxes", "boxes_known", "masks", "images"):
        assert torch.equal(getattr(picked, name), getattr(expected, name)), name
    assert picked.captions == expected.captions and picked.descriptions == expected.descriptions
    assert picked.image_ids == [2, 3]
