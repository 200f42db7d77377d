"""The editor's HTTP API (`layout2img serve`, a FastAPI app): answers, error statuses and words, the
protections (Host, Origin, Content-Type, body size, CSP), /openapi.json, pinned boxes, per-object
styles, batching of concurrent generate requests, a bounded burst on a real uvicorn server, and the
`serve` command. Most tests use FastAPI's TestClient (in-process, no socket); edit jobs are in
test_web_edits.py, the schema-driven fuzz in test_web_fuzz.py."""
import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import serve_in_thread
from fastapi.testclient import TestClient
from PIL import Image

from layout2img.cli import main
from layout2img.commands import serve as serve_command
from layout2img.errors import ConfigError
from layout2img.generate import load_model, object_style_codes
from layout2img.web import scheduler, server
from layout2img.web.server import MAX_BODY, EditorServer, build_app

GRAPH = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]}
SCENE = {"graph": GRAPH, "style_seeds": [1, 2, 3]}
LOCAL = "http://127.0.0.1:7860"  # TestClient's Host: a loopback name, as a browser on this machine sends


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    return build_app(load_model(tiny_checkpoint, "cpu"), quiet=True, log=io.StringIO(), max_waiting=64)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def call(client, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or raw bytes, response) of one request."""
    kwargs = {"content": raw} if raw is not None else ({"json": body} if body is not None else {})
    res = client.request(method, path, headers={"Content-Type": "application/json", **(headers or {})}, **kwargs)
    kind = res.headers.get("content-type", "")
    return res.status_code, (res.json() if kind.startswith("application/json") else res.content), res


def png(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def pixels(data_url):
    return np.asarray(png(data_url).convert("RGB"), dtype=np.int16)


def test_info_describes_the_model(client):
    status, info, _ = call(client, "GET", "/api/info")
    assert status == 200
    assert info["vocab"] == "shapes" and info["image_size"] == 32
    assert "circle" in info["objects"] and "__image__" not in info["objects"]
    assert "left of" in info["predicates"] and "__in_image__" not in info["predicates"]
    assert info["text"] is False and "no text encoder" in info["text_reason"]
    assert info["style"] is True and info["max_body"] == MAX_BODY and info["max_batch"] == scheduler.MAX_BATCH


def test_page_and_assets_are_served_locally_with_a_csp(client):
    status, page, res = call(client, "GET", "/")
    assert status == 200 and b'<script src="/app.js"' in page
    assert "default-src 'self'" in res.headers["Content-Security-Policy"]
    assert "script-src 'self'" in res.headers["Content-Security-Policy"]
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert b"http://" not in page and b"https://" not in page  # no CDN: everything comes from here
    status, script, res = call(client, "GET", "/app.js")
    assert status == 200 and res.headers["Content-Type"].startswith("text/javascript")
    assert b"/api/generate" in script
    assert call(client, "GET", "/style.css")[0] == 200
    status, script, _ = call(client, "GET", "/edit.js")
    assert status == 200 and b"/api/edit" in script and b'<script src="/edit.js"' in page
    assert "Content-Security-Policy" in call(client, "GET", "/api/info")[2].headers  # on JSON answers too


def test_openapi_describes_every_route_with_its_models(client):
    status, spec, _ = call(client, "GET", "/openapi.json")
    assert status == 200 and spec["info"]["title"] == "layout2img editor"
    paths = spec["paths"]
    assert set(paths) == {"/api/info", "/api/health", "/api/styles", "/api/generate", "/api/edit",
                          "/api/edit/{job}", "/api/edit/{job}/cancel", "/api/appearance"}
    assert set(paths["/api/generate"]) == {"post"} and set(paths["/api/edit/{job}"]) == {"get"}
    schemas = spec["components"]["schemas"]
    assert {"SceneRequest", "EditRequest", "Generated", "Info", "EditJob", "ErrorAnswer"} <= set(schemas)
    scene = schemas["SceneRequest"]
    assert scene["required"] == ["graph"] and scene["additionalProperties"] is False
    graph = scene["properties"]["graph"]
    assert graph["required"] == ["objects"]  # the sg2im form, described with this model's names
    assert "circle" in graph["properties"]["objects"]["items"]["enum"]
    assert graph["properties"]["objects"]["maxItems"] == 32
    answers = paths["/api/generate"]["post"]["responses"]
    assert {"200", "400", "413", "415", "429"} <= set(answers)
    status, docs, res = call(client, "GET", "/docs")
    assert status == 200 and b"/openapi.json" in docs


def test_generate_returns_image_layout_and_boxes(client):
    status, out, _ = call(client, "POST", "/api/generate", {"graph": GRAPH, "seed": 1, "style_seeds": [1, 2, 3]})
    assert status == 200, out
    assert png(out["image"]).size == (32, 32)
    assert png(out["layout_image"]).size == (256, 256)
    assert png(out["masks_image"]).size == (256, 256)
    assert len(out["boxes"]) == 3 and out["pinned"] == [False, False, False]
    for x0, y0, x1, y1 in out["boxes"]:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert out["objects"] == GRAPH["objects"] and len(out["colors"]) == 3 and out["batch"] == 1


def test_pinned_box_is_kept_and_the_others_stay_predicted(client):
    _, free, _ = call(client, "POST", "/api/generate", SCENE)
    pin = [0.1, 0.6, 0.4, 0.9]
    graph = {**GRAPH, "boxes": [None, None, pin]}
    status, pinned, _ = call(client, "POST", "/api/generate", {"graph": graph, "style_seeds": [1, 2, 3]})
    assert status == 200, pinned
    assert pinned["pinned"] == [False, False, True]
    assert pinned["boxes"][2] == pin
    assert pinned["boxes"][:2] == free["boxes"][:2]
    assert pinned["image"] != free["image"]
    all_boxes = {**GRAPH, "boxes": [[0, 0, 1, 0.5], [0, 0.5, 1, 1], pin]}  # every box given: the user's layout
    _, fixed, _ = call(client, "POST", "/api/generate", {"graph": all_boxes})
    assert fixed["boxes"] == all_boxes["boxes"] and fixed["pinned"] == [True, True, True]


def test_style_seeds_restyle_one_object_and_repeat_exactly(client):
    def image(seeds):
        status, out, _ = call(client, "POST", "/api/generate", {"graph": GRAPH, "style_seeds": seeds})
        assert status == 200, out
        return out["image"]

    first = image([5, 6, 7])
    assert image([5, 6, 7]) == first
    assert image([5, 6, 8]) != first


@pytest.mark.parametrize("body, words", [
    ({"graph": {"objects": ["circel", "sky"], "relationships": []}},
     ["request: graph 0: object 0: unknown object 'circel'", "did you mean 'circle'?"]),
    ({"graph": {"objects": ["sky"], "relationships": [[0, "above", 3]]}}, ["relation 0: object index 3"]),
    ({"graph": {"objects": []}}, ["empty graph"]),
    ({"graph": [GRAPH]}, ["'graph' must be one scene graph"]),
    ({"graph": GRAPH, "colour": 1}, ["unknown field 'colour' (known: graph, seed, layout_seed"]),
    ({}, ["missing 'graph'"]),
    ([1, 2], ["the request must be a JSON object"]),
    ({"graph": GRAPH, "seed": -1}, ["'seed' must be an integer between 0 and 2**63-1, got -1"]),
    ({"graph": GRAPH, "seed": 1.5}, ["'seed' must be an integer"]),
    ({"graph": GRAPH, "seed": True}, ["'seed' must be an integer"]),
    ({"graph": GRAPH, "style_seeds": [1]}, ["one integer per object (3)"]),
    ({"graph": GRAPH, "style_seeds": [1, 2, "x"]}, ["'style_seeds[2]' must be an integer"]),
    ({"graph": {**GRAPH, "boxes": [None, None, [0.5, 0.5, 0.2, 0.9]]}}, ["object 2:", "inverted or empty"]),
    ({"graph": {**GRAPH, "boxes": [None]}}, ["one box or null per object (3)"]),
    ({"graph": {**GRAPH, "caption": "a sunny day"}}, ["no text encoder", "caption"]),
    ({"graph": {**GRAPH, "descriptions": [None, "wet grass", None]}}, ["no text encoder", "descriptions"]),
    ({"graph": {"objects": ["circle"] * 40, "relationships": []}}, ["40 objects, more than the limit of 32"]),
])
def test_bad_requests_get_400_with_the_reason_in_one_line(client, body, words):
    got, out, _ = call(client, "POST", "/api/generate", body)
    assert got == 400, out
    for w in words:
        assert w in out["error"], out
    assert "\n" not in out["error"] and out["errors"] and out["errors"][0] == out["error"]


def test_every_validation_line_comes_back(client):
    bad = {"objects": ["circel", "sky", 7], "relationships": [[0, "lft of", 1]]}
    _, out, _ = call(client, "POST", "/api/generate", {"graph": bad})
    assert len(out["errors"]) == 3
    assert any("object 2: expected a name (string)" in e for e in out["errors"])
    assert any("unknown predicate 'lft of'" in e for e in out["errors"])


def test_malformed_bodies_and_methods_get_4xx(client):
    status, out, _ = call(client, "POST", "/api/generate", raw=b'{"graph": {"objects": ["sky"]')
    assert status == 400 and out["error"].startswith("request body: malformed JSON at character 30")
    status, out, _ = call(client, "POST", "/api/generate", raw=b'{"graph": "\xff"}')
    assert status == 400 and out["error"] == "request body: not UTF-8 text (byte 0xff)"
    status, out, _ = call(client, "POST", "/api/generate", raw=b"[" * 50000)  # deep but small: no crash
    assert status == 400 and "nested too deeply" in out["error"]
    status, out, res = call(client, "GET", "/api/generate")
    assert status == 405 and res.headers["Allow"] == "POST" and out["error"] == "GET /api/generate: use POST"
    status, out, _ = call(client, "GET", "/etc/passwd")
    assert status == 404 and "not found" in out["error"]
    assert call(client, "GET", "/../layout2img/web/server.py")[0] == 404


def test_protections_host_origin_content_type_and_size(client):
    status, out, _ = call(client, "GET", "/api/info", headers={"Host": "attacker.example:7860"})
    assert status == 403 and "Host 'attacker.example:7860' is not allowed" in out["error"]
    status, out, _ = call(client, "POST", "/api/generate", SCENE, headers={"Origin": "https://evil.example"})
    assert status == 403 and "Origin 'https://evil.example' is not allowed" in out["error"]
    assert call(client, "GET", "/api/info", headers={"Host": "localhost:7860"})[0] == 200
    assert call(client, "POST", "/api/generate", SCENE, headers={"Origin": "http://localhost:7860"})[0] == 200
    status, out, _ = call(client, "POST", "/api/generate", raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in out["error"]  # what a cross-site form can send
    status, out, res = call(client, "POST", "/api/generate", raw=b"[" * 100000)
    assert status == 413 and f"limit of {MAX_BODY}" in out["error"]
    assert "Content-Security-Policy" in res.headers

    def chunked():  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b" " * 10000

    res = client.post("/api/generate", content=chunked(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and f"limit of {MAX_BODY}" in res.json()["error"]


def test_a_failing_request_is_a_500_and_the_server_goes_on(app, client, monkeypatch):
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.service, "generate", broken)
    status, out, _ = call(client, "POST", "/api/generate", SCENE)
    assert status == 500 and "internal error" in out["error"] and "boom" not in out["error"]
    assert "RuntimeError: boom" in app.state.log.file.getvalue()  # the traceback is in the server's log
    monkeypatch.undo()
    assert call(client, "POST", "/api/generate", SCENE)[0] == 200


def test_busy_server_answers_429_instead_of_queueing_without_bound(app, client):
    service = app.state.service
    service.max_waiting, old = 0, service.max_waiting
    try:
        status, out, res = call(client, "POST", "/api/generate", SCENE)
        assert status == 429 and "busy" in out["error"] and res.headers["Retry-After"] == "1"
    finally:
        service.max_waiting = old


# -- a real server ----------------------------------------------------------------------------------
def test_burst_of_200_mixed_requests_on_uvicorn_leaves_the_server_up(app):
    good = json.dumps(SCENE).encode()
    requests = [
        ("POST", "/api/generate", good, 200),
        ("POST", "/api/generate", b'{"graph": {"objects": ["nope"]}}', 400),
        ("POST", "/api/generate", b"{not json", 400),
        ("POST", "/api/generate", b" " * (MAX_BODY + 1), 413),
        ("GET", "/api/info", None, 200),
        ("GET", "/missing", None, 404),
        ("PUT", "/api/generate", b"{}", 405),
        ("GET", "/", None, 200),
    ]
    for srv in serve_in_thread(app):
        def one(k):
            method, path, raw, expected = requests[k % len(requests)]
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            try:
                conn.request(method, path, body=raw, headers={"Content-Type": "application/json"})
                res = conn.getresponse()
                res.read()
                return res.status, expected
            finally:
                conn.close()

        before = sum(n for s, n in app.state.log.statuses.items() if s >= 500)
        with ThreadPoolExecutor(max_workers=8) as pool:  # bounded: 200 requests, 8 at a time, loopback only
            results = list(pool.map(one, range(200)))
        assert [s for s, e in results if s != e] == []
        assert sum(n for s, n in app.state.log.statuses.items() if s >= 500) == before
        assert one(4) == (200, 200)


def test_port_in_use_is_a_one_line_error(app):
    for srv in serve_in_thread(app):
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            EditorServer(app, "127.0.0.1", srv.port)


def test_build_app_checks_its_options(app):
    model = app.state.service.model
    with pytest.raises(ConfigError, match="edit option 'stpes'"):
        build_app(model, edit_options={"stpes": 2})
    with pytest.raises(ConfigError, match=r"--edit-restarts 0: expected an integer from 1 to 12"):
        build_app(model, edit_options={"restarts": 0})
    with pytest.raises(ConfigError, match=r"--max-edits 0"):
        build_app(model, max_edits=0)
    with pytest.raises(ConfigError, match=r"--max-batch 0"):
        build_app(model, max_batch=0)


def test_serve_help_shows_the_servers_defaults():
    assert (serve_command.MAX_EDITS, serve_command.EDIT_QUEUE) == (server.MAX_EDITS, server.EDIT_QUEUE)
    assert (serve_command.MAX_BATCH, serve_command.BATCH_WAIT_MS) == (scheduler.MAX_BATCH, scheduler.MAX_WAIT * 1000)
    from layout2img.web import models
    assert (serve_command.MAX_STEPS, serve_command.MAX_RESTARTS) == (models.MAX_STEPS, models.MAX_RESTARTS)


def test_serve_command_starts_answers_and_stops_on_ctrl_c(tiny_checkpoint):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "layout2img.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                             "--port", "0", "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the socket listens
        assert line.startswith("layout2img editor on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        deadline = time.monotonic() + 60
        while True:  # uvicorn starts serving just after the line
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/api/info")
                res = conn.getresponse()
                break
            except ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert res.status == 200 and json.loads(res.read())["vocab"] == "shapes"
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "GET /api/info 200" in err and "stopped" in err and "Traceback" not in err


@pytest.mark.parametrize("args, words", [
    (["--checkpoint", "no/such/folder"], "no/such/folder"),
    (["--checkpoint", "x", "--port", "70000"], "--port 70000: expected 0..65535"),
])
def test_serve_user_errors_exit_2_in_one_line(args, words, capsys):
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


# -- per-object style codes --------------------------------------------------------------------
def test_explicit_style_codes_override_the_seeds_object_by_object(app, client):
    codes = object_style_codes(app.state.service.model, GRAPH["objects"], [1, 2, 3]).tolist()
    _, by_seed, _ = call(client, "POST", "/api/generate", SCENE)
    status, by_code, _ = call(client, "POST", "/api/generate", {**SCENE, "style_codes": [None, codes[1], None]})
    assert status == 200 and by_code["image"] == by_seed["image"]  # the seed's own code: the same pixels
    _, all_codes, _ = call(client, "POST", "/api/generate", {"graph": GRAPH, "style_codes": codes})
    assert all_codes["image"] == by_seed["image"]
    other = [v + 1.5 for v in codes[2]]
    _, changed, _ = call(client, "POST", "/api/generate", {**SCENE, "style_codes": [None, None, other]})
    assert changed["image"] != by_seed["image"]


@pytest.mark.parametrize("codes, words", [
    ([None, None], "one code (or null) per object (3)"),
    ([None, None, [0.0] * 3], "style_codes[2] must be a list of 8 finite numbers"),
    ([None, None, [1e9] * 8], "'style_codes[2][0]' must be a finite number within +-100"),
    ([None, None, [True] * 8], "'style_codes[2][0]' must be a finite number"),
])
def test_bad_style_codes_are_refused(client, codes, words):
    status, out, _ = call(client, "POST", "/api/generate", {**SCENE, "style_codes": codes})
    assert status == 400 and words in out["error"], out
    status, out, _ = call(client, "POST", "/api/generate", {"graph": GRAPH, "style_codes": [None, None, [0.0] * 8]})
    assert status == 400 and "style_codes[0] is null: give 'style_seeds'" in out["error"]
    status, out, _ = call(client, "POST", "/api/generate", raw=b'{"graph": {"objects": ["sky"]}, "style_seeds": [1], '
                                                              b'"style_codes": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}')
    assert status == 400 and "'style_codes[0][0]' must be a finite number" in out["error"]
