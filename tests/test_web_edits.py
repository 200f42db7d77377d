"""The editor's text-guided edit jobs (FastAPI TestClient): lifecycle, progress, edits running off
the request path and yielding to generate requests between steps, cancel, 429 when full, expiry,
the fields' 400s, and `serve --clip` on a real server."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP
from fastapi.testclient import TestClient
from test_web import GRAPH, LOCAL, SCENE, call, pixels

from layout2img.generate import load_model, object_style_codes
from layout2img.models.text import TextEncoder
from layout2img.web.server import build_app

# Fast edits that change a tiny model's image: the random tiny CLIP barely responds to pixels, so
# a strong CLIP term and no L1 veto (an untrained generator moves every pixel with any code).
EDIT_OPTIONS = {"steps": 2, "restarts": 1, "lr": 0.5, "strength": 10.0, "preserve_weight": 0.0, "augment": 4}
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return TextEncoder.from_config(TINY_CLIP).freeze()


@pytest.fixture(scope="module")
def plain(tiny_checkpoint):
    """A text-free model and no CLIP: no editing."""
    with TestClient(build_app(load_model(tiny_checkpoint, "cpu"), quiet=True), base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def editing(tiny_checkpoint, tiny_clip):
    """A text-free model with a CLIP for edits: one edit runs, one more may wait."""
    app = build_app(load_model(tiny_checkpoint, "cpu"), quiet=True, clip=tiny_clip, clip_spec="tiny-clip",
                    max_edits=1, edit_queue=1, edit_options=EDIT_OPTIONS)
    with TestClient(app, base_url=LOCAL) as c:
        c.service, c.jobs = app.state.service, app.state.jobs
        yield c


def edit(client, **fields):
    return call(client, "POST", "/api/edit", {**SCENE, "text": "a green circle", "target": 2, **fields})


def wait_job(client, job, until=FINISHED, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status, out, _ = call(client, "GET", f"/api/edit/{job}")
        assert status == 200, out
        if out["state"] in until if isinstance(until, tuple) else until(out):
            return out
        assert time.monotonic() < deadline, f"edit job still {out['state']} after {timeout}s: {out}"
        time.sleep(0.02)


def test_info_says_whether_region_editing_works(plain, editing):
    _, info, _ = call(plain, "GET", "/api/info")
    assert info["region_edit"] is False and "--clip" in info["region_edit_reason"]
    status, out, _ = edit(plain)
    assert status == 409 and "no text encoder" in out["error"] and "--clip" in out["error"]
    _, info, _ = call(editing, "GET", "/api/info")
    assert info["region_edit"] is True and info["region_edit_reason"] is None
    assert info["edit_clip"] == "tiny-clip" and info["text"] is False  # edits, yet no captions


def test_an_edit_job_runs_off_the_request_and_changes_only_its_region(editing):
    _, shown, _ = call(editing, "POST", "/api/generate", SCENE)  # the image the page shows
    status, job, _ = edit(editing, negatives=["a red circle"])
    assert status == 202 and job["state"] in ("queued", "running") and len(job["job"]) == 16
    assert "image" not in job  # nothing of a result before there is one
    done = wait_job(editing, job["job"])
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
    seeds = object_style_codes(editing.service.model, GRAPH["objects"], [1, 2, 3])
    codes = torch.tensor(done["style_codes"])
    assert codes.shape == (3, 8) and torch.equal(codes[:2], seeds[:2]) and not torch.equal(codes[2], seeds[2])
    _, kept, _ = call(editing, "POST", "/api/generate", {**SCENE, "style_codes": done["style_codes"]})
    assert kept["image"] != shown["image"]


def test_a_box_or_the_whole_image_can_be_edited(editing):
    for target in ([0.0, 0.5, 0.5, 1.0], None):
        _, job, _ = edit(editing, target=target, modulation=True, text="a blue square", steps=6)
        done = wait_job(editing, job["job"])
        assert done["state"] == "done" and done["improved"] is True, done


def test_generate_is_not_held_by_a_running_edit_which_can_be_cancelled(editing):
    _, before, _ = call(editing, "POST", "/api/generate", SCENE)
    _, job, _ = edit(editing, steps=200, restarts=12, modulation=True)  # minutes, unless cancelled
    running = wait_job(editing, job["job"], until=lambda j: j["state"] == "running" and j["step"] is not None)
    assert running["restarts"] == 12 and running["steps"] == 200
    started = time.monotonic()
    status, during, _ = call(editing, "POST", "/api/generate", SCENE)
    assert status == 200 and during["image"] == before["image"]  # served between two steps, untouched by them
    assert time.monotonic() - started < 30
    assert call(editing, "GET", f"/api/edit/{job['job']}")[1]["state"] == "running"
    status, out, _ = call(editing, "POST", f"/api/edit/{job['job']}/cancel", {})
    assert status == 200 and out["cancel_requested"] is True
    stopped = wait_job(editing, job["job"])
    assert stopped["state"] == "cancelled" and "image" not in stopped
    assert (stopped["restart"], stopped["step"]) < (11, 200)


def test_edits_beyond_the_limit_get_429_and_a_waiting_one_cancels_at_once(editing):
    with editing.service.turns.request():  # the model is busy: no edit can start meanwhile
        first = edit(editing)
        second = edit(editing)
        assert first[0] == 202 and second[0] == 202  # one running (waiting for the model) + one queued
        status, out, res = edit(editing)
        assert status == 429 and "too many edits" in out["error"] and res.headers["Retry-After"] == "2"
        _, out, _ = call(editing, "POST", f"/api/edit/{second[1]['job']}/cancel", {})
        assert out["state"] == "cancelled"  # it never ran
        call(editing, "POST", f"/api/edit/{first[1]['job']}/cancel", {})
    assert wait_job(editing, first[1]["job"])["state"] == "cancelled"
    status, job, _ = edit(editing)  # room again
    assert status == 202 and wait_job(editing, job["job"])["state"] == "done"


def test_finished_jobs_expire(editing):
    jobs = editing.jobs
    old = jobs.keep_finished, jobs.keep_seconds
    jobs.keep_finished = 1
    try:
        ids = [edit(editing, steps=0)[1]["job"] for _ in range(2)]
        for job in ids:
            assert wait_job(editing, job)["state"] == "done"
        status, out, _ = call(editing, "GET", f"/api/edit/{ids[0]}")
        assert status == 404 and "not found" in out["error"]
        jobs.keep_seconds = 0
        assert call(editing, "GET", f"/api/edit/{ids[1]}")[0] == 404
    finally:
        jobs.keep_finished, jobs.keep_seconds = old


@pytest.mark.parametrize("fields, words", [
    ({"text": None}, "missing 'text'"),
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
def test_bad_edit_requests_get_400_naming_the_field(editing, fields, words):
    body = {**SCENE, "text": "a green circle", "target": 2, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    status, out, _ = call(editing, "POST", "/api/edit", body)
    assert status == 400 and words in out["error"], out
    assert out["errors"][0] == out["error"]


def test_edit_protocol_errors(editing):
    status, out, _ = call(editing, "POST", "/api/edit", {**SCENE, "text": "a green circle"})
    assert status == 400 and "missing 'target'" in out["error"]
    status, out, _ = call(editing, "GET", "/api/edit/0123456789abcdef")
    assert status == 404 and "'0123456789abcdef' not found" in out["error"]
    status, out, res = call(editing, "GET", "/api/edit")
    assert status == 405 and res.headers["Allow"] == "POST"
    status, out, res = call(editing, "GET", "/api/edit/0123456789abcdef/cancel")
    assert status == 405 and res.headers["Allow"] == "POST"
    status, out, _ = call(editing, "POST", "/api/edit/0123456789abcdef/cancel", {"now": True})
    assert status == 400 and "send an empty JSON object" in out["error"]
    status, out, _ = call(editing, "POST", "/api/edit/0123456789abcdef/cancel", raw=b"{}",
                          headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form cannot cancel
    assert call(editing, "GET", "/api/edit/a/b/c")[0] == 404


def test_serve_clip_adds_editing_to_a_text_free_model(tiny_checkpoint, tiny_clip, tmp_path):
    import http.client
    import json

    clip_dir = tiny_clip.save_pretrained(tmp_path / "clip_tiny")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "layout2img.cli", "serve", "--checkpoint", str(tiny_checkpoint),
                             "--port", "0", "--device", "cpu", "--clip", str(clip_dir), "--edit-steps", "1",
                             "--edit-restarts", "1", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("layout2img editor on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])

        def request(method, path, body=None):
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    conn.request(method, path, body=None if body is None else json.dumps(body),
                                 headers={"Content-Type": "application/json"})
                    res = conn.getresponse()
                    return res.status, json.loads(res.read())
                except ConnectionError:  # uvicorn starts serving just after the line
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                finally:
                    conn.close()

        _, info = request("GET", "/api/info")
        assert info["region_edit"] is True and info["text"] is False and info["edit_clip"] == str(clip_dir)
        status, job = request("POST", "/api/edit", {**SCENE, "text": "a green circle", "target": 2})
        assert status == 202
        deadline = time.monotonic() + 120
        while job["state"] not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.05)
            _, job = request("GET", f"/api/edit/{job['job']}")
        assert job["state"] == "done" and (job["steps"], job["restarts"]) == (1, 1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("args, words", [
    (["--clip", "no/such/clip"], "--clip no/such/clip: no such CLIP folder or file"),
    (["--max-edits", "0"], "--max-edits 0: expected an integer >= 1"),
    (["--edit-steps", "1000"], "--edit-steps 1000: expected an integer from 0 to 200"),
    (["--max-batch", "0"], "--max-batch 0: expected an integer >= 1"),
])
def test_serve_edit_options_errors_exit_2_in_one_line(tiny_checkpoint, args, words, capsys):
    from layout2img.cli import main

    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", "0", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
