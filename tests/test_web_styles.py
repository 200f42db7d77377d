"""The editor's style clusters: `serve --style`, /api/info's clusters per class, /api/styles' codes and
swatch colours, and seeds, generate and edits drawing codes as the server's style says."""
import base64
import io
import time

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP
from fastapi.testclient import TestClient
from PIL import Image

from layout2img.cli import main
from layout2img.errors import ConfigError
from layout2img.generate import load_model, object_style_codes
from layout2img.models.text import TextEncoder
from layout2img.web.server import build_app
from layout2img.web.styles import SWATCH_BOX

GRAPH = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]}


def serving(model, **kwargs):
    """A TestClient of the editor app for ``model`` (``.service``: the app's model service)."""
    app = build_app(model, quiet=True, **kwargs)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.service = app.state.service
        yield client


@pytest.fixture(scope="module")
def styled(tiny_styled_checkpoint):
    yield from serving(load_model(tiny_styled_checkpoint, "cpu"))


@pytest.fixture(scope="module")
def unfitted(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    model.style_clusters.is_fitted.fill_(False)
    yield from serving(model)


def request(client, path, body=None):
    """(status, JSON answer) of a GET (or, with ``body``, a JSON POST) to the app."""
    res = client.get(path) if body is None else client.post(path, json=body)
    return res.status_code, res.json()


def pixels(data_url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_info_and_styles_give_each_class_its_clusters_with_swatches(styled, monkeypatch):
    model = styled.service.model
    clusters = model.style_clusters
    status, info = request(styled, "/api/info")
    assert status == 200 and info["style_source"] == "cluster"
    names = model.vocab.object_names
    assert info["style_clusters"] == {names[c]: int(n) for c, n in enumerate(clusters.counts.tolist()) if n > 0}
    assert info["style_clusters"]["circle"] >= 1 and "__image__" not in info["style_clusters"]

    status, answer = request(styled, "/api/styles?object=circle")
    c = model.vocab.object_index("circle")
    assert status == 200 and answer["object"] == "circle"
    assert [s["index"] for s in answer["clusters"]] == list(range(info["style_clusters"]["circle"]))
    codes = torch.tensor([s["code"] for s in answer["clusters"]])
    assert torch.equal(codes, clusters.centres[c, : len(codes)])  # exactly the centres
    # a swatch is the mean colour of the class drawn alone with that code, weighted by its visible share
    out = model.generate({"objects": ["circle"], "relationships": [], "boxes": [SWATCH_BOX]}, return_output=True,
                         style_codes=codes[-1:])
    w = out.layout.geometry.weights[0]
    mean = ((out.images[0] + 1) / 2 * w).sum(dim=(1, 2)) / w.sum()
    swatch = answer["clusters"][-1]["color"]
    assert np.abs(np.array([int(swatch[i:i + 2], 16) for i in (1, 3, 5)]) - mean.numpy() * 255).max() <= 1

    def no_model(*args, **kwargs):
        raise AssertionError("a cached class ran the model again")

    monkeypatch.setattr(model, "generate", no_model)
    assert request(styled, "/api/styles?object=circle") == (200, answer)


@pytest.mark.parametrize("path, status, words", [
    ("/api/styles", 400, "missing query parameter 'object'"),
    ("/api/styles?object=", 400, "give the object class"),
    ("/api/styles?object=unicorn", 400, "unknown object class 'unicorn'"),
    ("/api/styles?object=__image__", 400, "unknown object class"),
])
def test_bad_styles_requests_name_the_problem(styled, path, status, words):
    got, answer = request(styled, path)
    assert got == status and words in answer["error"]


def test_a_cluster_code_draws_what_the_swatch_depicts_and_seeds_follow_the_style(styled):
    model = styled.service.model
    _, answer = request(styled, "/api/styles?object=circle")
    code = answer["clusters"][0]["code"]
    body = {"graph": GRAPH, "style_seeds": [1, 2, 3], "style_codes": [None, None, code]}
    status, got = request(styled, "/api/generate", body)
    assert status == 200
    seeds = object_style_codes(model, GRAPH["objects"], [1, 2, 3], style="cluster")
    seeds[2] = torch.tensor(code)
    expected = model.generate(GRAPH, style_codes=seeds)[0]
    assert np.abs(pixels(got["image"]).astype(int)
                  - ((expected.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(int)).max() <= 1


def test_serve_style_sample_draws_seeds_from_normal_codes(tiny_styled_checkpoint):
    model = load_model(tiny_styled_checkpoint, "cpu")
    for srv in serving(model, style="sample"):
        _, info = request(srv, "/api/info")
        assert info["style_source"] == "sample" and info["style_clusters"]  # the clusters stay listed
        _, a = request(srv, "/api/generate", {"graph": GRAPH, "style_seeds": [1, 2, 3]})
        expected = model.generate(GRAPH, style_codes=object_style_codes(model, GRAPH["objects"], [1, 2, 3],
                                                                        style="sample"))[0]
        assert np.abs(pixels(a["image"]).astype(int)
                      - ((expected.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(int)).max() <= 1
        _, b = request(srv, "/api/generate", {"graph": GRAPH, "seed": 4})  # no seeds: generate's own draw
        expected = model.generate(GRAPH, seed=4, style_source="sample", layout_source="pred")[0]
        assert np.abs(pixels(b["image"]).astype(int)
                      - ((expected.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(int)).max() <= 1


def test_an_edit_without_seeds_starts_from_the_servers_style(tiny_styled_checkpoint):
    torch.manual_seed(0)
    clip = TextEncoder.from_config(TINY_CLIP).freeze()
    model = load_model(tiny_styled_checkpoint, "cpu")
    for srv in serving(model, style="sample", clip=clip, clip_spec="tiny-clip", edit_options={"restarts": 1}):
        _, before = request(srv, "/api/generate", {"graph": GRAPH, "seed": 4})
        status, job = request(srv, "/api/edit", {"graph": GRAPH, "seed": 4, "text": "a red circle", "target": 2,
                                                  "steps": 0})
        assert status == 202
        deadline = time.monotonic() + 60
        while job["state"] not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.1)
            _, job = request(srv, f"/api/edit/{job['job']}")
        assert job["state"] == "done" and job["improved"] is False
        assert np.array_equal(pixels(job["image"]), pixels(before["image"]))  # nothing found: the same image


def test_without_fitted_clusters_there_is_nothing_to_step_through(unfitted, tiny_checkpoint, tmp_path, capsys):
    _, info = request(unfitted, "/api/info")
    assert info["style_source"] == "sample" and info["style_clusters"] == {}
    status, answer = request(unfitted, "/api/styles?object=circle")
    assert status == 409 and "layout2img fit-styles" in answer["error"]
    with pytest.raises(ConfigError, match="fit-styles"):
        build_app(unfitted.service.model, style="cluster")
    model = load_model(tiny_checkpoint, "cpu")
    model.style_clusters.is_fitted.fill_(False)
    folder = model.save_pretrained(tmp_path / "unfitted")
    assert main(["serve", "--checkpoint", str(folder), "--device", "cpu", "--port", "0", "--style", "cluster"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run `layout2img fit-styles --checkpoint {folder}`" in err[0]
