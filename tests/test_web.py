"""The editor's HTTP API (`layout2img serve`), in-process on 127.0.0.1 and a free port: answers,
error statuses and words, pinned boxes, per-object styles, a bounded burst of requests, and
text-guided edit jobs (lifecycle, progress, cancel, 429 when full, expiry, `serve --clip`)."""
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
import torch
from conftest import TINY_CLIP, serve_in_thread
from PIL import Image

from layout2img.cli import main
from layout2img.errors import ConfigError
from layout2img.generate import load_model, object_style_codes
from layout2img.models.text import TextEncoder
from layout2img.web.server import MAX_BODY, make_server

GRAPH = {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]}
SCENE = {"graph": GRAPH, "style_seeds": [1, 2, 3]}
# Fast edits that change a tiny model's image: the random tiny CLIP barely responds to pixels, so
# a strong CLIP term and no L1 veto (an untrained generator moves every pixel with any code).
EDIT_OPTIONS = {"steps": 2, "restarts": 1, "lr": 0.5, "strength": 10.0, "preserve_weight": 0.0, "augment": 4}
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    log = io.StringIO()
    srv = make_server(model, "127.0.0.1", 0, quiet=True, log=log, max_waiting=64)
    srv.log = log
    yield from serve_in_thread(srv)


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return TextEncoder.from_config(TINY_CLIP).freeze()


@pytest.fixture(scope="module")
def edit_server(tiny_checkpoint, tiny_clip):
    """A text-free model with a CLIP for edits: one edit runs, one more may wait."""
    model = load_model(tiny_checkpoint, "cpu")
    log = io.StringIO()
    srv = make_server(model, "127.0.0.1", 0, quiet=True, log=log, clip=tiny_clip, clip_spec="tiny-clip",
                      max_edits=1, edit_queue=1, edit_options=EDIT_OPTIONS)
    srv.log = log
    yield from serve_in_thread(srv)


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
    status, script, _ = call(server, "GET", "/edit.js")
    assert status == 200 and b"/api/edit" in script and b'<script src="/edit.js"' in page


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
    assert status == 400 and out["error"].startswith("request body:1:30: malformed JSON in the request: ")
    status, out, _ = call(server, "POST", "/api/generate", raw=b'{"graph": "\xff"}')
    assert status == 400 and out["error"] == "request body:1:12: not UTF-8 text in the request (byte 0xff)"
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


# -- per-object style codes --------------------------------------------------------------------
def test_explicit_style_codes_override_the_seeds_object_by_object(server):
    codes = object_style_codes(server.service.model, GRAPH["objects"], [1, 2, 3]).tolist()
    _, by_seed, _ = call(server, "POST", "/api/generate", SCENE)
    status, by_code, _ = call(server, "POST", "/api/generate", {**SCENE, "style_codes": [None, codes[1], None]})
    assert status == 200 and by_code["image"] == by_seed["image"]  # the seed's own code: the same pixels
    _, all_codes, _ = call(server, "POST", "/api/generate", {"graph": GRAPH, "style_codes": codes})
    assert all_codes["image"] == by_seed["image"]
    other = [v + 1.5 for v in codes[2]]
    _, changed, _ = call(server, "POST", "/api/generate", {**SCENE, "style_codes": [None, None, other]})
    assert changed["image"] != by_seed["image"]


@pytest.mark.parametrize("codes, words", [
    ([None, None], "one code (or null) per object (3)"),
    ([None, None, [0.0] * 3], "style_codes[2] must be a list of 8 finite numbers"),
    ([None, None, [1e9] * 8], "style_codes[2]"),
    ([None, None, [True] * 8], "style_codes[2]"),
])
def test_bad_style_codes_are_refused(server, codes, words):
    status, out, _ = call(server, "POST", "/api/generate", {**SCENE, "style_codes": codes})
    assert status == 400 and words in out["error"], out
    status, out, _ = call(server, "POST", "/api/generate", {"graph": GRAPH, "style_codes": [None, None, [0.0] * 8]})
    assert status == 400 and "style_codes[0] is null: give 'style_seeds'" in out["error"]
    status, out, _ = call(server, "POST", "/api/generate", raw=b'{"graph": {"objects": ["sky"]}, "style_seeds": [1], '
                                                              b'"style_codes": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}')
    assert status == 400 and "style_codes[0]" in out["error"]


# -- text-guided edit jobs ---------------------------------------------------------------------
def edit(server, **fields):
    return call(server, "POST", "/api/edit", {**SCENE, "text": "a green circle", "target": 2, **fields})


def wait_job(server, job, until=FINISHED, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status, out, _ = call(server, "GET", f"/api/edit/{job}")
        assert status == 200, out
        if out["state"] in until if isinstance(until, tuple) else until(out):
            return out
        assert time.monotonic() < deadline, f"edit job still {out['state']} after {timeout}s: {out}"
        time.sleep(0.02)


def pixels(data_url):
    return np.asarray(png(data_url).convert("RGB"), dtype=np.int16)


def test_info_says_whether_region_editing_works(server, edit_server):
    _, info, _ = call(server, "GET", "/api/info")
    assert info["region_edit"] is False and "--clip" in info["region_edit_reason"]
    status, out, _ = edit(server)
    assert status == 409 and "no text encoder" in out["error"] and "--clip" in out["error"]
    _, info, _ = call(edit_server, "GET", "/api/info")
    assert info["region_edit"] is True and info["region_edit_reason"] is None
    assert info["edit_clip"] == "tiny-clip" and info["text"] is False  # edits, yet no captions


def test_an_edit_job_runs_off_the_request_and_changes_only_its_region(edit_server):
    _, shown, _ = call(edit_server, "POST", "/api/generate", SCENE)  # the image the page shows
    status, job, _ = edit(edit_server, negatives=["a red circle"])
    assert status == 202 and job["state"] in ("queued", "running") and len(job["job"]) == 16
    done = wait_job(edit_server, job["job"])
    assert done["state"] == "done" and done["error"] is None, done
    assert (done["restart"], done["restarts"], done["step"], done["steps"]) == (0, 1, 2, 2)
    assert done["improved"] is True and done["clip_after"] > done["clip_before"]
    assert isinstance(done["clip"], float) and isinstance(done["best_clip"], float)
    before, after = pixels(shown["image"]), pixels(done["image"])
    assert after.shape == (32, 32, 3)
    # the edit starts from the shown image (its seeds' codes) and keeps every pixel away from the circle
    x0, y0, x1, y1 = (round(v * 32) for v in shown["boxes"][2])
    near = np.zeros((32, 32), bool)
    near[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True  # the mask grows and feathers by 2 px
    assert np.array_equal(after[~near], before[~near])
    assert np.abs(after[near] - before[near]).max() > 0
    # the codes: only the circle's moved; the page sends them back to keep the edit's look
    seeds = object_style_codes(edit_server.service.model, GRAPH["objects"], [1, 2, 3])
    codes = torch.tensor(done["style_codes"])
    assert codes.shape == (3, 8) and torch.equal(codes[:2], seeds[:2]) and not torch.equal(codes[2], seeds[2])
    _, kept, _ = call(edit_server, "POST", "/api/generate", {**SCENE, "style_codes": done["style_codes"]})
    assert kept["image"] != shown["image"]


def test_a_box_or_the_whole_image_can_be_edited(edit_server):
    for target in ([0.0, 0.5, 0.5, 1.0], None):
        _, job, _ = edit(edit_server, target=target, modulation=True, text="a blue square", steps=6)
        done = wait_job(edit_server, job["job"])
        assert done["state"] == "done" and done["improved"] is True, done


def test_generate_is_not_held_by_a_running_edit_which_can_be_cancelled(edit_server):
    _, before, _ = call(edit_server, "POST", "/api/generate", SCENE)
    _, job, _ = edit(edit_server, steps=200, restarts=12, modulation=True)  # minutes, unless cancelled
    running = wait_job(edit_server, job["job"], until=lambda j: j["state"] == "running" and j["step"] is not None)
    assert running["restarts"] == 12 and running["steps"] == 200
    status, during, _ = call(edit_server, "POST", "/api/generate", SCENE)
    assert status == 200 and during["image"] == before["image"]  # served between two steps, untouched by them
    assert call(edit_server, "GET", f"/api/edit/{job['job']}")[1]["state"] == "running"
    status, out, _ = call(edit_server, "POST", f"/api/edit/{job['job']}/cancel", {})
    assert status == 200 and out["cancel_requested"] is True
    stopped = wait_job(edit_server, job["job"])
    assert stopped["state"] == "cancelled" and "image" not in stopped
    assert (stopped["restart"], stopped["step"]) < (11, 200)


def test_edits_beyond_the_limit_get_429_and_a_waiting_one_cancels_at_once(edit_server):
    with edit_server.service.turns.request():  # the model is busy: no edit can start meanwhile
        first = edit(edit_server)
        second = edit(edit_server)
        assert first[0] == 202 and second[0] == 202  # one running (waiting for the model) + one queued
        status, out, res = edit(edit_server)
        assert status == 429 and "too many edits" in out["error"] and res.getheader("Retry-After") == "2"
        _, out, _ = call(edit_server, "POST", f"/api/edit/{second[1]['job']}/cancel", {})
        assert out["state"] == "cancelled"  # it never ran
        call(edit_server, "POST", f"/api/edit/{first[1]['job']}/cancel", {})
    assert wait_job(edit_server, first[1]["job"])["state"] == "cancelled"
    status, job, _ = edit(edit_server)  # room again
    assert status == 202 and wait_job(edit_server, job["job"])["state"] == "done"


def test_finished_jobs_expire(edit_server):
    jobs = edit_server.jobs
    old = jobs.keep_finished, jobs.keep_seconds
    jobs.keep_finished = 1
    try:
        ids = [edit(edit_server, steps=0)[1]["job"] for _ in range(2)]
        for job in ids:
            assert wait_job(edit_server, job)["state"] == "done"
        status, out, _ = call(edit_server, "GET", f"/api/edit/{ids[0]}")
        assert status == 404 and "not found" in out["error"]
        jobs.keep_seconds = 0
        assert call(edit_server, "GET", f"/api/edit/{ids[1]}")[0] == 404
    finally:
        jobs.keep_finished, jobs.keep_seconds = old


@pytest.mark.parametrize("fields, words", [
    ({"text": None}, "'text' must be a non-empty string"),
    ({"text": "   "}, "'text' must be a non-empty string"),
    ({"text": "x" * 201}, "at most 200 characters"),
    ({"negatives": "a red circle"}, "'negatives' must be a list"),
    ({"negatives": ["a red circle", ""]}, "'negatives' must be a list"),
    ({"target": 3}, "'target' 3: the graph has 3 objects (0-2)"),
    ({"target": [0.5, 0.5, 0.2, 0.9]}, "'target' box [0.5, 0.5, 0.2, 0.9]"),
    ({"target": [0, 0, 1]}, "'target' box"),
    ({"target": "circle"}, "'target' must be an object index, a box"),
    ({"target": True}, "'target' must be an object index, a box"),
    ({"steps": 1000}, "'steps' must be an integer from 0 to 200"),
    ({"restarts": 0}, "'restarts' must be an integer from 1 to 12"),
    ({"modulation": "yes"}, "'modulation' must be true or false"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"graph": {"objects": ["circel"], "relationships": []}}, "unknown object 'circel'"),
    ({"style_seeds": [1]}, "'style_seeds' must be a list with one integer per object (3)"),
])
def test_bad_edit_requests_get_400_naming_the_field(edit_server, fields, words):
    body = {**SCENE, "text": "a green circle", "target": 2, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    status, out, _ = call(edit_server, "POST", "/api/edit", body)
    assert status == 400 and words in out["error"], out
    assert out["errors"][0] == out["error"]


def test_edit_protocol_errors(edit_server):
    status, out, _ = call(edit_server, "POST", "/api/edit", {**SCENE, "text": "a green circle"})
    assert status == 400 and "missing 'target'" in out["error"]
    status, out, _ = call(edit_server, "GET", "/api/edit/0123456789abcdef")
    assert status == 404 and "'0123456789abcdef' not found" in out["error"]
    status, out, res = call(edit_server, "GET", "/api/edit")
    assert status == 405 and res.getheader("Allow") == "POST"
    status, out, res = call(edit_server, "GET", "/api/edit/0123456789abcdef/cancel")
    assert status == 405 and res.getheader("Allow") == "POST"
    status, out, _ = call(edit_server, "POST", "/api/edit/0123456789abcdef/cancel", {"now": True})
    assert status == 400 and "empty JSON object" in out["error"]
    status, out, _ = call(edit_server, "POST", "/api/edit/0123456789abcdef/cancel", raw=b"{}",
                          headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form cannot cancel
    assert call(edit_server, "GET", "/api/edit/a/b/c")[0] == 404


def test_make_server_checks_its_edit_options(server):
    model = server.service.model
    with pytest.raises(ConfigError, match="edit option 'stpes'"):
        make_server(model, "127.0.0.1", 0, edit_options={"stpes": 2})
    with pytest.raises(ConfigError, match=r"--edit-restarts 0: expected an integer from 1 to 12"):
        make_server(model, "127.0.0.1", 0, edit_options={"restarts": 0})
    with pytest.raises(ConfigError, match=r"--max-edits 0"):
        make_server(model, "127.0.0.1", 0, max_edits=0)


def test_serve_clip_adds_editing_to_a_text_free_model(tiny_checkpoint, tiny_clip, tmp_path):
    clip_dir = tiny_clip.save_pretrained(tmp_path / "clip_tiny")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "layout2img.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                             "--port", "0", "--device", "cpu", "--clip", str(clip_dir), "--edit-steps", "1",
                             "--edit-restarts", "1", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("layout2img editor on http://127.0.0.1:"), line + proc.stderr.read()

        class Remote:  # what call() needs of a server
            server_address = ("127.0.0.1", int(line.split("http://127.0.0.1:")[1].split("/")[0]))

        _, info, _ = call(Remote, "GET", "/api/info")
        assert info["region_edit"] is True and info["text"] is False and info["edit_clip"] == str(clip_dir)
        status, job, _ = edit(Remote)
        assert status == 202
        done = wait_job(Remote, job["job"])
        assert done["state"] == "done" and (done["steps"], done["restarts"]) == (1, 1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("args, words", [
    (["--clip", "no/such/clip"], "--clip no/such/clip: no such CLIP folder or file"),
    (["--max-edits", "0"], "--max-edits 0: expected an integer >= 1"),
    (["--edit-steps", "1000"], "--edit-steps 1000: expected an integer from 0 to 200"),
])
def test_serve_edit_options_errors_exit_2_in_one_line(tiny_checkpoint, args, words, capsys):
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", "0", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
