"""The editor under load: N generating and M editing clients against `layout2img serve` on 127.0.0.1.

Starts ``layout2img serve --host 127.0.0.1 --port 0`` in a subprocess (loopback only: nothing here
can listen elsewhere) and runs, for ``--duration`` seconds or until ``--max-requests`` requests
have been sent, whichever comes first:

* ``--generators`` N clients (default 4), each on its own keep-alive connection, sending
  ``POST /api/generate`` back to back as the page does (seed 0, one random style seed per object,
  one of a few Shapes scenes); ``--malformed`` of them (default 10 %) are malformed bodies
  (broken JSON, an unknown class, a wrong type, an unknown field), which must get a 4xx;
* ``--editors`` M clients (default 2) submitting text edits (``POST /api/edit``, "a green
  circle" on the circle) and polling each job until it finishes (polls are not counted in
  ``--max-requests``; an edit still running at the end is cancelled), then the next. Edits need a
  model with a text encoder or ``--clip DIR`` (passed to ``serve --clip``); without either the
  editors are skipped and the report says so.

Reports generate latency (p50 / p90 / p99 / max of the valid requests, ms, client side), their
throughput, the batch sizes the server reported, every status count, the 5xx count, transport
errors, edit outcomes and durations, and whether the server still answered afterwards and exited
cleanly on Ctrl-C, with the machine line (``benchmarks/machine.py``; refuses a busy machine unless
``--allow-busy``).

    python benchmarks/serve_load.py --checkpoint runs/shapes_64/checkpoints/latest --clip runs/clip_shapes \\
        --out runs/bench/serve_load.json
    python benchmarks/serve_load.py --dry-run --allow-busy    # a tiny random model, a few seconds

Prints the JSON report and one summary line; ``--out`` writes the report too.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402

HOST = "127.0.0.1"
SCENES = [
    {"objects": ["sky", "grass", "circle"], "relationships": [[0, "above", 1], [2, "above", 1]]},
    {"objects": ["sky", "grass", "circle", "square"], "relationships": [[0, "above", 1], [2, "left of", 3]]},
    {"objects": ["wall", "grass", "star", "circle", "triangle"],
     "relationships": [[0, "above", 1], [2, "left of", 3], [4, "right of", 3]]},
]
MALFORMED = [b'{"graph": {"objects": ["sky"', b'{"graph": {"objects": ["unicorn"], "relationships": []}}',
             b'{"graph": {"objects": "sky"}}', b'{"graph": {"objects": ["sky"]}, "colour": 1}']
#: A tiny model and CLIP for --dry-run (the test suite's sizes): seconds, not minutes.
TINY_MODEL = dict(vocab="shapes", image_size=32, style_dim=4,
                  gcn={"embed_dim": 16, "width": 16, "hidden": 32, "layers": 2},
                  layout={"mask_size": 8, "box_hidden": 16, "mask_channels": 8},
                  generator={"ngf": 4, "n_downsample": 2, "n_blocks": 1},
                  encoder={"nef": 4, "n_downsample": 2})
TINY_CLIP = {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 1}}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Budget:
    """The run's bounds: a deadline and a number of requests, shared by every client."""

    def __init__(self, seconds: float, requests: int):
        self.deadline, self.left = time.monotonic() + seconds, requests
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0 or time.monotonic() >= self.deadline:
                return False
            self.left -= 1
            return True


class Client:
    """One keep-alive connection to the server, reopened after a transport error."""

    def __init__(self, port: int, record):
        self.port, self.record, self.conn = port, record, None

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict | None]:
        """(status, JSON answer); status 0 for a transport error (counted, connection reopened)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
            self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            res = self.conn.getresponse()
            raw = res.read()
            status = res.status
            answer = json.loads(raw) if res.getheader("Content-Type", "").startswith("application/json") else None
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            status, answer = 0, None
        self.record(status)
        return status, answer

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def generating(port: int, budget: Budget, seed: int, malformed: float, out: dict, record) -> None:
    rng, client = random.Random(seed), Client(port, record)
    while budget.take():
        if rng.random() < malformed:
            status, _ = client.call("POST", "/api/generate", rng.choice(MALFORMED))
            out["malformed"].append(status)
            continue
        scene = rng.choice(SCENES)
        body = {"graph": scene, "seed": 0, "style_seeds": [rng.randrange(2**31) for _ in scene["objects"]]}
        started = time.perf_counter()
        status, answer = client.call("POST", "/api/generate", json.dumps(body).encode())
        out["valid"].append((status, 1000 * (time.perf_counter() - started), (answer or {}).get("batch")))
    client.close()


def editing(port: int, budget: Budget, out: dict, record) -> None:
    client = Client(port, record)
    body = json.dumps({"graph": SCENES[0], "seed": 0, "style_seeds": [1, 2, 3], "text": "a green circle",
                       "negatives": ["a red circle"], "target": 2}).encode()
    while budget.take():
        started = time.perf_counter()
        status, job = client.call("POST", "/api/edit", body)
        out["submitted"].append(status)
        if status != 202:
            time.sleep(0.5 if status == 429 else 0.1)
            continue
        cancelled = False
        while job is not None and job.get("state") not in ("done", "failed", "cancelled"):
            if time.monotonic() >= budget.deadline and not cancelled:  # the run is over: stop the edit
                cancelled = client.call("POST", f"/api/edit/{job['job']}/cancel", b"{}")[0] == 200
            time.sleep(0.1)
            _, job = client.call("GET", f"/api/edit/{job['job']}")
        out["finished"].append(((job or {}).get("state", "lost"), time.perf_counter() - started))
    client.close()


def start_server(checkpoint: str, clip: str | None, extra: list[str]) -> tuple[subprocess.Popen, int, list[str]]:
    command = [sys.executable, "-m", "layout2img.cli", "serve", "--checkpoint", checkpoint, "--host", HOST,
               "--port", "0", "--quiet", *(["--clip", clip] if clip else []), *extra]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if not line.startswith(f"layout2img editor on http://{HOST}:"):
        proc.kill()
        raise SystemExit(f"error: the server did not start: {(line + proc.stderr.read()).strip()[-500:]}")
    port = int(line.split(f"http://{HOST}:")[1].split("/")[0])
    deadline = time.monotonic() + 120
    while Client(port, lambda s: None).call("GET", "/api/health")[0] != 200:  # uvicorn starts just after the line
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"error: the server never answered: {proc.stderr.read().strip()[-500:]}")
        time.sleep(0.1)
    return proc, port, ["layout2img", *command[3:]]


def tiny_checkpoint(folder: Path) -> tuple[str, str]:
    """A random tiny model and CLIP (the test suite's sizes) saved under ``folder``."""
    import torch

    from layout2img import SceneGraphToImage
    from layout2img.models.text import TextEncoder

    torch.manual_seed(0)
    model = SceneGraphToImage(**TINY_MODEL).eval().save_pretrained(folder / "model")
    clip = TextEncoder.from_config(TINY_CLIP).freeze().save_pretrained(folder / "clip")
    return str(model), str(clip)


def summarize(valid: list, malformed: list, edits: dict, statuses: Counter, elapsed: float) -> dict:
    ok = [ms for status, ms, _ in valid if status == 200]
    batches = Counter(b for status, _, b in valid if status == 200 and b is not None)
    seconds = [s for state, s in edits["finished"] if state == "done"]
    return {
        "generate": {"sent": len(valid), "ok": len(ok), "throughput_per_s": round(len(ok) / elapsed, 2),
                     "latency_ms": {k: None if v is None else round(v, 1) for k, v in
                                    (("p50", percentile(ok, 50)), ("p90", percentile(ok, 90)),
                                     ("p99", percentile(ok, 99)), ("max", max(ok, default=None)))},
                     "statuses": dict(sorted(Counter(s for s, _, _ in valid).items())),
                     "batch_sizes": dict(sorted(batches.items()))},
        "malformed": {"sent": len(malformed), "statuses": dict(sorted(Counter(malformed).items())),
                      "all_4xx": all(400 <= s < 500 for s in malformed)},
        "edit": {"submitted": len(edits["submitted"]), "statuses": dict(sorted(Counter(edits["submitted"]).items())),
                 "finished": dict(sorted(Counter(state for state, _ in edits["finished"]).items())),
                 "seconds_done": {"p50": percentile(seconds, 50), "max": max(seconds, default=None)}},
        "statuses": dict(sorted(statuses.items())),
        "server_errors_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "transport_errors": statuses.get(0, 0),
    }


def run(args, checkpoint: str, clip: str | None, guard: dict) -> dict:
    extra = [f"--max-batch={args.max_batch}", f"--device={args.device}"]
    extra += [f"--edit-steps={args.edit_steps}"] if args.edit_steps is not None else []
    extra += [f"--edit-restarts={args.edit_restarts}"] if args.edit_restarts is not None else []
    proc, port, command = start_server(checkpoint, clip, extra)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def record(status: int) -> None:
        with lock:
            statuses[status] += 1

    try:
        info = Client(port, lambda s: None).call("GET", "/api/info")[1] or {}
        editors = args.editors if info.get("region_edit") else 0
        gen = {"valid": [], "malformed": []}
        edits = {"submitted": [], "finished": []}
        budget = Budget(args.duration, args.max_requests)
        threads = [threading.Thread(target=generating, args=(port, budget, args.seed + i, args.malformed, gen, record))
                   for i in range(args.generators)]
        threads += [threading.Thread(target=editing, args=(port, budget, edits, record)) for _ in range(editors)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        up = Client(port, lambda s: None).call("GET", "/api/health")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    report = summarize(gen["valid"], gen["malformed"], edits, statuses, elapsed)
    report.update(elapsed_s=round(elapsed, 2), server_up_after=up, server_exit_code=proc.returncode,
                  server_stderr_tail=err.strip().splitlines()[-5:])
    if not editors:
        report["edit"]["skipped"] = ("no region editing: the model has no text encoder; pass --clip DIR"
                                     if args.editors else "--editors 0")
    m = machine(guard=guard)
    report["protocol"] = {
        "server": command, "checkpoint": checkpoint, "clip": clip, "generators": args.generators, "editors": editors,
        "duration_s": args.duration, "max_requests": args.max_requests, "malformed_fraction": args.malformed,
        "seed": args.seed, "max_batch": args.max_batch, "model": info.get("vocab"),
        "image_size": info.get("image_size"),
        "latency": "client side, valid generate requests answered 200, from sending to the last byte",
        "dry_run": args.dry_run}
    report["machine"], report["machine_line"] = m, machine_line(m)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="the model to serve (not with --dry-run)")
    ap.add_argument("--clip", default=None, metavar="DIR", help="`serve --clip`: a CLIP for edits of a text-free model")
    ap.add_argument("--generators", type=int, default=4, help="generating clients (default 4)")
    ap.add_argument("--editors", type=int, default=2, help="editing clients (default 2)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load at most (default 60)")
    ap.add_argument("--max-requests", type=int, default=5000, help="requests at most, all clients (default 5000)")
    ap.add_argument("--malformed", type=float, default=0.1, help="share of malformed generate bodies (default 0.1)")
    ap.add_argument("--max-batch", type=int, default=8, help="`serve --max-batch` (default 8; 1: no batching)")
    ap.add_argument("--edit-steps", type=int, default=None, help="`serve --edit-steps` (default: serve's)")
    ap.add_argument("--edit-restarts", type=int, default=None, help="`serve --edit-restarts` (default: serve's)")
    ap.add_argument("--device", default="auto", help="`serve --device` (default auto)")
    ap.add_argument("--seed", type=int, default=0, help="the clients' random seed (default 0)")
    ap.add_argument("--dry-run", action="store_true",
                    help="a random tiny model and CLIP, 2 generators, 1 editor, 3 s, 60 requests at most")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    if args.dry_run:
        args.generators, args.editors = min(args.generators, 2), min(args.editors, 1)
        args.duration, args.max_requests = min(args.duration, 3.0), min(args.max_requests, 60)
        args.edit_steps, args.edit_restarts = args.edit_steps or 2, args.edit_restarts or 1
        args.device = "cpu"
    elif not args.checkpoint:
        ap.error("--checkpoint is required (or --dry-run)")
    if args.generators < 0 or args.editors < 0 or args.duration <= 0 or args.max_requests < 1 \
            or not 0 <= args.malformed <= 1:
        ap.error("--generators/--editors >= 0, --duration > 0, --max-requests >= 1, 0 <= --malformed <= 1")
    guard = guard_from_args(args)
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        checkpoint, clip = tiny_checkpoint(Path(tmp)) if args.dry_run else (args.checkpoint, args.clip)
        report = run(args, checkpoint, clip, guard)
    print(json.dumps(report, indent=1))
    g = report["generate"]
    print(f"generate: {g['ok']} ok, {g['throughput_per_s']}/s, p50 {g['latency_ms']['p50']} ms, "
          f"p99 {g['latency_ms']['p99']} ms; 5xx {report['server_errors_5xx']}; edits {report['edit']['finished']}; "
          f"server up after: {report['server_up_after']}; {report['machine_line']}")
    save_report(report, args.out)
    return 0 if report["server_errors_5xx"] == 0 and report["server_up_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
