import torch

from layout2img.data.augment import BatchAugment, hflip_batch, hflip_predicate_map, hflip_text
from layout2img.data.batch import collate
from layout2img.vocab import Vocab


def _item(vocab, caption):
    # A 3-object scene: a circle left of a square, both in the image; image painted to match.
    img = -torch.ones(3, 16, 16)
    img[0, 4:8, 1:5] = 1.0  # red-ish block where the circle is: x in [1, 5)
    boxes = torch.tensor([[1 / 16, 4 / 16, 5 / 16, 8 / 16], [10 / 16, 2 / 16, 14 / 16, 10 / 16], [0, 0, 1, 1]])
    masks = torch.zeros(3, 4, 4)
    masks[0, :, :2] = 1  # left half of the circle's box
    masks[1] = 1
    masks[2] = 1
    left, inimg = vocab.predicate_index("left of"), vocab.predicate_index("__in_image__")
    triples = torch.tensor([[0, left, 1], [0, inimg, 2], [1, inimg, 2]])
    objs = torch.tensor([vocab.object_index("circle"), vocab.object_index("square"), 0])
    return dict(image=img, objs=objs, boxes=boxes, masks=masks, triples=triples, caption=caption,
                descriptions=["a red circle on the left", "a blue square", None])


def test_hflip_keeps_boxes_masks_relations_and_text_aligned():
    vocab = Vocab.shapes()
    batch = collate([_item(vocab, "a circle left of a square"), _item(vocab, "a circle left of a square")])
    out = hflip_batch(batch, torch.tensor([True, False]), hflip_predicate_map(vocab))
    # image 0 mirrored: the painted block moves to x in [11, 15)
    assert torch.equal(out.images[0], batch.images[0].flip(-1))
    assert out.images[0, 0, 4:8, 11:15].eq(1).all() and out.images[0, 0, 4:8, 1:5].eq(-1).all()
    assert torch.equal(out.images[1], batch.images[1])
    # the box follows the pixels
    assert torch.allclose(out.boxes[0], torch.tensor([11 / 16, 4 / 16, 15 / 16, 8 / 16]))
    assert torch.allclose(out.boxes[3], batch.boxes[3])
    assert torch.allclose(out.boxes[2], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # the box-relative mask mirrors inside its box
    assert out.masks[0][:, 2:].eq(1).all() and out.masks[0][:, :2].eq(0).all()
    assert torch.equal(out.masks[3], batch.masks[3])
    # 'left of' becomes 'right of' in the flipped image only; __in_image__ untouched
    right = vocab.predicate_index("right of")
    assert out.triples[0, 1].item() == right
    assert out.triples[3, 1].item() == vocab.predicate_index("left of")
    assert torch.equal(out.triples[[1, 2, 4, 5], 1], batch.triples[[1, 2, 4, 5], 1])
    assert out.captions == ["a circle right of a square", "a circle left of a square"]
    assert out.descriptions[0] == "a red circle on the right" and out.descriptions[3] == "a red circle on the left"


def test_hflip_text_swaps_whole_words_only():
    assert hflip_text("left of the bright right-hand wall") == "right of the bright left-hand wall"
    assert hflip_text(None) is None


def test_batch_augment_is_seeded_and_p0_is_identity():
    vocab = Vocab.shapes()
    batch = collate([_item(vocab, "c") for _ in range(8)])
    aug = BatchAugment(vocab, hflip=0.5)
    a = aug(batch, torch.Generator().manual_seed(3))
    b = aug(batch, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    flipped = [not torch.equal(a.images[i], batch.images[i]) for i in range(8)]
    assert 0 < sum(flipped) < 8  # some flipped, some not, for this seed
    assert BatchAugment(vocab, hflip=0.0)(batch) is batch
