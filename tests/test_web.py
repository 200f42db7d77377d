"""The editor's HTTP API (`layout2img serve`), in-process on 127.0.0.1 and a free port: answers,
error statuses and words, pinned boxes, per-object styles, and a bounded burst of requests."""
import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from layout2img.cli import main
from layout2img.errors import ConfigError
from layout2img.generate import load_model
from layout2img.web.server import MAX_BODY, make_server

GRAPH = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]}


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    log = io.StringIO()
    srv = make_server(model, "127.0.0.1", 0, quiet=True, log=log, max_waiting=64)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.log = log
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def call(server, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or raw bytes, headers) of one request to the test server."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=hdrs)
        res = conn.getresponse()
        payload = res.read()
        kind = res.getheader("Content-Type", "")
        return res.status, (json.loads(payload) if kind.startswith("application/json") else payload), res
    finally:
        conn.close()


def png(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_info_describes_the_model(server):
    status, info, _ = call(server, "GET", "/api/info")
    assert status == 200
    assert info["vocab"] == "shapes" and info["image_size"] == 32
    assert "circle" in info["objects"] and "__image__" not in info["objects"]
    assert "left of" in info["predicates"] and "__in_image__" not in info["predicates"]
    assert info["text"] is False and "no text encoder" in info["text_reason"]
    assert info["style"] is True and info["max_body"] == MAX_BODY


def test_page_and_assets_are_served_locally(server):
    status, page, res = call(server, "GET", "/")
    assert status == 200 and b'<script src="/app.js"' in page
    assert "default-src 'self'" in res.getheader("Content-Security-Policy")
    assert b"http://" not in page and b"https://" not in page  # no CDN: everything comes from here
    status, script, res = call(server, "GET", "/app.js")
    assert status == 200 and res.getheader("Content-Type").startswith("text/javascript")
    assert b"/api/generate" in script
    assert call(server, "GET", "/style.css")[0] == 200


def test_generate_returns_image_layout_and_boxes(server):
    status, out, _ = call(server, "POST", "/api/generate", {"graph": GRAPH, "seed": 1, "style_seeds": [1, 2, 3]})
    assert status == 200, out
    assert png(out["image"]).size == (32, 32)
    assert png(out["layout_image"]).size == (256, 256)
    assert png(out["masks_image"]).size == (256, 256)
    assert len(out["boxes"]) == 3 and out["pinned"] == [False, False, False]
    for x0, y0, x1, y1 in out["boxes"]:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert out["objects"] == GRAPH["objects"] and len(out["colors"]) == 3


def test_pinned_box_is_kept_and_the_others_stay_predicted(server):
    _, free, _ = call(server, "POST", "/api/generate", {"graph": GRAPH, "style_seeds": [1, 2, 3]})
    pin = [0.1, 0.6, 0.4, 0.9]
    graph = {**GRAPH, "boxes": [None, None, pin]}
    status, pinned, _ = call(server, "POST", "/api/generate", {"graph": graph, "style_seeds": [1, 2, 3]})
    assert status == 200, pinned
    assert pinned["pinned"] == [False, False, True]
    assert pinned["boxes"][2] == pin
    assert pinned["boxes"][:2] == free["boxes"][:2]
    assert pinned["image"] != free["image"]
    # every box given: the layout is the user's
    all_boxes = {**GRAPH, "boxes": [[0, 0, 1, 0.5], [0, 0.5, 1, 1], pin]}
    _, fixed, _ = call(server, "POST", "/api/generate", {"graph": all_boxes})
    assert fixed["boxes"] == all_boxes["boxes"] and fixed["pinned"] == [True, True, True]


def test_style_seeds_restyle_one_object_and_repeat_exactly(server):
    def image(seeds):
        status, out, _ = call(server, "POST", "/api/generate", {"graph": GRAPH, "style_seeds": seeds})
        assert status == 200, out
        return out["image"]

    first = image([5, 6, 7])
    assert image([5, 6, 7]) == first
    assert image([5, 6, 8]) != first


@pytest.mark.parametrize("body, status, words", [
    ({"graph": {"objects": ["circel", "sky"], "relationships": []}}, 400,
     ["request: graph 0: object 0: unknown object 'circel'", "did you mean 'circle'?"]),
    ({"graph": {"objects": ["sky"], "relationships": [[0, "above", 3]]}}, 400, ["relation 0: object index 3"]),
    ({"graph": {"objects": []}}, 400, ["empty graph"]),
    ({"graph": [GRAPH]}, 400, ["one scene graph"]),
    ({"graph": GRAPH, "colour": 1}, 400, ["unknown field 'colour'"]),
    ({}, 400, ["missing 'graph'"]),
    ([1, 2], 400, ["must be a JSON object"]),
    ({"graph": GRAPH, "seed": -1}, 400, ["'seed' must be an integer"]),
    ({"graph": GRAPH, "seed": 1.5}, 400, ["'seed' must be an integer"]),
    ({"graph": GRAPH, "style_seeds": [1]}, 400, ["one integer per object (3)"]),
    ({"graph": GRAPH, "style_seeds": [1, 2, "x"]}, 400, ["style_seeds[2]"]),
    ({"graph": {**GRAPH, "boxes": [None, None, [0.5, 0.5, 0.2, 0.9]]}}, 400, ["object 2:", "inverted or empty"]),
    ({"graph": {**GRAPH, "boxes": [None]}}, 400, ["one box or null per object (3)"]),
    ({"graph": {**GRAPH, "caption": "a sunny day"}}, 400, ["no text encoder", "caption"]),
    ({"graph": {**GRAPH, "descriptions": [None, "wet grass", None]}}, 400, ["no text encoder", "descriptions"]),
    ({"graph": {"objects": ["circle"] * 40, "relationships": []}}, 400, ["40 objects, more than the limit of 32"]),
])
def test_bad_requests_get_4xx_with_the_reason(server, body, status, words):
    got, out, _ = call(server, "POST", "/api/generate", body)
    assert got == status, out
    for w in words:
        assert w in out["error"], out
    assert out["errors"] and out["errors"][0] == out["error"]


def test_every_validation_line_comes_back(server):
    bad = {"objects": ["circel", "sky", 7], "relationships": [[0, "lft of", 1]]}
    _, out, _ = call(server, "POST", "/api/generate", {"graph": bad})
    assert len(out["errors"]) == 3
    assert any("object 2: expected a name (string)" in e for e in out["errors"])
    assert any("unknown predicate 'lft of'" in e for e in out["errors"])


def test_protocol_errors(server):
    status, out, _ = call(server, "POST", "/api/generate", raw=b'{"graph": {"objects": ["sky"]')
    assert status == 400 and "malformed JSON at line 1" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", raw=b'{"graph": "\xff"}')
    assert status == 400 and "not UTF-8" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", raw=b"[" * 100000)
    assert status == 413 and f"limit of {MAX_BODY}" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", raw=b"[" * 50000)  # deep but small: no crash
    assert status == 400 and "malformed JSON" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in out["error"]
    status, out, res = call(server, "GET", "/api/generate")
    assert status == 405 and res.getheader("Allow") == "POST"
    status, out, _ = call(server, "GET", "/etc/passwd")
    assert status == 404 and "not found" in out["error"]
    status, out, _ = call(server, "GET", "/../layout2img/web/server.py")
    assert status == 404
    status, out, _ = call(server, "GET", "/api/info", headers={"Host": "attacker.example:7860"})
    assert status == 403 and "Host" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", {"graph": GRAPH}, headers={"Origin": "https://evil.example"})
    assert status == 403 and "Origin" in out["error"]
    assert call(server, "GET", "/api/info", headers={"Host": "localhost:7860"})[0] == 200


def test_a_failing_request_is_a_500_and_the_server_goes_on(server, monkeypatch):
    def broken(request):
        raise RuntimeError("boom")

    monkeypatch.setattr(server.service, "generate", broken)
    status, out, _ = call(server, "POST", "/api/generate", {"graph": GRAPH})
    assert status == 500 and "internal error" in out["error"] and "boom" not in out["error"]
    assert "RuntimeError: boom" in server.log.getvalue()  # the traceback is in the server's log
    monkeypatch.undo()
    assert call(server, "POST", "/api/generate", {"graph": GRAPH})[0] == 200


def test_burst_of_200_mixed_requests_leaves_the_server_up(server):
    good = json.dumps({"graph": GRAPH, "style_seeds": [1, 2, 3]}).encode()
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
    before = sum(n for s, n in server.statuses.items() if s >= 500)

    def one(k):
        method, path, raw, expected = requests[k % len(requests)]
        status, _, _ = call(server, method, path, raw=raw)
        return status, expected

    with ThreadPoolExecutor(max_workers=8) as pool:  # bounded: 200 requests, 8 at a time, loopback only
        results = list(pool.map(one, range(200)))
    assert [s for s, e in results if s != e] == []
    assert sum(n for s, n in server.statuses.items() if s >= 500) == before
    assert call(server, "GET", "/api/info")[0] == 200
    assert call(server, "POST", "/api/generate", {"graph": GRAPH})[0] == 200


def test_busy_server_answers_429_instead_of_queueing_without_bound(server):
    server.service.max_waiting, old = 0, server.service.max_waiting
    try:
        status, out, res = call(server, "POST", "/api/generate", {"graph": GRAPH})
        assert status == 429 and "busy" in out["error"] and res.getheader("Retry-After") == "1"
    finally:
        server.service.max_waiting = old


def test_port_in_use_is_a_one_line_error(server):
    with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
        make_server(server.service.model, "127.0.0.1", server.server_address[1])


def test_serve_command_starts_answers_and_stops_on_ctrl_c(tiny_checkpoint):
    checkpoint = tiny_checkpoint
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "layout2img.cli", "serve", "--checkpoint", str(checkpoint),
                             "--port", "0", "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the socket listens
        assert line.startswith("layout2img editor on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/info")
        res = conn.getresponse()
        assert res.status == 200 and json.loads(res.read())["vocab"] == "shapes"
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "GET /api/info 200" in err and "stopped" in err


@pytest.mark.parametrize("args, words", [
    (["--checkpoint", "no/such/folder"], "checkpoint folder not found"),
    (["--checkpoint", "x", "--port", "70000"], "--port 70000: expected 0..65535"),
])
def test_serve_user_errors_exit_2_in_one_line(args, words, capsys):
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
