"""Text-guided editing: the API changes the region and nothing else; progress and cancel; the edit CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP, TINY_MODEL
from PIL import Image

from layout2img import SceneGraphToImage
from layout2img.cli import main
from layout2img.editing import MODULATION_SITES, composite_mask, edit_image, parse_box
from layout2img.errors import ConfigError, DataError, EditCancelled
from layout2img.models.generator import Generator
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
    assert res.improved is False


def test_an_edit_can_start_from_given_style_codes(model, clip):
    codes = torch.randn(4, TINY["style_dim"], generator=torch.Generator().manual_seed(7))
    res = edit_image(model, GRAPH, seed=3, target=1, text="a red square", steps=0, style_codes=codes, clip=clip,
                     progress=False)
    assert torch.equal(res.original, model.generate(GRAPH, seed=3, style_codes=codes)[0])
    assert not torch.equal(res.original, model.generate(GRAPH, seed=3)[0])
    assert torch.equal(res.style_codes, codes)
    with pytest.raises(DataError, match="style_codes"):
        edit_image(model, GRAPH, target=0, text="a red square", style_codes=codes[:2], clip=clip, progress=False)


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
    assert res.improved is True
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


def test_composite_mask_grows_then_feathers_with_replicated_borders():
    corner = torch.zeros(4, 4)
    corner[0, 0] = 1
    # grown to the 2x2 corner block (outside the image ignored), then one 3x3 box blur with the
    # border replicated: per axis the window sums of [1, 1, 0, 0] are [3, 2, 1, 0]
    profile = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert torch.allclose(composite_mask(corner, grow=1, feather=1), profile[:, None] * profile[None, :] / 9,
                          atol=1e-6)
    # without growing, replicated (not reflected or zero) borders: per axis [1, 0, 0, 0] -> [2, 1, 0, 0]
    profile = torch.tensor([2.0, 1.0, 0.0, 0.0])
    expected = profile[:, None] * profile[None, :] / 9
    expected[0, 0] = 1  # never below the region itself
    assert torch.allclose(composite_mask(corner, grow=0, feather=1), expected, atol=1e-6)
    grown = torch.zeros(4, 4)
    grown[:3, :3] = 1  # a flat 5x5 dilation, no blur
    assert torch.equal(composite_mask(corner, grow=2, feather=0), grown)
    centre = torch.zeros(5, 5)
    centre[2, 2] = 0.5
    blurred = composite_mask(centre, grow=0, feather=1)  # the blur thins the centre; the region is a floor
    assert blurred[2, 2] == 0.5 and torch.allclose(blurred[1:4, 1:4].sum() - 0.5, torch.tensor(8 * 0.5 / 9))
    assert blurred[0].max() == 0


def test_composite_mask_matches_max_and_average_pooling():
    import torch.nn.functional as F

    def pooled(region, grow, feather):  # the definition: max filter, then replicate-padded 3x3 means
        m = region[None, None]
        m = F.max_pool2d(m, 2 * grow + 1, stride=1, padding=grow) if grow else m
        for _ in range(feather):
            m = F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return torch.maximum(m, region[None, None])[0, 0].clamp(0, 1)

    rng = torch.Generator().manual_seed(0)
    for size, grow, feather in (((9, 13), 1, 1), ((32, 32), 2, 3), ((5, 3), 3, 2), ((1, 7), 1, 1)):
        region = torch.rand(size, generator=rng) * (torch.rand(size, generator=rng) > 0.6)
        assert (composite_mask(region, grow, feather) - pooled(region, grow, feather)).abs().max() <= 1e-6


def test_modulation_sites_are_the_generators_points():
    assert sorted(MODULATION_SITES) == sorted(Generator.MODULATION_POINTS)
    with pytest.raises(ConfigError, match="modulation_at must be one of"):
        edit_image(None, GRAPH, text="a green circle", modulation=True, modulation_at="middle")


def test_progress_callback_sees_every_step_and_can_cancel(model, clip):
    seen = []
    res = edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=3, lr=0.5, strength=10.0,
                     preserve_weight=0.0, restarts=2, clip=clip, progress=False, callback=seen.append)
    assert [(i["restart"], i["step"]) for i in seen] == [(r, s) for r in range(2) for s in range(4)]
    assert {(i["restarts"], i["steps"]) for i in seen} == {(2, 3)}
    assert [i["clip"] for i in seen] == [h["clip"] for h in res.history]
    best = [i["best_clip"] for i in seen]  # changes only where candidates are compared: steps 0 and 3
    assert best[0] == best[1] == best[2] and best[4] == best[5] == best[6]
    assert all(b == b for b in best)  # never NaN: step 0 is always scored

    def stop_in_the_second_run(info):
        calls.append(info)
        return not (info["restart"] == 1 and info["step"] == 1)

    calls = []
    model.train()
    with pytest.raises(EditCancelled, match=r"edit cancelled at restart 2/2, step 1/3"):
        edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=3, lr=0.5, restarts=2, clip=clip,
                   progress=False, callback=stop_in_the_second_run)
    assert len(calls) == 4 + 2 and model.training  # stopped at once; the model's mode restored


def test_no_improvement_is_reported(model, clip):
    # lr=0: every step renders the original again, so nothing beats step 0
    res = edit_image(model, GRAPH, seed=3, target=0, text="a green circle", steps=3, lr=0.0, restarts=1, clip=clip,
                     progress=False)
    assert res.improved is False and len(res.history) == 4
    assert torch.allclose(res.image, res.original, atol=1e-6) and res.clip_after == pytest.approx(res.clip_before)


def test_the_edit_parser_loads_without_torch():
    code = ("import argparse, sys; from layout2img.commands import edit; "
            "edit.add_parser(argparse.ArgumentParser().add_subparsers()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _cli(capsys, *args):
    code = main(["edit", *map(str, args)])
    return code, capsys.readouterr()


def test_edit_cli_end_to_end(tiny_checkpoint, clip_dir, tmp_path, capsys):
    graph = tmp_path / "scene.json"
    graph.write_text(json.dumps([GRAPH, GRAPH]))
    out, orig = tmp_path / "edited.png", tmp_path / "orig.png"
    # an untrained generator moves every pixel, so the L1 term would veto each step (see above)
    code, cap = _cli(capsys, "--checkpoint", tiny_checkpoint, "--graph", graph, "--graph-index", 1, "--object", 0,
                     "--text", "a green circle", "--out", out, "--seed", 5, "--steps", 3, "--lr", 0.5,
                     "--strength", 10, "--preserve-weight", 0, "--clip", clip_dir, "--save-original", orig,
                     "--device", "cpu", "--modulation", "--negative", "a red circle", "--negative", "a blue circle")
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
    code, cap = _cli(capsys, *common, "--object", 0, "--patience", -1, "--out", tmp_path / "x.png")
    assert code == 2 and "patience" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_edit_cli_nothing_better_exits_3_and_writes_no_edit(tiny_checkpoint, clip_dir, tmp_path, capsys):
    graph = tmp_path / "scene.json"
    graph.write_text(json.dumps(GRAPH))
    out, orig = tmp_path / "edited.png", tmp_path / "orig.png"
    code, cap = _cli(capsys, "--checkpoint", tiny_checkpoint, "--graph", graph, "--object", 0, "--text",
                     "a green circle", "--out", out, "--steps", 0, "--clip", clip_dir, "--save-original", orig,
                     "--device", "cpu")
    assert code == 3 and cap.out == ""
    said = [line for line in cap.err.splitlines() if line.startswith("edit:")]
    assert len(said) == 1 and said[0].startswith("edit: nothing better found for object 0 (circle) (CLIP similarity ")
    assert f"did not write {out}" in said[0]
    assert not out.exists() and orig.is_file()  # the original is still written when asked for
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    assert "3 nothing better found" in " ".join(capsys.readouterr().out.split())


# -- faster edits: early stopping and screened starts (issue 13) -----------------------------------
def _selection_losses(history, restart):
    return [h["selection_loss"] for h in history if h["restart"] == restart and "selection_loss" in h]


def test_patience_ends_a_run_that_stops_improving_and_keeps_the_best(model, clip):
    # strength 0: only the L1 outside the mask counts, so the original (loss 0) is the best state;
    # run 0 gets zero gradients there and never moves: its check at step 10 does not improve.
    kw = dict(seed=3, target=0, text="a green circle", steps=30, lr=0.5, strength=0.0, restarts=2, clip=clip,
              screen=0, progress=False)
    full = edit_image(model, GRAPH, patience=0, **kw)
    early = edit_image(model, GRAPH, patience=1, **kw)
    assert [h["step"] for h in early.history if h["restart"] == 0] == list(range(11))
    assert len(early.history) < len(full.history) == 62
    assert early.history[:11] == full.history[:11]  # the same run until it stopped
    # never worse than step 0: the later run moved away from the original, the original is returned
    assert min(_selection_losses(early.history, 1)) > _selection_losses(early.history, 0)[0]
    assert early.improved is False and torch.allclose(early.image, early.original, atol=1e-6)
    with pytest.raises(ConfigError, match="patience must be a non-negative integer, got -1"):
        edit_image(model, GRAPH, target=0, text="a green circle", patience=-1, clip=clip, progress=False)


def test_screened_starts_begin_the_later_runs_from_the_best_draw(model, clip):
    kw = dict(seed=3, target=0, text="a green circle", steps=4, lr=0.5, strength=10.0, preserve_weight=0.0,
              restarts=2, clip=clip, patience=0, progress=False)
    plain = edit_image(model, GRAPH, screen=0, **kw)
    screened = edit_image(model, GRAPH, screen=6, **kw)
    run0 = [h for h in plain.history if h["restart"] == 0]
    assert [h for h in screened.history if h["restart"] == 0] == run0  # screening comes after run 0
    # run 1 starts from the best of 6 draws, the first of which is the unscreened run's start
    first_plain, first_screened = _selection_losses(plain.history, 1)[0], _selection_losses(screened.history, 1)[0]
    assert first_screened < first_plain
    with pytest.raises(ConfigError, match="screen must be a non-negative integer"):
        edit_image(model, GRAPH, target=0, text="a green circle", screen=1.5, clip=clip, progress=False)


class ColourCLIP:
    """A stand-in CLIP that sees only colour: an image crop embeds as its mean RGB (unit length);
    every text embeds as the colour it was built with. Enough to test how an edit searches."""

    image_size, model = 16, None

    def __init__(self, rgb: torch.Tensor):
        self.rgb = torch.nn.functional.normalize(rgb.float(), dim=0)

    def to(self, device):
        return self

    def encode_text(self, texts):
        return self.rgb[None].repeat(len(texts), 1)

    def encode_image(self, crops):
        return torch.nn.functional.normalize(crops.float().mean(dim=(2, 3)), dim=1)


def test_a_cluster_start_reaches_a_colour_the_random_start_misses(model, monkeypatch):
    import layout2img.editing.edit as edit_module

    # the stand-in CLIP judges a box crop's mean colour: keep the stuff of the circle's box out of it
    # (holes left, as before layout.fill_holes), so the clusters' colours on the circle decide the score
    model.config["layout"]["fill_holes"] = False
    graph = {**GRAPH, "objects": ["circle", "square", "sky", "grass"]}
    circle = model.vocab.object_index("circle")
    codes = torch.randn(64, TINY["style_dim"], generator=torch.Generator().manual_seed(1)) * 3
    model.style_clusters.fit(codes, torch.full((64,), circle), generator=torch.Generator().manual_seed(0))
    base = model.generate(graph, seed=3, return_output=True)
    region = base.layout.geometry.weights[0] > 0.5

    def colour(image):
        return image[:, region].mean(dim=1)

    centres = [model.style_clusters.centre(circle, j) for j in range(int(model.style_clusters.counts[circle]))]
    renders = []
    for centre in centres:  # what each cluster paints the circle
        fixed = base.style_codes[:4].clone()
        fixed[0] = centre
        renders.append(colour(model.generate(graph, seed=3, style_codes=fixed)[0]))
    start = colour(base.images[0])
    far = max(range(len(centres)), key=lambda j: float((renders[j] - start).norm()))
    monkeypatch.setattr(edit_module, "guidance_encoder", lambda model, clip: ColourCLIP(renders[far]))
    common = dict(seed=3, target=0, text="a circle that colour", steps=0, restarts=1, modulation=False,
                  auto_negatives=False, progress=False)

    found = edit_image(model, graph, cluster_starts=True, **common)
    assert found.improved and torch.allclose(found.style_codes[0], centres[far])
    assert float((colour(found.edited) - renders[far]).norm()) < 1e-4
    missed = edit_image(model, graph, cluster_starts=False, **common)  # from the original: no such colour
    assert not missed.improved and float((colour(missed.edited) - renders[far]).norm()) > 0.05


def test_a_text_naming_one_colour_gets_the_other_colours_as_negatives(model):
    from layout2img.editing.edit import colour_negatives

    # the Shapes vocabulary's colours (its attributes), the named one left out
    assert sorted(colour_negatives("a White cross", model.vocab)) == sorted(
        f"a {c} cross" for c in ("red", "orange", "yellow", "green", "blue", "purple", "black"))
    assert colour_negatives("a circle", model.vocab) == []  # no colour named: nothing to contrast
    assert colour_negatives("a red and blue circle", model.vocab) == []
