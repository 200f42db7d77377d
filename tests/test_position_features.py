"""Issue 20's positional switch: Fourier features of the pixel's place beside the class map in the
decoder's SPADE layers (``model.generator.position_frequencies``), a source for 2D patterns."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from conftest import TINY_MODEL, tiny_overrides
from layout2img import SceneGraphToImage
from layout2img.config import load_config
from layout2img.errors import ConfigError
from layout2img.models.generator import Generator
from layout2img.models.layout_input import layout_channels
from layout2img.models.position import coordinates_in_boxes, position_features
from layout2img.training.trainer import Trainer

FLAT = {"objects": ["wall"], "relationships": [], "boxes": [[0, 0, 1, 1]]}


def test_features_are_sines_from_one_cycle_to_a_four_pixel_period():
    pe = position_features(3, 16, 32)  # channels: sin x, cos x, sin y, cos y, three frequencies each
    assert pe.shape == (1, 12, 16, 32)
    sin_x, cos_x, sin_y, cos_y = pe[0].split(3)
    assert torch.allclose(sin_x ** 2 + cos_x ** 2, torch.ones(3, 16, 32), atol=1e-6)
    assert torch.allclose(sin_x, sin_x[:, :1].expand_as(sin_x))  # x channels change along x only
    assert torch.allclose(sin_y, sin_y[:, :, :1].expand_as(sin_y))  # y channels along y only
    # one cycle over each side at the lowest frequency: sin(2 pi (x + 0.5) / 32)
    assert torch.allclose(sin_x[0, 0], torch.sin(2 * math.pi * (torch.arange(32) + 0.5) / 32), atol=1e-6)
    # the highest: 16 / 4 = 4 cycles per side, a 4-pixel period down the 16 rows, 8 across the 32 columns
    assert torch.allclose(sin_y[2, 4:, 0], sin_y[2, :-4, 0], atol=1e-5)
    assert torch.allclose(sin_x[2, 0, 8:], sin_x[2, 0, :-8], atol=1e-5)
    assert not torch.allclose(sin_x[2, 0, 4:], sin_x[2, 0, :-4], atol=1e-2)
    assert position_features(0, 8, 8).shape == (1, 0, 8, 8)


def tiny(position_frequencies: int) -> SceneGraphToImage:
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["generator"].update(conditioning="spade", position_frequencies=position_frequencies)
    torch.manual_seed(0)
    return SceneGraphToImage(**cfg).eval()


@pytest.mark.parametrize("frequencies", [0, 2])
def test_the_decoder_reads_the_features(frequencies, monkeypatch):
    """The same layout and weights with the features moved (x rolled by 5 pixels) give another
    picture when the generator has them, and the same picture when it has none."""
    from layout2img.models import position

    layout = torch.zeros(2, 6, 32, 32)
    layout[:, 2] = 1.0  # one class everywhere
    layout[:, 4:] = torch.tensor([0.5, -1.0])[None, :, None, None]  # one style code everywhere
    torch.manual_seed(0)
    gen = Generator(6, ngf=4, n_downsample=2, n_blocks=1, conditioning="spade", style_channels=2,
                    position_frequencies=frequencies).eval()
    with torch.no_grad():
        before = gen(layout)
        original = position.position_features
        monkeypatch.setattr(position, "position_features", lambda *a, **k: original(*a, **k).roll(5, dims=-1))
        after = gen(layout)
    change = (after - before).abs().max().item()
    assert (change > 1e-4) if frequencies else (change == 0.0)


def test_the_switch_adds_no_input_channel_and_round_trips(tmp_path):
    model = tiny(2)
    assert model.generator.in_channels == tiny(0).generator.in_channels
    folder = model.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["generator"]["position_frequencies"] == 2
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert torch.equal(loaded.generate(FLAT, seed=1), model.generate(FLAT, seed=1))


def test_a_config_without_the_keys_loads_without_either(tmp_path):
    folder = tiny(0).save_pretrained(tmp_path / "old")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["generator"]["position_frequencies"], cfg["generator"]["box_coordinates"]
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.generator.global_net.position_frequencies == 0 and not loaded.generator.box_coordinates


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_bad_frequencies_are_a_one_line_config_error(bad):
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["generator"].update(conditioning="spade", position_frequencies=bad)
    with pytest.raises(ConfigError, match=r"^model\.generator\.position_frequencies: expected a non-negative") as err:
        SceneGraphToImage(**cfg)
    assert "\n" not in str(err.value)


def test_the_features_need_spade():
    with pytest.raises(ConfigError, match="position_frequencies=2 needs conditioning='spade'"):
        Generator(8, ngf=4, n_downsample=1, n_blocks=1, conditioning="input", position_frequencies=2)


def test_training_with_position_features_moves_their_spade_weights(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path, max_steps=2, **{
        "model.generator.conditioning": "spade", "model.generator.position_frequencies": 2}))
    trainer = Trainer(cfg)
    shared = trainer.model.generator.global_net.up[-1].norm.shared[0].weight
    before = shared.detach().clone()
    trainer.fit()
    # the input columns of the finest SPADE's shared conv that read the 8 position channels learned
    n = trainer.model.generator.global_net.shape_channels
    assert not torch.equal(shared.detach()[:, n:n + 8], before[:, n:n + 8])
    loaded = SceneGraphToImage.from_pretrained(tmp_path / "checkpoints" / "latest")
    assert loaded.generator.global_net.position_frequencies == 2
    images = loaded.generate(FLAT, seed=0)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


# -- each pixel's place in its object's box ---------------------------------------------------------
def test_coordinates_run_across_each_box_and_follow_the_visible_shares():
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    weights = torch.zeros(2, 8, 8)
    weights[0, 2:6, 2:6] = 1.0  # the thing shows in its box ...
    weights[1] = 1.0 - weights[0]  # ... the stuff everywhere else
    coords = coordinates_in_boxes(boxes, weights, torch.tensor([0, 0]), 1)
    assert coords.shape == (1, 2, 8, 8)
    assert torch.allclose(coords[0, 0, 3, 2:6], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # x across the thing
    assert torch.allclose(coords[0, 1, 2:6, 4], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # y down it
    assert torch.allclose(coords[0, 0, 0], (torch.arange(8) + 0.5) / 4 - 1)  # the stuff's box is the picture
    # two images: each object's coordinates land in its own image only
    two = coordinates_in_boxes(boxes, weights, torch.tensor([0, 1]), 2)
    assert torch.equal(two[0, :, 0], torch.zeros(2, 8)) and torch.allclose(two.sum(0), coords[0])


def test_box_coordinates_are_two_layout_channels_before_the_style(tmp_path):
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["generator"].update(conditioning="spade", box_coordinates=True)
    torch.manual_seed(0)
    model = SceneGraphToImage(**cfg).eval()
    graph = {"objects": ["circle", "sky"], "relationships": [], "boxes": [[0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1]]}
    out = model.generate(graph, seed=0, return_output=True)
    layout = out.layout
    assert layout.box_coords.shape == (1, 2, 32, 32)
    assert layout.tensor().shape[1] == model.generator.in_channels == tiny(0).generator.in_channels + 2
    expected = layout_channels(model.vocab.num_objects, 0, model.style_dim, box_coordinates=True)
    assert layout.num_channels == expected == layout.tensor().shape[1]
    assert torch.equal(layout.tensor()[:, -model.style_dim - 2:-model.style_dim], layout.box_coords)
    # inside the circle's box (its mask's core) x runs from left to right across the box
    row = layout.box_coords[0, 0, 16, 12:20]
    assert (row.diff() > 0).all() and row.abs().max() < 1.0
    folder = model.save_pretrained(tmp_path / "m")
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.generator.box_coordinates
    assert torch.equal(loaded.generate(graph, seed=3), model.generate(graph, seed=3))
    cfg["generator"]["box_coordinates"] = "yes"
    with pytest.raises(ConfigError, match=r"^model\.generator\.box_coordinates: expected true or false, got 'yes'$"):
        SceneGraphToImage(**cfg)


def test_training_with_box_coordinates(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path, max_steps=2, **{
        "model.generator.conditioning": "spade", "model.generator.box_coordinates": True}))
    trainer = Trainer(cfg)
    trainer.fit()
    coords = trainer.last_output.layout.box_coords
    assert coords.shape[1] == 2 and coords.abs().max() <= 1.5 and coords.abs().max() > 0.5
    assert SceneGraphToImage.from_pretrained(tmp_path / "checkpoints" / "latest").generator.box_coordinates
