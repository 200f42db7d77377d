"""Batching in the editor: generate requests that arrive together run as one model call (bounded
size, keys never mixed), each answer the one its request gets alone; requests whose codes come
from their seed run alone."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_web import GRAPH, LOCAL, SCENE, call, pixels

from layout2img.generate import load_model
from layout2img.web import scheduler
from layout2img.web.server import build_app


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    return build_app(load_model(tiny_checkpoint, "cpu"), quiet=True)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def test_concurrent_generates_share_one_batch_and_each_gets_its_solo_image(app, client):
    """Two requests that arrive while the model is busy run as one model call; each answer is the
    one it gets alone (its own seeds, layout and codes; pixels equal up to float rounding, which
    batched convolutions may change in the last bits)."""
    other = {"graph": {"objects": ["sky", "grass", "square", "star"],
                       "relationships": [[0, "above", 1], [2, "left of", 3]]}, "style_seeds": [4, 5, 6, 7]}
    bodies = [SCENE, other]
    service = app.state.service
    before = dict(service.batcher.sizes)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with service.turns.request():  # the model is busy: both requests gather in one batch
            futures = [pool.submit(call, client, "POST", "/api/generate", body) for body in bodies]
            deadline = time.monotonic() + 30
            while service.batcher.pending() < 2:
                assert time.monotonic() < deadline, "the two requests never arrived"
                time.sleep(0.01)
        together = [f.result(timeout=60)[1] for f in futures]
    assert [t["batch"] for t in together] == [2, 2]
    assert service.batcher.sizes.get(2, 0) == before.get(2, 0) + 1
    alone = [call(client, "POST", "/api/generate", body)[1] for body in bodies]
    for t, a in zip(together, alone):
        assert a["batch"] == 1 and t["objects"] == a["objects"] and t["style_seeds"] == a["style_seeds"]
        assert np.abs(np.array(t["boxes"]) - np.array(a["boxes"])).max() <= 1e-4
        assert np.abs(pixels(t["image"]) - pixels(a["image"])).max() <= 1


def test_the_batcher_bounds_batch_size_and_keeps_keys_apart():
    turns = scheduler.ModelTurns()
    calls = []
    batcher = scheduler.Batcher(turns, lambda items: calls.append(list(items)) or [x * 10 for x in items],
                                max_batch=3, max_wait=0.0)
    results = {}

    def submit(key, x):
        results[x] = batcher.submit(key, x)

    with turns.request():  # hold the model while 7 arrive
        threads = [threading.Thread(target=submit, args=("a" if x < 5 else "b", x)) for x in range(7)]
        for t in threads:
            t.start()
            time.sleep(0.02)
    for t in threads:
        t.join(10)
    assert sorted(x for batch in calls for x in batch) == list(range(7))
    assert all(len(batch) <= 3 for batch in calls)
    assert all(len({x < 5 for x in batch}) == 1 for batch in calls)  # keys never mix
    assert {x: r for x, (r, _) in results.items()} == {x: x * 10 for x in range(7)}
    assert max(size for _, size in results.values()) == 3


def test_a_request_whose_codes_come_from_its_seed_runs_alone(app, client):
    service = app.state.service
    with ThreadPoolExecutor(max_workers=2) as pool:
        with service.turns.request():
            futures = [pool.submit(call, client, "POST", "/api/generate", {"graph": GRAPH, "seed": s}) for s in (3, 4)]
            time.sleep(0.3)
        answers = [f.result(timeout=60)[1] for f in futures]
    assert [a["batch"] for a in answers] == [1, 1]  # one random generator per call: never shared


def test_a_stream_of_requests_cannot_starve_background_work():
    """Requests go before a waiting edit step, but after MAX_REQUEST_STREAK of them in a row the edit
    gets its turn (issue 21's load: 4 generating clients back to back left edits waiting forever)."""
    turns = scheduler.ModelTurns(max_request_streak=2)
    order, stop = [], threading.Event()

    def client(name):
        while not stop.is_set():
            with turns.request():
                order.append(name)
                time.sleep(0.005)

    waited = []  # request turns that ran between an edit step's arrival and its turn

    def edit_step():
        arrived = len(order)
        with turns.background():
            waited.append(len(order) - arrived)
            order.append("edit")

    clients = [threading.Thread(target=client, args=(f"g{i}",)) for i in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.05)  # the requests keep the model busy: someone is always waiting
    steps = [threading.Thread(target=edit_step) for _ in range(3)]
    for t in steps:
        t.start()
        t.join(5)
        assert not t.is_alive(), "the edit step never got the model"
    stop.set()
    for t in clients:
        t.join(5)
    assert sum(name == "edit" for name in order) == 3
    # the turn in progress when it arrived (maybe one more that started as it queued) + the streak of 2
    assert all(w <= 4 for w in waited), waited
