"""The editor API with a layout sampler: the sampled layout in the answer, `layout_seed` ("New layout")
drawing another with the pinned boxes kept, old requests unchanged, and a regression model ignoring it."""
from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL
from fastapi.testclient import TestClient

from layout2img import SceneGraphToImage
from layout2img.web.server import build_app

GRAPH = {"objects": ["sky", "grass", "circle", "square"],
         "relationships": [[0, "above", 1], [2, "left of", 3], [2, "above", 1]]}
SEEDS = [1, 2, 3, 4]


def serving(predictor: str):
    torch.manual_seed(0)
    model = SceneGraphToImage(**{**TINY_MODEL, "layout": {**TINY_MODEL["layout"], "predictor": predictor}}).eval()
    with TestClient(build_app(model, quiet=True), base_url="http://127.0.0.1") as client:
        client.model = model
        yield client


@pytest.fixture(scope="module")
def sampler_server():
    yield from serving("sampler")


@pytest.fixture(scope="module")
def regression_server():
    yield from serving("regression")


def call(client, method: str, path: str, body=None):
    """(status, parsed JSON) of one request to the app."""
    res = client.request(method, path, json=body)
    return res.status_code, res.json()


def generate(server, graph=GRAPH, **fields):
    status, out = call(server, "POST", "/api/generate", {"graph": graph, "style_seeds": SEEDS, **fields})
    assert status == 200, out
    return out


def test_info_says_whether_the_model_samples_layouts(sampler_server, regression_server):
    assert call(sampler_server, "GET", "/api/info")[1]["layout_sampler"] is True
    assert call(regression_server, "GET", "/api/info")[1]["layout_sampler"] is False


def test_the_answer_is_the_sampled_layout_and_a_new_layout_seed_draws_another(sampler_server):
    model = sampler_server.model
    first = generate(sampler_server, layout_seed=5)
    assert first["layout_seed"] == 5
    expected = model.predict_layout(GRAPH, seed=5)[0]["boxes"]
    assert first["boxes"] == [[round(v, 4) for v in b] for b in expected.tolist()]
    again = generate(sampler_server, layout_seed=5)
    assert again["boxes"] == first["boxes"] and again["image"] == first["image"]
    other = generate(sampler_server, layout_seed=6)
    assert other["boxes"] != first["boxes"] and other["image"] != first["image"]
    # an old request (no layout_seed) draws the layout of its seed, as before the field existed
    old = generate(sampler_server, seed=5)
    assert old["layout_seed"] == 5 and old["boxes"] == first["boxes"]


def test_pinned_boxes_stay_when_the_layout_is_drawn_again(sampler_server):
    pin = [0.55, 0.3, 0.85, 0.6]
    graph = {**GRAPH, "boxes": [None, None, None, pin]}
    answers = [generate(sampler_server, graph, layout_seed=s) for s in (1, 2)]
    for out in answers:
        assert out["boxes"][3] == pin and out["pinned"] == [False, False, False, True]
    assert answers[0]["boxes"][:3] != answers[1]["boxes"][:3]
    free = generate(sampler_server, layout_seed=1)
    assert free["boxes"][:3] != answers[0]["boxes"][:3]  # the free boxes are placed around the pinned one


def test_a_bad_layout_seed_is_refused(sampler_server):
    status, out = call(sampler_server, "POST", "/api/generate", {"graph": GRAPH, "layout_seed": -3})
    assert status == 400 and "'layout_seed' must be an integer between 0 and 2**63-1, got -3" in out["error"]


def test_a_regression_model_has_one_layout_whatever_the_layout_seed(regression_server):
    a, b = generate(regression_server, layout_seed=1), generate(regression_server, layout_seed=2)
    assert a["boxes"] == b["boxes"] and a["image"] == b["image"] and b["layout_seed"] == 2
