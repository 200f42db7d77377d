"""The layout the generator gets from predicted masks: holes between stuff filled, things on top in the pictures."""
from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_MODEL

from layout2img import SceneGraphToImage
from layout2img.models.layout import compose
from layout2img.pipeline.layouts import fill_stuff_holes

# sky over the top half, grass over the bottom half, a square thing across the horizon
BOXES = torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75]])
OBJS = torch.tensor([1, 2, 3])
STUFF = torch.tensor([True, True, False])


def soft_masks() -> torch.Tensor:
    masks = torch.ones(3, 8, 8)
    masks[0, 5:, :] = 0.0  # the sky's mask stops short of the horizon: a hole
    masks[1, :, 4:] = 0.2  # the grass's right half is faint: a partial hole
    return masks


def test_holes_inside_stuff_boxes_are_filled_and_the_rest_is_left_alone():
    obj_to_img = torch.zeros(3, dtype=torch.long)
    masks = soft_masks()
    masks[0, :, :] = 1.0
    masks[0, 5:, :] = 0.0
    boxes = BOXES.clone()
    boxes[1] = torch.tensor([0.0, 0.5, 0.5, 1.0])  # the grass box covers only the bottom-left quarter
    geometry = compose(boxes, masks, obj_to_img, 1, 16, objs=OBJS, stuff_classes=torch.tensor([False, True, True, False]))
    assert float(geometry.weights.sum(0).min()) < 0.5 and int((geometry.instances == 0).sum()) > 0  # holes before
    filled = fill_stuff_holes(geometry, boxes, STUFF)

    covered = filled.weights.sum(0)
    in_stuff = torch.zeros(16, 16, dtype=torch.bool)
    in_stuff[:8, :] = True
    in_stuff[8:, :8] = True
    assert torch.allclose(covered[in_stuff], torch.ones(()), atol=1e-5)  # every pixel a box of stuff holds
    assert bool((filled.instances[0][in_stuff] > 0).all())
    outside = ~in_stuff  # the bottom-right: no stuff below it or right of it, so not between stuff
    assert torch.equal(filled.weights[:, outside], geometry.weights[:, outside])
    assert torch.equal(filled.instances[0][outside], geometry.instances[0][outside])
    assert torch.equal(filled.weights[2], geometry.weights[2])  # a thing keeps its weights
    # the sky's hole went to the sky (its box alone holds those pixels), not to the grass
    assert torch.allclose(filled.weights[0, 6:8, :4], torch.ones(()) - geometry.weights[2, 6:8, :4])
    assert int(filled.instances[0, 7, 0]) == 1


def test_a_band_between_stuff_boxes_is_split_at_the_middle():
    """Predicted stuff boxes that do not meet: the band between them goes half to each, no unlabelled pixel."""
    boxes = torch.tensor([[0.0, 0.0, 1.0, 0.375], [0.0, 0.625, 1.0, 1.0]])  # sky rows 0-5, grass rows 10-15
    masks = torch.ones(2, 8, 8)
    obj_to_img = torch.zeros(2, dtype=torch.long)
    geometry = compose(boxes, masks, obj_to_img, 1, 16, objs=OBJS[:2], stuff_classes=torch.tensor([False, True, True, False]))
    assert int((geometry.instances[0, 6:10] == 0).sum()) == 64  # the band is unlabelled before
    filled = fill_stuff_holes(geometry, boxes, STUFF[:2])
    assert bool((filled.instances[0, 6:8] == 1).all()) and bool((filled.instances[0, 8:10] == 2).all())
    assert torch.allclose(filled.weights.sum(0), torch.ones(()))


def test_beyond_all_stuff_stays_unlabelled():
    """No sky in the graph: the grass box below does not claim the top of the picture."""
    boxes = torch.tensor([[0.0, 0.5, 1.0, 1.0]])
    geometry = compose(boxes, torch.ones(1, 8, 8), torch.zeros(1, dtype=torch.long), 1, 16, objs=OBJS[1:2],
                       stuff_classes=torch.tensor([False, True, True, False]))
    filled = fill_stuff_holes(geometry, boxes, STUFF[1:2])
    assert torch.equal(filled.weights, geometry.weights) and bool((filled.instances[0, :8] == 0).all())


def test_images_without_stuff_keep_their_holes():
    boxes, masks = BOXES[2:], torch.ones(1, 8, 8)
    geometry = compose(boxes, masks, torch.zeros(1, dtype=torch.long), 1, 16, objs=OBJS[2:],
                       stuff_classes=torch.tensor([False, True, True, False]))
    filled = fill_stuff_holes(geometry, boxes, STUFF[2:])
    assert torch.equal(filled.weights, geometry.weights) and int((filled.instances == 0).sum()) > 0


def test_full_coverage_is_unchanged():
    obj_to_img = torch.zeros(3, dtype=torch.long)
    masks = torch.ones(3, 8, 8)
    geometry = compose(BOXES, masks, obj_to_img, 1, 16, objs=OBJS, stuff_classes=torch.tensor([False, True, True, False]))
    filled = fill_stuff_holes(geometry, BOXES, STUFF)
    assert torch.allclose(filled.weights, geometry.weights) and torch.equal(filled.instances, geometry.instances)


def model() -> SceneGraphToImage:
    torch.manual_seed(0)
    return SceneGraphToImage(**TINY_MODEL).eval()


GRAPH = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1]],
         "boxes": [[0.0, 0.0, 1.0, 0.55], [0.0, 0.45, 1.0, 1.0], [0.3, 0.3, 0.7, 0.7]]}


def test_generated_layouts_from_predicted_masks_have_no_unlabelled_pixels():
    m = model()
    out = m.generate(GRAPH, seed=0, return_output=True)
    geometry = out.layout.geometry
    assert int((geometry.instances == 0).sum()) == 0  # the stuff boxes cover the image
    assert torch.allclose(geometry.weights.sum(0), torch.ones(()), atol=1e-4)
    # the same masks without the filling leave holes (the tiny model's masks are soft blobs)
    raw = compose(out.boxes, out.masks, geometry.obj_to_img, 1, m.image_size, objs=torch.tensor(
        [m.vocab.object_index(n) for n in GRAPH["objects"]] + [0]), stuff_classes=m.stuff_classes,
        skip=torch.tensor([False, False, False, True]))
    assert float(raw.weights.sum(0).min()) < 0.99


def test_visible_weights_put_things_on_top_of_stuff():
    m = model()
    out = m.generate(GRAPH, seed=0, return_output=True)
    visible = out.visible_weights()
    size = m.image_size
    assert visible.shape == (4, size, size) and float(visible.min()) >= 0 and float(visible.max()) <= 1
    # the circle sits in the middle of the sky's and the grass's boxes: where it is visible, they are not
    circle = visible[2] > 0.5
    assert float(circle.double().mean()) > 0.05
    assert float(visible[0][circle].max()) < 0.5 and float(visible[1][circle].max()) < 0.5
    assert float(visible[3].abs().max()) == 0.0  # __image__ is never drawn


def test_layout_pictures_fill_the_gap_between_stuff_boxes():
    """The editor's layout panel and --save-layout draw the visible weights: the band between a
    sky box and a grass box that do not meet is painted (nearest stuff), not left blank."""
    from layout2img.generate import layout_picture

    m = model()
    graph = dict(GRAPH, boxes=[[0.0, 0.0, 1.0, 0.4], [0.0, 0.6, 1.0, 1.0], [0.3, 0.3, 0.7, 0.7]])
    out = m.generate(graph, seed=0, return_output=True)
    weights = out.visible_weights()[:3]
    band = weights[:2, int(0.45 * m.image_size):int(0.55 * m.image_size), :8]  # left of the circle, between the boxes
    assert torch.allclose(band.sum(0), torch.ones(()), atol=1e-4)
    picture = np.asarray(layout_picture(out.boxes[:3], weights, graph["objects"], 256)).astype(int)
    blank = np.array([242, 242, 242])
    assert not (np.abs(picture[128, 5:25] - blank).sum(-1) == 0).any()  # no blank pixel in the band
    box_only = np.asarray(layout_picture(out.boxes[:3], torch.zeros_like(weights), graph["objects"], 256)).astype(int)
    assert (np.abs(box_only[128, 5:25] - blank).sum(-1) == 0).all()  # it is blank without the weights


def test_folders_written_before_the_switch_keep_their_holes(tmp_path):
    """A checkpoint whose config.json lacks layout.fill_holes was written before it: it draws as it did."""
    import json

    m = model()
    folder = m.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["layout"]["fill_holes"] is True  # written explicitly from now on
    del config["layout"]["fill_holes"]
    (folder / "config.json").write_text(json.dumps(config))
    old = SceneGraphToImage.from_pretrained(folder)
    assert old.config["layout"]["fill_holes"] is False
    geometry = old.generate(GRAPH, seed=0, return_output=True).layout.geometry
    assert float(geometry.weights.sum(0).min()) < 0.99  # the holes of the predicted masks stay


def test_folders_written_before_the_sampler_keep_the_regression(tmp_path):
    """The sampler is the default predictor now; a config.json without layout.predictor was written
    when there was only the regression, and loads as one (its weights would not fit a sampler)."""
    import json

    from layout2img.models.layout import LayoutPredictor

    m = model()
    assert m.config["layout"]["predictor"] == "regression"
    folder = m.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    del config["layout"]["predictor"]
    (folder / "config.json").write_text(json.dumps(config))
    old = SceneGraphToImage.from_pretrained(folder)
    assert old.config["layout"]["predictor"] == "regression" and isinstance(old.layout_predictor, LayoutPredictor)
    torch.testing.assert_close(old.generate(GRAPH, seed=0), m.generate(GRAPH, seed=0))


def _gt_layouts_with(tiny_shapes, switch: str):
    """(model, batch of 4 train scenes, {False: forward with ``layout.<switch>`` off, True: on})."""
    from layout2img.data.batch import collate
    from layout2img.data.shapes import ShapesDataset

    data = ShapesDataset(tiny_shapes, split="train", mask_size=8)
    batch = collate([data[i] for i in range(4)])
    m = model()
    outs = {}
    for on in (False, True):
        m.layout_stage.config[switch] = on
        with torch.no_grad():
            outs[on] = m(batch, layout_source="gt", style_source="sample", generator=torch.Generator().manual_seed(0))
    return m, batch, outs


def test_fill_given_fills_the_ring_ground_truth_masks_leave_round_things(tiny_shapes):
    """layout.fill_given: the soft ring round each thing that its coarse ground-truth mask and the
    stuff's cut-out mask leave partly unlabelled goes to the stuff; the things keep their weights.
    Off (the default), the ring stays as the generator saw it before the switch."""
    m, batch, outs = _gt_layouts_with(tiny_shapes, "fill_given")
    weights = {fill: out.layout.geometry.weights for fill, out in outs.items()}
    covered = {fill: torch.zeros(4, 32, 32).index_add(0, batch.obj_to_img, w) for fill, w in weights.items()}
    assert float(covered[False].min()) < 0.9  # rings before
    assert torch.allclose(covered[True], torch.ones(()), atol=1e-4)  # every pixel of these scenes after
    things = ~m.stuff_classes[batch.objs] & (batch.objs != 0)
    assert torch.equal(weights[True][things], weights[False][things])
    assert float((weights[True] - weights[False]).min()) >= 0  # stuff only gains


def test_hard_layouts_give_each_pixel_to_its_topmost_object(tiny_shapes):
    """layout.hard: a label map - every pixel of these scenes wholly one object's (the instance
    map's, filled as fill_given fills), so class and code channels are one-hot / one code; the
    soft default blends two objects along every mask edge."""
    _, batch, outs = _gt_layouts_with(tiny_shapes, "hard")
    soft, hard = outs[False].layout.geometry, outs[True].layout.geometry
    assert bool(((soft.weights > 0.01) & (soft.weights < 0.99)).any())  # blended edges by default
    assert set(hard.weights.unique().tolist()) == {0.0, 1.0}
    on = torch.zeros(4, 32, 32).index_add(0, batch.obj_to_img, hard.weights)
    assert torch.equal(on, torch.ones_like(on))  # no hole, no blend
    instances = hard.instances
    assert bool((instances > 0).all())
    for b in range(4):
        mine = (batch.obj_to_img == b).nonzero().flatten()
        owner = mine[hard.weights[mine].argmax(0)]
        assert torch.equal(owner + 1, instances[b])  # the weights follow the instance map
    semantic = outs[True].layout.semantic
    assert set(semantic.unique().tolist()) <= {0.0, 1.0}


def test_hard_layouts_need_ground_truth_masks():
    import pytest

    from layout2img.errors import ConfigError

    with pytest.raises(ConfigError, match="model.layout.hard"):
        SceneGraphToImage(**{**TINY_MODEL, "layout": {**TINY_MODEL["layout"], "hard": True, "use_gt_masks": False}})
