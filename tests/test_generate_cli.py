"""`layout2img generate`: files written, seeds, boxes that fix the layout, exit codes and messages;
and the explicit per-object style codes the pipeline accepts for it."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli_generate, read_pixels, write_json
from layout2img import SceneGraphToImage
from layout2img.errors import ConfigError, DataError
from layout2img.generate import object_style_codes, output_paths

SCENE = {"objects": ["circle", "square", "grass", "sky"], "relationships": [[0, "left of", 1], [2, "below", 3]]}
BOXED = {"objects": ["star", "sea"], "relationships": [[0, "above", 1]],
         "boxes": [[0.125, 0.0625, 0.5, 0.4375], [0.0, 0.5, 1.0, 1.0]]}


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def test_single_graph_to_file_is_reproducible(checkpoint, tmp_path, capsys):
    graph = write_json(tmp_path / "one.json", SCENE)
    assert cli_generate(checkpoint, graph, tmp_path / "a.png", "--seed", 3) == 0
    assert cli_generate(checkpoint, graph, tmp_path / "b.png", "--seed", 3) == 0
    assert cli_generate(checkpoint, graph, tmp_path / "c.png", "--seed", 4) == 0
    a = read_pixels(tmp_path / "a.png")
    assert a.shape == (32, 32, 3)  # the model's size
    assert np.array_equal(a, read_pixels(tmp_path / "b.png"))
    assert not np.array_equal(a, read_pixels(tmp_path / "c.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "one.json"]
    assert "wrote 1 image(s) to" in capsys.readouterr().out


def test_list_to_folder_with_samples_size_and_layouts(checkpoint, tmp_path):
    graphs = write_json(tmp_path / "list.json", [SCENE, BOXED])
    out = tmp_path / "out"
    assert cli_generate(checkpoint, graphs, out, "--num-samples", 2, "--size", 64, "--save-layout", "--seed", 5) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["graph_000_layout.png", "graph_000_sample_0.png", "graph_000_sample_1.png",
                     "graph_001_layout.png", "graph_001_sample_0.png", "graph_001_sample_1.png"]
    s0, s1 = read_pixels(out / "graph_000_sample_0.png"), read_pixels(out / "graph_000_sample_1.png")
    assert s0.shape == (64, 64, 3)
    assert not np.array_equal(s0, s1), "two samples of one graph should differ (their style codes do)"
    assert Image.open(out / "graph_001_layout.png").size == (256, 256)
    # graph i is drawn with seed+i, so graph 1 of the list equals graph 1 alone with seed 6
    alone = write_json(tmp_path / "boxed.json", BOXED)
    assert cli_generate(checkpoint, alone, tmp_path / "alone", "--num-samples", 2, "--size", 64, "--seed", 6) == 0
    assert np.array_equal(read_pixels(out / "graph_001_sample_1.png"), read_pixels(tmp_path / "alone" / "graph_000_sample_1.png"))


def test_boxes_in_the_file_fix_the_layout(checkpoint, tmp_path, monkeypatch):
    seen = []
    real = SceneGraphToImage.generate

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(SceneGraphToImage, "generate", spy)
    graphs = write_json(tmp_path / "g.json", [SCENE, BOXED])
    assert cli_generate(checkpoint, graphs, tmp_path / "out", "--save-layout") == 0
    free, boxed = seen
    assert torch.allclose(boxed.boxes[:2], torch.tensor(BOXED["boxes"]), atol=1e-6)
    assert torch.allclose(free.boxes[:4], free.boxes_pred[:4])  # no boxes given: all predicted
    # the layout picture shows the sea box where the file put it: its top edge is at y = 0.5
    layout = read_pixels(tmp_path / "out" / "graph_001_layout.png").astype(int)
    column = layout[:, 200]
    sea = np.array([0, 130, 200])  # label_color("sea") outline
    rows = np.nonzero(np.abs(column - sea).sum(1) < 30)[0]
    assert rows.size and abs(rows.min() - 128) <= 2


def test_bad_graph_exits_2_with_every_validation_line(checkpoint, tmp_path, capsys):
    bad = write_json(tmp_path / "bad.json", [SCENE, {"objects": ["circel", "sky"], "relationships": [[0, "lft of", 5]]}])
    assert cli_generate(checkpoint, bad, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{bad}: graph 1: object 0: unknown object 'circel' in vocabulary 'shapes'; did you mean 'circle'?",
        f"{bad}: graph 1: relation 0: object index 5 out of range (graph has 2 objects)",
        f"{bad}: graph 1: relation 0: unknown predicate 'lft of' in vocabulary 'shapes'; did you mean 'left of'?",
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, words", [
    ("missing-checkpoint", ["error: ", "checkpoint folder not found"]),
    ("missing-graph-file", ["error: ", "nope.json: file not found"]),
    ("many-images-one-file", ["error: --out", "2 images (1 graph(s) x 2 sample(s)) need a folder"]),
    ("text-without-encoder", ["error: ", "no text encoder"]),
    ("bad-size", ["error: --size 3"]),
])
def test_user_errors_exit_2_in_one_line(checkpoint, tmp_path, capsys, case, words):
    graph = write_json(tmp_path / "g.json", SCENE)
    args = {"missing-checkpoint": (graph, tmp_path / "x.png", []),
            "missing-graph-file": (tmp_path / "nope.json", tmp_path / "x.png", []),
            "many-images-one-file": (graph, tmp_path / "x.png", ["--num-samples", 2]),
            "text-without-encoder": (graph, tmp_path / "x.png", ["--text", "a red circle"]),
            "bad-size": (graph, tmp_path / "x.png", ["--size", 3])}[case]
    ckpt = tmp_path / "no_such_checkpoint" if case == "missing-checkpoint" else checkpoint
    assert cli_generate(ckpt, args[0], args[1], *args[2]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for w in words:
        assert w in err[0]
    assert not (tmp_path / "x.png").exists()


def test_output_paths_name_files_and_folders(tmp_path):
    images, layouts = output_paths(tmp_path / "pic.png", 1, 1)
    assert images == [[tmp_path / "pic.png"]] and layouts == [tmp_path / "pic_layout.png"]
    images, layouts = output_paths(tmp_path / "dir", 2, 3)
    assert images[1][2] == tmp_path / "dir" / "graph_001_sample_2.png"
    assert layouts[0] == tmp_path / "dir" / "graph_000_layout.png"
    images, _ = output_paths(tmp_path / "dir", 1500, 1)
    assert images[1499][0].name == "graph_1499_sample_0.png"
    (tmp_path / "taken.png").mkdir()  # an existing folder stays a folder whatever its name
    assert output_paths(tmp_path / "taken.png", 1, 1)[0][0][0].parent == tmp_path / "taken.png"
    with pytest.raises(ConfigError, match="need a folder"):
        output_paths(tmp_path / "pic.png", 2, 1)


# -- explicit style codes (the pipeline's style_codes argument) --------------------------------
TINY = dict(vocab="shapes", image_size=32, style_dim=4, gcn={"embed_dim": 16, "width": 16, "hidden": 32, "layers": 1},
            layout={"mask_size": 8, "box_hidden": 16, "mask_channels": 8, "predictor": "regression"},
            generator={"ngf": 4, "n_downsample": 2, "n_blocks": 1, "conditioning": "input"},
            encoder={"nef": 4, "n_downsample": 2, "norm": "instance"})  # v0.1's generator and encoder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SceneGraphToImage(**TINY).eval()


def test_style_codes_are_used_as_given_and_restyle_one_object(model):
    graph = dict(BOXED)
    codes = object_style_codes(model, graph["objects"], [11, 22])
    assert codes.shape == (2, 4)
    again = object_style_codes(model, graph["objects"], [11, 99])
    assert torch.equal(codes[0], again[0]) and not torch.equal(codes[1], again[1])  # one seed, one object

    a = model.generate(graph, style_codes=codes, return_output=True)
    assert torch.equal(a.style_codes[:2], codes) and torch.equal(a.style_codes[2], torch.zeros(4))
    # the seed no longer matters: the codes are the only randomness
    b = model.generate(graph, seed=123, style_codes=[codes], return_output=True)
    assert torch.equal(a.images, b.images)
    c = model.generate(graph, style_codes=again, return_output=True)
    assert not torch.equal(a.images, c.images)
    # the generator's input changes only where the restyled sea is (its box: rows 16..31)
    changed = (a.layout.style - c.layout.style).abs().sum(1)[0] > 1e-6  # (H, W)
    rows = changed.any(1).nonzero().flatten()
    assert rows.numel() > 0 and int(rows.min()) >= 16


def test_style_codes_repeat_for_samples_and_reject_bad_shapes(model):
    codes = torch.randn(4, 4)
    out = model.generate(SCENE, num_samples=2, style_codes=codes, return_output=True)
    assert torch.equal(out.images[0], out.images[1])
    with pytest.raises(DataError, match=r"shape \(4, 4\).*got \(3, 4\)"):
        model.generate(SCENE, style_codes=torch.randn(3, 4))
    with pytest.raises(DataError, match="one tensor per graph"):
        model.generate([SCENE, SCENE], style_codes=codes)
    with pytest.raises(DataError, match="finite"):
        model.generate(SCENE, style_codes=torch.full((4, 4), float("nan")))
    flat = SceneGraphToImage(**{**TINY, "style_dim": 0}).eval()
    with pytest.raises(ConfigError, match="style_dim=0"):
        flat.generate(SCENE, style_codes=codes)
    assert object_style_codes(flat, SCENE["objects"], [1, 2, 3, 4]) is None


# -- --style: fitted clusters or N(0, I) ----------------------------------------------------------
def _unfitted_copy(checkpoint, folder):
    model = SceneGraphToImage.from_pretrained(checkpoint)
    model.style_clusters.is_fitted.fill_(False)
    return model.save_pretrained(folder)


def test_style_flag_draws_from_clusters_or_samples(tiny_styled_checkpoint, checkpoint, tmp_path, capsys):
    model = SceneGraphToImage.from_pretrained(tiny_styled_checkpoint)
    graph = write_json(tmp_path / "g.json", BOXED)
    made = {}
    for style in ("cluster", "sample", "auto"):
        assert cli_generate(tiny_styled_checkpoint, graph, tmp_path / f"{style}.png", "--seed", 2, "--style", style) == 0
        made[style] = read_pixels(tmp_path / f"{style}.png")
        if style != "auto":
            expected = model.generate(BOXED, seed=2, style_source=style)[0]
            assert np.abs(made[style].astype(int) - _pixels_of(expected)).max() <= 1
    assert np.array_equal(made["auto"], made["cluster"]) and not np.array_equal(made["cluster"], made["sample"])
    # seeds draw codes the same way: cluster centres, or N(0, I) exactly
    clusters = model.style_clusters
    codes = object_style_codes(model, ["star", "sea"], [5, 6], style="cluster")
    for name, code in zip(["star", "sea"], codes):
        c = model.vocab.object_index(name)
        assert torch.cdist(code[None], clusters.centres[c, : int(clusters.counts[c])]).min() < 1e-6
    sampled = object_style_codes(model, ["star", "sea"], [5, 6], style="sample")
    assert torch.equal(sampled[0], torch.randn(model.style_dim, generator=torch.Generator().manual_seed(5)))

    unfitted = _unfitted_copy(checkpoint, tmp_path / "unfitted")
    assert cli_generate(unfitted, graph, tmp_path / "u.png", "--style", "cluster") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"run `layout2img fit-styles --checkpoint {unfitted}`" in err
    assert not (tmp_path / "u.png").exists()
    assert cli_generate(unfitted, graph, tmp_path / "ua.png", "--style", "auto") == 0
    assert cli_generate(unfitted, graph, tmp_path / "us.png", "--style", "sample") == 0
    assert np.array_equal(read_pixels(tmp_path / "ua.png"), read_pixels(tmp_path / "us.png"))


def _pixels_of(image):
    return ((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(int)
