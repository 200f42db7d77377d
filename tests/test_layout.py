"""Layout prediction, mask placement, occlusion, edge maps and the generator's layout tensor."""
import pytest
import torch
import torch.nn.functional as F

from layout2img.errors import ConfigError
from layout2img.models.layout import (LayoutPredictor, boxes_from_params, boxes_to_masks_full, compose, crop_boxes,
                                      instance_edges, masks_to_layout)
from layout2img.models.layout_input import build_layout, layout_channels


def _random_mask(m=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(m, m, generator=g) > 0.5).float()


# -- prediction ------------------------------------------------------------------------------
def test_predictor_shapes_and_valid_boxes():
    torch.manual_seed(0)
    pred = LayoutPredictor(width=32, mask_size=16, box_hidden=64)
    vecs = torch.randn(5, 32) * torch.tensor([1, 10, 100, 1000, 1e4])[:, None]
    boxes, logits = pred(vecs)
    assert boxes.shape == (5, 4) and logits.shape == (5, 16, 16)
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert LayoutPredictor(width=8, mask_size=8, mask_channels=4)(torch.randn(2, 8))[1].shape == (2, 8, 8)


def test_box_parametrisation_reaches_any_valid_box_with_gradients():
    target = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.0 + 1e-3, 0.5, 0.01, 0.999]])
    w, h = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    params = torch.stack([torch.logit(target[:, 0] / (1 - w)), torch.logit(target[:, 1] / (1 - h)),
                          torch.logit(w), torch.logit(h)], 1)
    torch.testing.assert_close(boxes_from_params(params), target)
    # far in the "negative" region, where sg2im's final ReLU gave zero gradient
    raw = torch.full((1, 4), -5.0, requires_grad=True)
    (boxes_from_params(raw) - torch.tensor([[0.2, 0.2, 0.8, 0.8]])).abs().sum().backward()
    assert raw.grad.abs().gt(0).all()


def test_box_net_last_layer_is_linear():
    pred = LayoutPredictor(width=8, mask_size=4, box_hidden=16)
    assert isinstance(pred.box_net[-1], torch.nn.Linear)


def test_mask_size_must_be_power_of_two():
    with pytest.raises(ConfigError, match="mask_size"):
        LayoutPredictor(width=8, mask_size=12)


# -- placing masks -----------------------------------------------------------------------------
def test_mask_lands_exactly_in_its_box():
    mask = _random_mask()
    # 16x16 box at pixel boundaries of a 64x48 (H x W) image: rows 8..23, columns 16..31
    box = torch.tensor([[16 / 48, 8 / 64, 32 / 48, 24 / 64]])
    out = masks_to_layout(torch.ones(1, 1), box, mask[None], torch.tensor([0]), 1, 64, 48)
    expected = torch.zeros(1, 1, 64, 48)
    expected[0, 0, 8:24, 16:32] = mask
    assert torch.equal(out, expected)
    # 0.3 * 100 is 30.000002 in float32: still exactly columns 30..45, rows 15..30
    box = torch.tensor([[0.3, 0.15, 0.46, 0.31]])
    out = masks_to_layout(torch.ones(1, 1), box, mask[None], torch.tensor([0]), 1, 100)
    expected = torch.zeros(1, 1, 100, 100)
    expected[0, 0, 15:31, 30:46] = mask
    assert torch.equal(out, expected)


def test_mask_is_resized_bilinearly_into_a_larger_box():
    mask = _random_mask(seed=1)
    box = torch.tensor([[0.25, 0.5, 0.75, 1.0]])  # 32x32 pixels of 64x64: rows 32..63, cols 16..47
    vec = torch.tensor([[2.0, -1.0]])
    out = masks_to_layout(vec, box, mask[None], torch.tensor([0]), 1, 64)
    resized = F.interpolate(mask[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    expected = torch.zeros(1, 2, 64, 64)
    expected[0, 0, 32:64, 16:48] = 2 * resized
    expected[0, 1, 32:64, 16:48] = -resized
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_box_edges_off_pixel_boundaries_are_antialiased():
    full = torch.ones(1, 4, 4)
    box = torch.tensor([[0.125, 0.0, 0.625, 1.0]])  # x from 1.0 to 5.0 pixels of 8: exact; shift by half
    shifted = box + torch.tensor([[1 / 16, 0, 1 / 16, 0]])
    out = boxes_to_masks_full(shifted, full, 1, 8)[0, 0]
    torch.testing.assert_close(out, torch.tensor([0, 0.5, 1, 1, 1, 0.5, 0, 0]))


def test_box_on_pixel_boundaries_still_gets_gradients():
    # the placed area is (x1 - x0) * W * (y1 - y0) * H pixels: its derivative must not vanish at
    # the kinks of the pixel coverage
    box = torch.tensor([[0.25, 0.25, 0.75, 0.75]], requires_grad=True)
    boxes_to_masks_full(box, torch.ones(1, 4, 4), 8).sum().backward()
    torch.testing.assert_close(box.grad, torch.tensor([[-32.0, -32.0, 32.0, 32.0]]))


def test_masks_to_layout_separates_images_and_sums_overlaps():
    boxes = torch.tensor([[0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1]])
    masks = torch.ones(3, 4, 4)
    vecs = torch.ones(3, 1)
    out = masks_to_layout(vecs, boxes, masks, torch.tensor([0, 0, 1]), 2, 8, pooling="sum")
    assert out[0, 0, 3, 3] == 2 and out[0, 0, 1, 1] == 1 and out[0, 0, 7, 7] == 0
    assert torch.equal(out[1, 0], torch.ones(8, 8))
    over = masks_to_layout(vecs, boxes, masks, torch.tensor([0, 0, 1]), 2, 8, pooling="over")
    assert over[0, 0, 3, 3] == 1 and over.max() == 1


@pytest.mark.parametrize("pooling", ["sum", "over"])
def test_gradients_reach_vectors_boxes_and_masks(pooling):
    torch.manual_seed(0)
    vecs = torch.randn(3, 4, requires_grad=True)
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.8], [0.05, 0.5, 0.5, 0.95]], requires_grad=True)
    masks = torch.rand(3, 8, 8, requires_grad=True)
    out = masks_to_layout(vecs, boxes, masks, torch.tensor([0, 0, 1]), 2, 32, pooling=pooling)
    (out * torch.randn_like(out)).sum().backward()
    for t in (vecs, boxes, masks):
        assert t.grad is not None and t.grad.abs().sum(tuple(range(1, t.dim()))).gt(0).all()


# -- occlusion and instances ---------------------------------------------------------------------
def test_smaller_boxes_and_things_are_on_top():
    # object 0: big box; object 1: small box inside it; object 2: a small "stuff" box
    boxes = torch.tensor([[0, 0, 1, 1], [0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 0.75, 0.75], [0, 0, 1, 1]])
    objs = torch.tensor([1, 2, 3, 0])
    stuff = torch.tensor([False, False, False, True])
    geometry = compose(boxes, torch.ones(4, 4, 4), torch.zeros(4, dtype=torch.long), 1, 8, objs=objs,
                       stuff_classes=stuff, skip=objs == 0)
    inst = geometry.instances[0]
    assert inst[3, 3] == 2 and inst[5, 5] == 1 and inst[0, 0] == 1  # 1 + object index
    # stuff goes under every thing, however small its box
    assert inst[5, 5] != 3 and (inst == 3).sum() == 0
    # visible weights of binary masks: exactly one object per pixel, __image__ never
    assert torch.equal(geometry.weights.sum(0), torch.ones(8, 8))
    assert geometry.weights[3].abs().sum() == 0


def test_ties_put_later_objects_on_top():
    boxes = torch.tensor([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    geometry = compose(boxes, torch.ones(2, 4, 4), torch.zeros(2, dtype=torch.long), 1, 4)
    assert geometry.instances[0, 0, 0] == 2 and geometry.instances[0, 3, 3] == 0


def test_instance_edges_of_a_known_map():
    inst = torch.zeros(1, 6, 6, dtype=torch.long)
    inst[0, 1:3, 1:3] = 1
    inst[0, 4:, :] = 2
    expected = torch.tensor([
        [0, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0],
    ], dtype=torch.float32)
    edges = instance_edges(inst)
    assert edges.shape == (1, 1, 6, 6)
    assert torch.equal(edges[0, 0], expected)
    assert instance_edges(torch.full((2, 5, 5), 7)).sum() == 0


# -- the layout tensor ---------------------------------------------------------------------------
def _scene():
    objs = torch.tensor([3, 1, 0, 2, 0])  # image 0: classes 3, 1 + __image__; image 1: class 2 + __image__
    boxes = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1], [0.25, 0, 0.75, 1], [0, 0, 1, 1]])
    masks = torch.ones(5, 16, 16)
    return objs, boxes, masks, torch.tensor([0, 0, 0, 1, 1])


def test_build_layout_channels_and_contents():
    objs, boxes, masks, obj_to_img = _scene()
    codes = torch.arange(10, dtype=torch.float32).view(5, 2)
    layout = build_layout(objs, boxes, masks, obj_to_img, 2, 8, num_classes=4, style_codes=codes)
    assert layout.semantic.shape == (2, 3, 8, 8)  # no channel for __image__
    assert layout.edges.shape == (2, 1, 8, 8) and layout.style.shape == (2, 2, 8, 8)
    assert layout.tensor().shape[1] == layout_channels(4, 0, 2) == layout.num_channels == 6
    assert layout.for_discriminator().shape == (2, 4, 8, 8)
    sem = layout.semantic
    assert torch.equal(sem[0, 2, :4, :4], torch.ones(4, 4))  # class 3 -> channel 2, top-left
    assert torch.equal(sem[0, 0, 4:, 4:], torch.ones(4, 4))  # class 1 -> channel 0
    assert sem[0, :, :4, 4:].abs().sum() == 0  # uncovered: __image__ is not drawn
    assert torch.equal(layout.style[0, :, 0, 0], codes[0]) and torch.equal(layout.style[1, :, 0, 3], codes[3])
    assert layout.instances[1, 0, 0] == 0 and layout.instances[1, 0, 3] == 4
    assert layout.edges[1, 0, 0, 1] == 1 and layout.edges[1, 0, 0, 0] == 0


def test_build_layout_with_class_embeddings():
    objs, boxes, masks, obj_to_img = _scene()
    emb = torch.nn.Embedding(4, 5)
    layout = build_layout(objs, boxes, masks, obj_to_img, 2, 8, num_classes=4, class_embedding=emb)
    assert layout.semantic.shape == (2, 5, 8, 8) and layout.style.shape == (2, 0, 8, 8)
    torch.testing.assert_close(layout.semantic[1, :, 0, 3], emb.weight[2])
    layout.semantic.sum().backward()
    assert emb.weight.grad[[1, 2, 3]].abs().sum(1).gt(0).all() and emb.weight.grad[0].abs().sum() == 0


def test_only_image_objects_give_an_empty_layout():
    layout = build_layout(torch.tensor([0]), torch.tensor([[0.0, 0, 1, 1]]), torch.ones(1, 4, 4),
                          torch.tensor([0]), 1, 8, num_classes=4)
    assert layout.semantic.abs().sum() == 0 and layout.instances.sum() == 0 and layout.edges.sum() == 0


def test_crop_boxes_take_the_right_image_and_box():
    images = -torch.ones(2, 3, 32, 32)
    images[0, 0, 8:16, 16:32] = 1.0   # image 0: a red block in the top right
    images[1, 2, 0:16, 0:16] = 1.0    # image 1: a blue block in the top left
    boxes = torch.tensor([[0.5, 0.25, 1.0, 0.5], [0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 0.5]])
    crops = crop_boxes(images, boxes, torch.tensor([0, 1, 1]), 8)
    assert crops.shape == (3, 3, 8, 8)
    inner = (slice(1, -1), slice(1, -1))  # bilinear sampling softens the outermost ring
    assert torch.allclose(crops[0, 0][inner], torch.ones(6, 6)) and (crops[0, 0] >= 0.5).all()
    assert torch.allclose(crops[0, 1:], -torch.ones(2, 8, 8))
    assert torch.allclose(crops[1, 2][inner], torch.ones(6, 6)) and (crops[1, 2] >= 0.5).all()
    assert torch.allclose(crops[1, :2], -torch.ones(2, 8, 8))
    assert torch.allclose(crops[2], -torch.ones(3, 8, 8))  # image 1 has nothing there
    # a margin grows the box on every side (clipped to the image); (h, w) sizes
    wider = crop_boxes(images, boxes[:1], torch.tensor([0]), (16, 12), margin=0.25)
    assert wider.shape == (1, 3, 16, 12)
    assert wider[0, 0, 0].mean() < 0 and wider[0, 0, 8, 6] == pytest.approx(1.0)
    # gradients reach the images
    images.requires_grad_(True)
    crop_boxes(images, boxes, torch.tensor([0, 1, 1]), 8).sum().backward()
    assert images.grad[0].abs().sum() > 0 and images.grad[1].abs().sum() > 0
