"""Drawing layouts and grids: pixels land where the boxes, labels and masks say."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from layout2img.visualize import (
    GT_COLOR, PRED_COLOR, draw_layout, label_color, make_grid_image, save_grid, save_image, to_pil,
)


def _px(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in img.getpixel((x, y)))


def test_to_pil_reads_every_image_form():
    t = torch.zeros(3, 8, 8)
    t[0] = 1.0  # red channel at +1 -> 255, others at 0 -> 128 (rounded)
    t[2] = -1.0
    assert _px(to_pil(t), 3, 3) == (255, 128, 0)
    assert _px(to_pil(np.full((8, 8, 3), 0.5, np.float32)), 0, 0) == (128, 128, 128)
    assert _px(to_pil(np.full((8, 8, 3), 7, np.uint8)), 0, 0) == (7, 7, 7)
    assert to_pil(Image.new("L", (5, 4), 9)).mode == "RGB"
    wild = torch.full((3, 8, 8), 5.0)
    wild[:, :4] = -5.0
    assert to_pil(wild).getextrema() == ((0, 255),) * 3  # out-of-range values are clamped
    with pytest.raises(ValueError, match="expected an image"):
        to_pil(np.zeros((2, 3, 4, 5)))


def test_draw_layout_upscales_and_draws_boxes_and_labels():
    img = -torch.ones(3, 64, 64)  # black
    out = draw_layout(img, [[0.25, 0.5, 0.75, 1.0]], ["red circle"], colors=(255, 0, 0))
    assert out.size == (256, 256)
    assert _px(out, 64, 192) == (255, 0, 0)  # left edge of the box
    assert _px(out, 150, 254) == (255, 0, 0)  # bottom edge
    assert _px(out, 150, 200) == (0, 0, 0)  # inside stays the image
    # the label sits on a filled tag just above the box, with text in it
    tag = np.asarray(out)[100:128, 64:160]
    assert ((tag == [255, 0, 0]).all(-1)).sum() > 200
    assert (tag[..., 1] > 150).sum() > 20  # light (anti-aliased) text on the red tag
    assert draw_layout(img, [[0, 0, 1, 1]], ["x"], scale=1).size == (64, 64)


def test_draw_layout_colours_masks_and_blank_canvas():
    out = draw_layout(None, [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], ["a", "b"], size=128)
    assert out.size == (256, 256)  # blank canvases are upscaled too
    assert _px(out, 0, 60) == label_color("a") and _px(out, 128, 200) == label_color("b")
    assert label_color("sky") == label_color("sky")
    # masks fill only their half of the box
    mask = torch.zeros(1, 4, 4)
    mask[0, :, :2] = 1
    out = draw_layout(torch.zeros(3, 64, 64), [[0, 0, 1, 1]], None, masks=mask, colors="blue", width=1)
    left, right = np.asarray(out)[128, 64], np.asarray(out)[128, 192]
    assert left[2] > right[2] + 50 and (right == 128).all()
    # image_masks cover the whole picture, outside the box too (a layout's visible weights)
    whole = torch.zeros(1, 8, 8)
    whole[0, :, 6:] = 1  # the right quarter, outside the box on the left half
    out = draw_layout(torch.zeros(3, 64, 64), [[0, 0, 0.5, 1]], None, image_masks=whole, colors="blue", width=1)
    assert np.asarray(out)[128, 240][2] > 50 and (np.asarray(out)[128, 64] == 128).all()  # grey: untouched
    with pytest.raises(ValueError, match="not both"):
        draw_layout(None, [[0, 0, 1, 1]], None, masks=mask, image_masks=whole)
    with pytest.raises(ValueError, match="2 labels for 1 boxes"):
        draw_layout(None, [[0, 0, 1, 1]], ["a", "b"])
    with pytest.raises(ValueError, match="colours"):
        draw_layout(None, [[0, 0, 1, 1]], ["a"], colors=[(1, 2, 3), (4, 5, 6)])


def test_predicted_and_true_boxes_in_two_colours():
    img = torch.zeros(3, 64, 64)
    gt = draw_layout(img, [[0.1, 0.1, 0.4, 0.4]], ["gt"], colors=GT_COLOR)
    both = draw_layout(gt, [[0.5, 0.5, 0.9, 0.9]], ["pred"], colors=PRED_COLOR)
    assert both.size == gt.size == (256, 256)  # a drawn picture is not upscaled again
    pixels = {tuple(p) for p in np.asarray(both).reshape(-1, 3)}
    assert GT_COLOR in pixels and PRED_COLOR in pixels


def test_grid_layout_and_sizes():
    small = torch.zeros(2, 3, 64, 64)  # a batch row
    big = [Image.new("RGB", (256, 256), (10, 20, 30))] * 3
    grid = make_grid_image([small, big], pad=4)
    assert grid.size == (3 * 256 + 4 * 4, 2 * 256 + 3 * 4)
    assert _px(grid, 4 + 10, 4 + 10) == (128, 128, 128)  # the 64 px image, upscaled
    assert _px(grid, 4 + 2 * 260 + 10, 4 + 10) == (255, 255, 255)  # an empty cell
    assert _px(grid, 4 + 10, 4 + 260 + 10) == (10, 20, 30)
    titled = make_grid_image([big], titles=["real", "fake", "layout"], row_titles=["#0"])
    assert titled.height > 256 + 8 and titled.width > 3 * 256 + 16
    with pytest.raises(ValueError, match="no images"):
        make_grid_image([])


def test_save_grid_is_atomic_png(tmp_path):
    path = save_grid(tmp_path / "out" / "grid.png", [[torch.zeros(3, 16, 16), torch.ones(3, 16, 16)]], pad=0)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp file left
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (32, 16)
        assert _px(im, 20, 5) == (255, 255, 255)
    with pytest.raises(ValueError, match="suffix"):
        save_image(tmp_path / "grid.nope", Image.new("RGB", (2, 2)))
    assert not (tmp_path / "grid.nope").exists()
