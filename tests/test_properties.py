"""Property-based tests: scene graphs of every shape, valid and malformed, through validation and generation.

Whatever the input, ``validate_data`` and ``generate`` raise nothing but the project's own errors
(a traceback would be a bug), reject a malformed graph with one line per problem, and accept a
valid one, whose images are finite. The example count is bounded for CI (the profile below);
``LAYOUT2IMG_HYPOTHESIS_PROFILE=thorough`` runs many more.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_MODEL
from layout2img.errors import GraphError, Layout2ImgError
from layout2img.graph import SceneGraph, validate_data
from layout2img.pipeline import SceneGraphToImage
from strategies import MAX_OBJECTS, VOCAB, any_json, malformed_graphs, valid_graphs

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
# CI's profile is derandomized: a failure there reproduces on every machine
settings.register_profile("layout2img-ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("layout2img-thorough", max_examples=2000, **_COMMON)
PROFILE = settings.get_profile("layout2img-" + os.environ.get("LAYOUT2IMG_HYPOTHESIS_PROFILE", "ci"))
#: generation costs milliseconds a graph on the tiny model: fewer examples than validation gets
GENERATE = settings(PROFILE, max_examples=max(10, PROFILE.max_examples // 2))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SceneGraphToImage(**TINY_MODEL).eval()


def _objects(graph: dict) -> list:
    return graph["objects"] if "objects" in graph else [node["name"] for node in graph["nodes"]]


def _relations(graph: dict) -> int:
    return len(graph.get("relationships", graph.get("edges", graph.get("links", []))))


# -- validation ---------------------------------------------------------------------------------------
@PROFILE
@given(data=any_json)
def test_validate_data_answers_any_json_with_graphs_or_error_lines(data):
    graphs, errors = validate_data(data, VOCAB, source="any.json")
    items = data if isinstance(data, list) else [data]
    assert all(isinstance(e, str) and "\n" not in e and e.startswith("any.json: ") for e in errors)
    if isinstance(data, (dict, list)) and items:
        bad = {int(e.split(": graph ", 1)[1].split(":", 1)[0]) for e in errors}
        assert len(graphs) + len(bad) == len(items)  # every graph is either accepted or named in an error
    else:
        assert graphs == [] and len(errors) == 1


@PROFILE
@given(graph=valid_graphs())
def test_a_valid_graph_is_accepted_as_written(graph):
    warnings: list[str] = []
    graphs, errors = validate_data(graph, VOCAB, warnings=warnings)
    assert errors == [] and len(graphs) == 1
    g = graphs[0]
    assert g.objects == _objects(graph) and g.num_relations == _relations(graph)
    self_relations = [r for r in g.relationships if r[0] == r[2]]
    assert len(warnings) == len(self_relations)
    # strict mode turns exactly those warnings into errors
    assert len(validate_data(graph, VOCAB, strict=True)[1]) == len(self_relations)
    # both written forms read back as the same graph
    assert SceneGraph.from_dict(g.to_dict(), VOCAB) == g
    assert SceneGraph.from_node_link(g.to_node_link(), VOCAB) == g
    # and survive JSON
    assert validate_data(json.loads(json.dumps(graph)), VOCAB)[0] == graphs


@PROFILE
@given(case=malformed_graphs())
def test_a_malformed_graph_is_rejected_with_one_line_per_problem(case):
    reason, data = case
    graphs, errors = validate_data(data, VOCAB, source="bad.json")
    assert graphs == [], reason
    assert errors, reason
    assert all("\n" not in e and e.startswith("bad.json: ") for e in errors), errors


@PROFILE
@given(case=malformed_graphs())
def test_reading_a_malformed_graph_raises_a_graph_error_naming_it(case):
    reason, data = case
    if not isinstance(data, dict):
        data = {"objects": data}  # from_dict reads one graph: wrap the non-dict ones
    with pytest.raises(GraphError) as err:
        SceneGraph.from_dict(data, VOCAB, source="bad.json", max_objects=MAX_OBJECTS)
    assert str(err.value).startswith("bad.json: graph 0: ") and "\n" not in str(err.value), reason


# -- generation ---------------------------------------------------------------------------------------
@GENERATE
@given(graph=valid_graphs(max_objects=8), seed=st.integers(0, 2**63 - 1))
def test_an_accepted_graph_generates_finite_pixels(tiny_model, graph, seed):
    images = tiny_model.generate(graph, seed=seed)
    assert images.shape == (1, 3, 32, 32)
    assert torch.isfinite(images).all() and images.abs().max() <= 1


@GENERATE
@given(case=malformed_graphs().filter(lambda c: c[0] != "too_many_objects"))
def test_generate_rejects_a_malformed_graph_with_a_project_error(tiny_model, case):
    # too_many_objects is left out: generate has no object limit (validation's is for files)
    reason, data = case
    with pytest.raises(Layout2ImgError):
        tiny_model.generate(data)


@GENERATE
@given(data=any_json)
def test_generate_answers_any_json_with_images_or_a_project_error(tiny_model, data):
    try:
        images = tiny_model.generate(data)
    except Layout2ImgError as e:
        assert "\n" not in str(e)
        return
    assert torch.isfinite(images).all()


# -- benchmarks/fuzz.py -----------------------------------------------------------------------------------
def _fuzz_module():
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    import fuzz  # noqa: PLC0415  (benchmarks/fuzz.py)

    return fuzz


def test_fuzz_benchmark_counts_a_small_run_and_writes_the_machine(tmp_path, capsys, monkeypatch):
    fuzz = _fuzz_module()
    monkeypatch.setattr(fuzz, "guard_from_args", lambda args: {"busy": None, "load_1min": 0.1})
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--cases", "40", "--no-progress", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    v, g = report["validate"], report["generate"]
    assert sum(report["drawn"].values()) == 40 and v["accepted"] + v["rejected"] == 40
    assert sum(v["rejected_by_reason"].values()) == v["rejected"] and v["crashes"] == g["crashes"] == 0
    assert g["non_finite"] == 0 and v["malformed_accepted"] == {} and report["crashes"] == []
    assert g["images"] >= v["accepted"] > 0  # every accepted case was drawn (one image per graph)
    assert report["protocol"]["cases"] == 40 and report["machine"]["guard"]["load_1min"] == 0.1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4].startswith("fuzz: 40 cases in ") and lines[-1].startswith("machine: ")


class _Broken:
    """A model whose generate crashes (a bug) or paints NaN, to see the fuzz count both."""

    def __init__(self, fail: bool):
        self.fail = fail

    def generate(self, graphs, seed=0):
        if self.fail:
            raise RuntimeError("boom")
        n = len(graphs) if isinstance(graphs, list) else 1
        return torch.full((n, 3, 4, 4), float("nan"))


def test_fuzz_counts_crashes_and_non_finite_images_as_failures():
    fuzz = _fuzz_module()
    tally = fuzz.Tally()
    fuzz.run_case(_Broken(fail=True), VOCAB, "object_unknown", {"objects": ["unicorn"]}, tally, seed=0)
    assert tally.validate["rejected"] == 1 and tally.validate_reasons == {"unknown name": 1}
    assert tally.generate["crashes"] == 1 and tally.crashes[0]["type"] == "RuntimeError"
    tally = fuzz.Tally()
    fuzz.run_case(_Broken(fail=False), VOCAB, "valid", {"objects": ["circle", "sky"]}, tally, seed=0)
    fuzz.flush(_Broken(fail=False), tally, seed=0)
    assert tally.validate["accepted"] == 1 and tally.generate["non_finite"] == 1 and tally.failures == 1
