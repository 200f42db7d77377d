"""Layouts through the pipeline and the CLI: the predictor switch, seeded sampled layouts, pinned boxes,
refinement, `layout2img layout` and `generate` reproducing a written layout, and the sampler in training."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_MODEL, tiny_overrides

from layout2img import SceneGraphToImage
from layout2img.cli import main
from layout2img.config import load_config
from layout2img.errors import ConfigError, GraphError
from layout2img.graph import SceneGraph
from layout2img.metrics.layout import relation_satisfaction
from layout2img.models.layout import LayoutPredictor, mask_centroids
from layout2img.models.layout_sampler import LayoutSampler

GRAPH = {"objects": ["sky", "grass", "circle", "square", "triangle"],
         "relationships": [[0, "above", 1], [2, "left of", 3], [4, "above", 3], [2, "above", 1]]}
PINNED_BOX = [0.6, 0.55, 0.9, 0.85]


def tiny_model(predictor: str = "sampler", **layout) -> SceneGraphToImage:
    torch.manual_seed(0)
    model = SceneGraphToImage(**{**TINY_MODEL, "layout": {**TINY_MODEL["layout"], "predictor": predictor, **layout}})
    return model.eval()


@pytest.fixture(scope="module")
def sampler():
    return tiny_model()


@pytest.fixture(scope="module")
def sampler_checkpoint(tmp_path_factory, sampler):
    return sampler.save_pretrained(tmp_path_factory.mktemp("sampler") / "model")


def kept(layout: dict, graph: dict = GRAPH) -> tuple[int, int]:
    """(kept, counted) relations, judged on mask centroids as the evaluation does."""
    return relation_satisfaction(layout["boxes"], [tuple(r) for r in graph["relationships"]],
                                 mask_centroids(layout["boxes"], layout["masks"]))


def test_the_config_picks_the_predictor_and_checks_its_keys():
    assert isinstance(tiny_model("regression").layout_predictor, LayoutPredictor)
    unset = {k: v for k, v in TINY_MODEL["layout"].items() if k != "predictor"}
    # the default draws a layout per seed, so `layout2img layout --seed` and the editor's "New layout" work
    assert isinstance(SceneGraphToImage(**{**TINY_MODEL, "layout": unset}).layout_predictor, LayoutSampler)
    assert load_config("shapes_64", ["out_dir=x"]).model.layout.predictor == "sampler"
    model = tiny_model("sampler", z_dim=3, layers=1, hidden=16)
    assert isinstance(model.layout_predictor, LayoutSampler) and model.layout_predictor.z_dim == 3
    assert model.samples_layouts and model.refines_by_default and not tiny_model("regression").samples_layouts
    assert not tiny_model("sampler", refine_steps=0).refines_by_default
    assert tiny_model("regression").refines_by_default  # regressed layouts are refined too
    for layout, message in (({"predictor": "vae"}, "model.layout.predictor: expected regression or sampler, got 'vae'"),
                            ({"placement": "random"}, "model.layout.placement: expected sequential or joint"),
                            ({"refine_steps": -1}, "model.layout.refine_steps: expected an integer >= 0"),
                            ({"known_fraction": 1.5}, r"model.layout.known_fraction: expected a value in \[0, 1\]")):
        with pytest.raises(ConfigError, match=message):
            SceneGraphToImage(**{**TINY_MODEL, "layout": {**TINY_MODEL["layout"], **layout}})


def test_same_seed_same_layout_different_seeds_different_layouts(sampler):
    a, again, other = (sampler.predict_layout(GRAPH, seed=s)[0] for s in (3, 3, 4))
    assert a["boxes"].shape == (5, 4) and a["masks"].shape == (5, 8, 8)
    assert torch.equal(a["boxes"], again["boxes"]) and torch.equal(a["masks"], again["masks"])
    assert (a["boxes"] - other["boxes"]).abs().amax(1).min() > 1e-3  # every object moves
    assert ((a["masks"] >= 0) & (a["masks"] <= 1)).all()
    # a graph's layout does not depend on its batch (its own noise; float sums may differ in the last bits)
    batched = sampler.predict_layout([{"objects": ["sea", "star"], "relationships": []}, GRAPH], seed=3)
    torch.testing.assert_close(batched[1]["boxes"], a["boxes"], atol=1e-5, rtol=0)
    three = sampler.predict_layout(GRAPH, seed=3, num_samples=3)
    assert len(three) == 3
    torch.testing.assert_close(three[0]["boxes"], a["boxes"], atol=1e-5, rtol=0)
    assert not torch.equal(three[1]["boxes"], three[0]["boxes"])
    # the regression: one layout whatever the seed
    regression = tiny_model("regression")
    r3, r4 = (regression.predict_layout(GRAPH, seed=s)[0]["boxes"] for s in (3, 4))
    assert torch.equal(r3, r4)


def test_generate_draws_the_layout_predict_layout_gives(sampler):
    layout = sampler.predict_layout(GRAPH, seed=7)[0]
    out = sampler.generate(GRAPH, seed=7, return_output=True)
    assert torch.equal(out.boxes[:5], layout["boxes"]) and torch.equal(out.masks[:5], layout["masks"])
    # the layout seed is its own: a new style seed keeps the layout, a new layout seed keeps the styles
    restyled = sampler.generate(GRAPH, seed=8, layout_seed=7, return_output=True)
    assert torch.equal(restyled.boxes, out.boxes) and not torch.equal(restyled.style_codes, out.style_codes)
    moved = sampler.generate(GRAPH, seed=7, layout_seed=8, return_output=True)
    assert torch.equal(moved.style_codes, out.style_codes) and not torch.equal(moved.boxes, out.boxes)
    samples = sampler.generate(GRAPH, seed=7, num_samples=2, return_output=True)
    two = sampler.predict_layout(GRAPH, seed=7, num_samples=2)
    assert torch.equal(samples.boxes[:5], two[0]["boxes"]) and torch.equal(samples.boxes[6:11], two[1]["boxes"])
    assert not torch.equal(two[0]["boxes"], two[1]["boxes"])


@pytest.mark.parametrize("predictor", ["sampler", "regression"])
def test_the_layout_written_into_the_graph_reproduces_the_image(sampler, predictor):
    model = sampler if predictor == "sampler" else tiny_model("regression")
    layout = model.predict_layout(GRAPH, seed=5)[0]
    written = SceneGraph.from_dict(json.loads(json.dumps({**GRAPH, "boxes": layout["boxes"].tolist()})))
    first, second = model.generate(GRAPH, seed=5), model.generate(written, seed=5)
    assert torch.equal(first, second)
    assert not torch.equal(first, model.generate(GRAPH, seed=6))


def test_pinned_boxes_stay_bit_for_bit_and_steer_the_others(sampler):
    pins = [None, None, None, PINNED_BOX, None]
    for seed in (0, 1):
        layout = sampler.predict_layout(GRAPH, seed=seed, pinned=[pins])[0]
        assert layout["boxes"][3].tolist() == torch.tensor(PINNED_BOX).tolist()
    free = sampler.predict_layout(GRAPH, seed=0)[0]["boxes"]
    steered = sampler.predict_layout(GRAPH, seed=0, pinned=[pins])[0]["boxes"]
    assert not torch.equal(free[[0, 1, 2, 4]], steered[[0, 1, 2, 4]])
    # a graph's own boxes are pinned too, refined or not
    boxes = [[0.0, 0.0, 1.0, 0.4], [0.0, 0.5, 1.0, 1.0], [0.1, 0.1, 0.3, 0.3], [0.5, 0.2, 0.7, 0.4],
             [0.8, 0.0, 0.9, 0.1]]
    for refine in (True, False):
        given = sampler.predict_layout({**GRAPH, "boxes": boxes}, seed=2, refine=refine)[0]["boxes"]
        assert given.tolist() == torch.tensor(boxes).tolist()
    with pytest.raises(GraphError, match=r"pinned: graph 0: object 1: box \[0.5, 0.5, 0.4, 0.9\] is inverted"):
        sampler.predict_layout(GRAPH, pinned=[[None, [0.5, 0.5, 0.4, 0.9], None, None, None]])
    with pytest.raises(GraphError, match=r"pinned: graph 0: expected one box or None per object \(5\)"):
        sampler.predict_layout(GRAPH, pinned=[[None]])
    with pytest.raises(GraphError, match=r"pinned: expected one entry per graph \(1\), got 2"):
        sampler.predict_layout(GRAPH, pinned=[None, None])
    with pytest.raises(ConfigError, match=r"text given, but this model has no text encoder \(text_dim=0\)"):
        sampler.predict_layout(GRAPH, text="a circle")
    with pytest.raises(ConfigError, match="num_samples must be a positive integer, got 0"):
        sampler.predict_layout(GRAPH, num_samples=0)


def test_refinement_keeps_every_relation_of_every_sample(sampler):
    refined = sampler.predict_layout(GRAPH, seed=0, num_samples=4, refine=True)
    raw = sampler.predict_layout(GRAPH, seed=0, num_samples=4, refine=False)
    assert sum(kept(r)[0] for r in raw) < 16  # the untrained sampler breaks some
    assert [kept(r) for r in refined] == [(4, 4)] * 4
    pins = [None, None, [0.7, 0.4, 0.9, 0.6], None, None]  # the circle pinned right: the square must go further right
    pinned = sampler.predict_layout(GRAPH, seed=1, refine=True, pinned=[pins])[0]
    assert kept(pinned) == (4, 4) and pinned["boxes"][2].tolist() == torch.tensor(pins[2]).tolist()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layout_cli_prints_or_writes_graphs_that_generate_reproduces(sampler_checkpoint, tmp_path, capsys):
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_text(json.dumps(GRAPH))
    many.write_text(json.dumps([GRAPH, {"objects": ["sea", "star"], "relationships": [[1, "above", 0]]}]))
    base = ["layout", one, "--checkpoint", sampler_checkpoint, "--device", "cpu"]
    code, printed, _ = run_cli(capsys, *base, "--seed", 3)
    assert code == 0
    data = json.loads(printed)
    assert data["objects"] == GRAPH["objects"] and len(data["boxes"]) == 5
    assert data["boxes"] == SceneGraphToImage.from_pretrained(sampler_checkpoint).predict_layout(
        GRAPH, seed=3)[0]["boxes"].tolist()
    assert json.loads(run_cli(capsys, *base, "--seed", 3)[1]) == data
    assert json.loads(run_cli(capsys, *base, "--seed", 4)[1])["boxes"] != data["boxes"]
    unrefined = json.loads(run_cli(capsys, *base, "--seed", 3, "--no-refine")[1])
    assert unrefined["boxes"] != data["boxes"]
    # a list in, a list out; graph i takes seed + i, as `generate` does; the file validates
    out = tmp_path / "with_boxes.json"
    code, _, err = run_cli(capsys, "layout", many, "--checkpoint", sampler_checkpoint, "--seed", 3, "--out", out)
    assert code == 0 and "wrote 2 graph(s)" in err
    written = SceneGraph.read(out)
    assert [g.objects for g in written] == [GRAPH["objects"], ["sea", "star"]] and written[0].boxes == data["boxes"]
    for source, name in ((many, "from_graph"), (out, "from_layout")):
        assert run_cli(capsys, "generate", source, "--checkpoint", sampler_checkpoint, "--seed", 3, "--device", "cpu",
                       "--out", tmp_path / name)[0] == 0
    for i in range(2):
        png = f"graph_{i:03d}_sample_0.png"
        assert (tmp_path / "from_graph" / png).read_bytes() == (tmp_path / "from_layout" / png).read_bytes()
    code, _, err = run_cli(capsys, "layout", tmp_path / "missing.json", "--checkpoint", sampler_checkpoint)
    assert code == 2 and "missing.json: file not found" in err


def test_the_sampler_config_trains_with_its_losses(tiny_shapes, tmp_path):
    from layout2img.config import load_config
    from layout2img.training.trainer import Trainer

    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path / "run", max_steps=2, checkpoint_every=2,
                                           **{"model.layout.predictor": "sampler", "model.layout.hidden": 16,
                                              "model.layout.z_dim": 4, "loss.lambda_layout_relation": 2.0}))
    trainer = Trainer(cfg)
    try:
        batch = next(iter(trainer.loader)).to(trainer.device)
        values = trainer.train_step(batch)
        assert {"box", "mask", "layout_kl", "layout_prior", "layout_relation"} <= set(values)
        assert all(v >= 0 for k, v in values.items() if k.startswith("layout_"))
        folder = trainer.fit()
    finally:
        trainer.close()
    model = SceneGraphToImage.from_pretrained(folder)
    assert model.samples_layouts and model.config["layout"]["z_dim"] == 4
    a, b = (model.predict_layout(GRAPH, seed=s)[0]["boxes"] for s in (0, 1))
    assert not torch.equal(a, b)
