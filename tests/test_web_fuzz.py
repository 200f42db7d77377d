"""A schema-driven fuzz of the editor's API: schemathesis reads /openapi.json and Hypothesis sends
requests generated from it (bodies, queries and paths that fit the schema, and ones that do not)
to the ASGI app in-process; no answer may be a 5xx, and every refusal is JSON with one line the
page can show. Bounded: a fixed number of examples per operation and mode, derandomized, so the
run takes seconds and repeats."""
import pytest
from hypothesis import HealthCheck, given, settings

from layout2img.generate import load_model
from layout2img.web.server import build_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install '.[test]')")

EXAMPLES = 25  # per operation and mode (11 runs): about 15 s with the tiny model on one core
OPERATIONS = ["GET /api/info", "GET /api/health", "GET /api/styles", "POST /api/generate", "POST /api/edit",
              "GET /api/edit/{job}", "POST /api/edit/{job}/cancel", "POST /api/appearance"]
#: No input a request could get wrong: no parameters, or one free string (the job id in the path).
NO_INVALID = {"GET /api/info", "GET /api/health", "GET /api/edit/{job}"}
LOCAL = {"Host": "127.0.0.1"}  # a loopback name: other Hosts are refused before any route runs


@pytest.fixture(scope="module")
def api_schema(tiny_styled_checkpoint):
    # style clusters fitted (/api/styles draws swatches); no CLIP: an edit request is parsed and
    # checked, then answered 409, so the fuzz never starts background edits
    app = build_app(load_model(tiny_styled_checkpoint, "cpu"), quiet=True)
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOCAL)


def test_the_schema_lists_every_operation_fuzzed(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label, mode", [(label, mode) for label in OPERATIONS for mode in ("positive", "negative")
                                         if mode == "positive" or label not in NO_INVALID])
def test_no_request_makes_the_server_fail(api_schema, label, mode):
    operation = api_schema.find_operation_by_label(label)
    seen = []

    @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        response = case.call(headers=LOCAL)
        seen.append(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
        answer = response.json()  # every answer, refusals included, is JSON
        if response.status_code >= 400:
            assert isinstance(answer["error"], str) and "\n" not in answer["error"] and answer["errors"], answer

    fuzz()
    assert seen  # the strategy produced requests
