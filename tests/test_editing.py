"""Text-guided editing: the API changes the region and nothing else; the edit CLI."""
import json

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP, TINY_MODEL
from PIL import Image

from layout2img import SceneGraphToImage
from layout2img.cli import main
from layout2img.editing import composite_mask, edit_image, parse_box
from layout2img.errors import ConfigError, DataError
from layout2img.models.text import TextEncoder

TINY = TINY_MODEL
GRAPH = {"objects": ["circle", "square", "sky", "grass"],
         "relationships": [[0, "left of", 1], [2, "above", 3]],
         "boxes": [[0.1, 0.55, 0.4, 0.85], [0.55, 0.5, 0.9, 0.85], [0, 0, 1, 0.5], [0, 0.5, 1, 1]]}


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return TextEncoder.from_config(TINY_CLIP)


@pytest.fixture(scope="module")
def clip_dir(clip, tmp_path_factory):
    return clip.save_pretrained(tmp_path_factory.mktemp("clip") / "clip_tiny")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SceneGraphToImage(**TINY).eval()


def test_zero_steps_reproduce_generate_exactly(model, clip):
    res = edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=0, clip=clip, progress=False)
    assert torch.equal(res.original, model.generate(GRAPH, seed=3)[0])
    assert torch.allclose(res.edited, res.original, atol=1e-6)  # same codes -> the same pixels
    assert torch.allclose(res.image, res.original, atol=1e-6) and len(res.history) == 1  # no restarts either


def test_object_edit_changes_its_region_and_nothing_outside(model, clip):
    # an untrained generator moves every pixel with any code, so the L1 preservation term would
    # veto each step here: switched off, the masked composite alone must keep the outside intact
    res = edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=8, lr=0.5, strength=10.0,
                     preserve_weight=0.0, restarts=3, clip=clip, progress=False)
    diff = (res.image - res.original).abs().amax(dim=0)
    outside = res.mask == 0
    assert outside.float().mean() > 0.5  # the circle is a small part of the picture
    assert diff[outside].max() <= 1e-6  # the masked composite: outside is the original
    assert diff[res.region > 0.5].mean() > 1e-3  # inside, the object changed
    assert res.history[-1]["clip"] > res.history[0]["clip"] and res.clip_after > res.clip_before
    # only the chosen object's code moved
    base = model.generate(GRAPH, seed=3, return_output=True).style_codes[:4]
    moved = (res.style_codes - base).abs().sum(dim=1)
    assert moved[0] > 0 and torch.equal(moved[1:], torch.zeros(3))
    assert {h["restart"] for h in res.history} == {0, 1, 2} and len(res.history) == 3 * 9
    # deterministic
    again = edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=8, lr=0.5, strength=10.0,
                       preserve_weight=0.0, restarts=3, clip=clip, progress=False)
    assert torch.equal(again.image, res.image)


def test_feature_modulation_and_negatives_stay_inside_the_mask(model, clip):
    res = edit_image(model, GRAPH, seed=2, target=1, text="a yellow square", steps=4, lr=0.5, strength=10.0,
                     preserve_weight=0.0, modulation=True, negatives=["a red square", "a blue square"], clip=clip,
                     progress=False)
    diff = (res.image - res.original).abs().amax(dim=0)
    assert diff[res.mask == 0].max() <= 1e-6 and diff[res.region > 0.5].mean() > 1e-3
    assert res.history[-1]["clip"] > res.history[0]["clip"]


def test_box_and_whole_image_edits(model, clip):
    box = (0.5, 0.45, 0.95, 0.9)
    res = edit_image(model, GRAPH, seed=1, target=box, text="a red square", steps=4, lr=0.5, strength=10.0,
                     preserve_weight=0.0, clip=clip, progress=False)
    diff = (res.image - res.original).abs().amax(dim=0)
    assert diff[res.mask == 0].max() <= 1e-6 and diff.max() > 1e-3
    ys, xs = torch.nonzero(res.mask > 0, as_tuple=True)  # the mask hugs the box (grown by a pixel or two)
    assert xs.min() >= 0.5 * 32 - 3 and xs.max() <= 0.95 * 32 + 2 and ys.min() >= 0.45 * 32 - 3
    whole = edit_image(model, GRAPH, seed=1, target=None, text="a red circle on snow", steps=3, lr=0.5,
                       strength=10.0, clip=clip, progress=False)
    assert torch.equal(whole.mask, torch.ones(32, 32)) and (whole.image - whole.original).abs().max() > 1e-3


def test_modulation_edit_on_a_text_model(clip_dir):
    torch.manual_seed(0)
    model = SceneGraphToImage(**{**TINY, "text_dim": 24}, text_encoder=str(clip_dir)).eval()
    captioned = dict(GRAPH, caption="a red circle left of a blue square")
    res = edit_image(model, captioned, seed=0, target=1, text="a green square", steps=3, lr=0.5, strength=10.0,
                     preserve_weight=0.0, modulation=True, progress=False)  # guided by the model's own text encoder
    assert torch.equal(res.original, model.generate(captioned, seed=0)[0])
    diff = (res.image - res.original).abs().amax(dim=0)
    assert diff[res.mask == 0].max() <= 1e-6 and diff.max() > 1e-3


def test_edit_errors(model, clip):
    with pytest.raises(DataError, match=r"--object 4: the graph has 4 objects \(0-3\)"):
        edit_image(model, GRAPH, target=4, text="a green circle", clip=clip, progress=False)
    with pytest.raises(ConfigError, match="no CLIP to guide"):
        edit_image(model, GRAPH, target=0, text="a green circle", progress=False)
    with pytest.raises(ConfigError, match="negatives must be a list"):
        edit_image(model, GRAPH, target=0, text="a green circle", clip=clip, negatives="a red circle", progress=False)
    with pytest.raises(ConfigError, match="x0 < x1"):
        parse_box("0.5,0.1,0.2,0.9")
    with pytest.raises(ConfigError, match="four numbers"):
        parse_box("0.5,0.1")
    m = composite_mask(torch.zeros(8, 8).index_fill_(0, torch.tensor([4]), 1.0))
    assert m[4].min() == 1 and m[0].max() == 0 and 0 < m[2, 0] < 1  # grown one pixel, feathered one more


def _cli(capsys, *args):
    code = main(["edit", *map(str, args)])
    return code, capsys.readouterr()


def test_edit_cli_end_to_end(tiny_checkpoint, clip_dir, tmp_path, capsys):
    graph = tmp_path / "scene.json"
    graph.write_text(json.dumps([GRAPH, GRAPH]))
    out, orig = tmp_path / "edited.png", tmp_path / "orig.png"
    code, cap = _cli(capsys, "--checkpoint", tiny_checkpoint, "--graph", graph, "--graph-index", 1, "--object", 0,
                     "--text", "a green circle", "--out", out, "--seed", 5, "--steps", 3, "--lr", 0.5,
                     "--clip", clip_dir, "--save-original", orig, "--device", "cpu", "--modulation",
                     "--negative", "a red circle", "--negative", "a blue circle")
    assert code == 0, cap.err
    assert "edited object 0 (circle)" in cap.out and out.is_file()
    assert Image.open(out).size == (32, 32)
    # the starting image is exactly what `generate` writes for that graph and seed
    code, cap = main(["generate", str(graph), "--checkpoint", str(tiny_checkpoint), "--seed", "5",
                      "--out", str(tmp_path / "gen"), "--device", "cpu"]), capsys.readouterr()
    assert code == 0, cap.err
    assert np.array_equal(np.asarray(Image.open(orig)),
                          np.asarray(Image.open(tmp_path / "gen" / "graph_001_sample_0.png")))


def test_edit_cli_errors_are_one_line(tiny_checkpoint, clip_dir, tmp_path, capsys):
    graph = tmp_path / "scene.json"
    graph.write_text(json.dumps(GRAPH))
    common = ["--checkpoint", tiny_checkpoint, "--graph", graph, "--text", "a green circle", "--clip", clip_dir,
              "--device", "cpu"]
    code, cap = _cli(capsys, *common, "--object", 7, "--out", tmp_path / "x.png")
    assert code == 2 and cap.err.strip().splitlines() == [
        f"error: --object 7: graph 0 of {graph} has 4 objects (0-3)"]
    assert not (tmp_path / "x.png").exists()
    code, cap = _cli(capsys, *common, "--box", "0.9,0,0.1,1", "--out", tmp_path / "x.png")
    assert code == 2 and len(cap.err.strip().splitlines()) == 1 and "--box" in cap.err
    code, cap = _cli(capsys, *common[:-4], "--object", 0, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and "no CLIP to guide" in cap.err and len(cap.err.strip().splitlines()) == 1
    code, cap = _cli(capsys, *common, "--clip", tmp_path / "nope", "--object", 0, "--out", tmp_path / "x.png")
    assert code == 2 and "train-clip" in cap.err
    code, cap = _cli(capsys, *common, "--object", 0, "--out", tmp_path / "x.txt")
    assert code == 2 and "image file name" in cap.err
