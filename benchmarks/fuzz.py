"""Fuzz the scene-graph input path: N generated cases through ``validate_data`` and ``generate``, counted.

The cases come from the property tests' strategies (tests/strategies.py): valid graphs (sg2im and
node-link forms, boxes, descriptions, captions), valid graphs broken in one named way (bad types,
out-of-range indices, unknown names, NaN and huge boxes, lists far past the object limit, broken
node-link data) and arbitrary JSON. Each case is validated against the Shapes vocabulary; an
accepted one is generated, a rejected one is handed to ``generate`` too (which must refuse it
with the project's own error). Counted: accepted, rejected (by reason class), crashes (anything
that is not a ``Layout2ImgError``: a bug), non-finite images, and malformed cases validation let
through. Exit code 1 when there is any crash, non-finite image or such miss.

    python benchmarks/fuzz.py                       # 10 000 cases on the tiny random 32 px test model
    python benchmarks/fuzz.py --cases 500 --checkpoint runs/shapes_64/checkpoints/latest --out fuzz.json

``generate`` has no object limit (validation's is for files), so the ``too_many_objects`` cases
(up to 5 000 objects) are validated only. Checks first that the machine is quiet (the cases/s
figure is a timing; ``--allow-busy`` to override).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the strategies live beside the property tests that use them
from layout2img.errors import ConfigError, Layout2ImgError  # noqa: E402

#: (reason class, words that put a rejection's message in it), first match wins.
REASON_CLASSES = (
    ("too many objects", ("more than the limit",)),
    ("reserved name", ("is added by layout2img",)),
    ("unknown name", ("unknown object", "unknown predicate")),
    ("bad box", ("box",)),
    ("bad index or node id", (" index ", "is not a node id", "appears twice", "node id", "node has no 'id'")),
    ("empty", ("empty", "no scene graphs")),
    ("missing field", ("missing", "has no", "no box")),
    ("wrong type or shape", ("must be", "expected", "entries, expected")),
)
MAX_CRASHES_KEPT = 20
#: Accepted graphs are generated this many at a time (a batch costs little more than one graph).
GENERATE_BATCH = 32


def reason_class(message: str) -> str:
    """The class of a rejection, from its one-line message."""
    for name, words in REASON_CLASSES:
        if any(w in message for w in words):
            return name
    return "other"


def _short(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Tally:
    """The counts of one fuzz run."""

    def __init__(self):
        self.drawn: Counter = Counter()
        self.validate = {"accepted": 0, "rejected": 0, "crashes": 0}
        self.validate_reasons: Counter = Counter()
        self.generate = {"ran": 0, "images": 0, "rejected": 0, "crashes": 0, "non_finite": 0, "skipped": 0}
        self.generate_reasons: Counter = Counter()
        self.missed: Counter = Counter()  # malformed cases that validation accepted
        self.valid_rejected = 0
        self.crashes: list[dict] = []
        self.pending: list[tuple[list, object]] = []  # accepted (graphs, case) waiting for generation

    def crash(self, where: str, err: BaseException, case) -> None:
        if len(self.crashes) < MAX_CRASHES_KEPT:
            self.crashes.append({"where": where, "type": type(err).__name__, "message": str(err)[:300],
                                 "case": _short(case)})

    @property
    def failures(self) -> int:
        return (self.validate["crashes"] + self.generate["crashes"] + self.generate["non_finite"]
                + sum(self.missed.values()) + self.valid_rejected)


def run_case(model, vocab, kind: str, data, tally: Tally, seed: int) -> None:
    """Validate one case; queue what it accepts for generation, and check that generate refuses the rest."""
    from layout2img.graph import validate_data

    tally.drawn[kind] += 1
    try:
        graphs, errors = validate_data(data, vocab, source="fuzz")
    except Layout2ImgError as e:  # validate_data reports problems as lines; raising is a bug too
        graphs, errors = [], [str(e)]
    except Exception as e:  # noqa: BLE001 - counting crashes is the point
        tally.validate["crashes"] += 1
        tally.crash("validate_data", e, data)
        return
    if not errors:
        tally.validate["accepted"] += 1
        if kind not in ("valid", "any-json"):
            tally.missed[kind] += 1
        tally.pending.append((graphs, data))
        if sum(len(g) for g, _ in tally.pending) >= GENERATE_BATCH:
            flush(model, tally, seed)
        return
    tally.validate["rejected"] += 1
    tally.validate_reasons[reason_class(errors[0])] += 1
    tally.valid_rejected += kind == "valid"
    if kind == "too_many_objects":
        tally.generate["skipped"] += 1
        return
    tally.generate["ran"] += 1
    try:
        images = model.generate(data, seed=seed)
    except Layout2ImgError as e:
        tally.generate["rejected"] += 1
        tally.generate_reasons[f"{type(e).__name__}: {reason_class(str(e))}"] += 1
        return
    except Exception as e:  # noqa: BLE001
        tally.generate["crashes"] += 1
        tally.crash("generate", e, data)
        return
    check_images(images, [data] * int(images.shape[0]), tally)


def check_images(images: torch.Tensor, cases: list, tally: Tally) -> None:
    """Count the images and the non-finite ones (``cases[i]`` made image i)."""
    tally.generate["images"] += int(images.shape[0])
    finite = torch.isfinite(images.flatten(1)).all(1)
    for i in torch.nonzero(~finite).flatten().tolist():
        tally.generate["non_finite"] += 1
        tally.crash("generate (non-finite pixels)", ValueError("non-finite pixels"), cases[i])


def flush(model, tally: Tally, seed: int) -> None:
    """Generate the queued accepted graphs in one batch (one case at a time when the batch fails, to
    name the case); a project error for a graph validation accepted counts as a crash."""
    pending, tally.pending = tally.pending, []
    if not pending:
        return
    graphs = [g for gs, _ in pending for g in gs]
    owners = [data for gs, data in pending for _ in gs]
    tally.generate["ran"] += len(pending)
    try:
        images = model.generate(graphs, seed=seed)
    except Exception:  # noqa: BLE001 - one case at a time, to find the one that did it
        images = None
    if images is not None:
        check_images(images, owners, tally)
        return
    for gs, data in pending:
        try:
            check_images(model.generate(gs, seed=seed), [data] * len(gs), tally)
        except Exception as e:  # noqa: BLE001
            tally.generate["crashes"] += 1
            tally.crash("generate (a graph validation accepted)", e, data)


def fuzz(model, cases: int, seed: int, progress: bool = True) -> Tally:
    """Draw ``cases`` cases (reproducibly from ``seed``) and run each through :func:`run_case`."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from tqdm.auto import tqdm

    from strategies import VOCAB, any_json, malformed_graphs, valid_graphs

    tally = Tally()
    cases_of = st.one_of(valid_graphs(max_objects=12).map(lambda g: ("valid", g)), malformed_graphs(),
                         any_json.map(lambda d: ("any-json", d)))
    bar = tqdm(total=cases, desc="fuzz", unit="case", disable=not progress or None, dynamic_ncols=True)

    @hypothesis_seed(seed)
    @settings(max_examples=cases, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases_of, graph_seed=st.integers(0, 2**63 - 1))
    def one(case, graph_seed):
        kind, data = case
        run_case(model, VOCAB, kind, data, tally, graph_seed)
        bar.update()

    try:
        one()
        flush(model, tally, seed)
    finally:
        bar.close()
    return tally


def report_of(tally: Tally, cases: int, seed: int, model_name: str, seconds: float, guard: dict) -> dict:
    return {
        "protocol": {"cases": cases, "seed": seed, "vocabulary": "shapes", "model": model_name,
                     "strategies": "tests/strategies.py"},
        "drawn": dict(sorted(tally.drawn.items())),
        "validate": {**tally.validate, "rejected_by_reason": dict(tally.validate_reasons.most_common()),
                     "malformed_accepted": dict(tally.missed), "valid_rejected": tally.valid_rejected},
        "generate": {**tally.generate, "rejected_by_reason": dict(tally.generate_reasons.most_common())},
        "crashes": tally.crashes,
        "seconds": round(seconds, 2), "cases_per_s": round(sum(tally.drawn.values()) / max(seconds, 1e-9), 1),
        "machine": machine(guard=guard),
    }


def summary_lines(report: dict) -> list[str]:
    v, g = report["validate"], report["generate"]
    reasons = ", ".join(f"{k} {n}" for k, n in v["rejected_by_reason"].items())
    return [
        f"fuzz: {sum(report['drawn'].values())} cases in {report['seconds']} s ({report['cases_per_s']} cases/s)",
        f"validate_data: {v['accepted']} accepted, {v['rejected']} rejected ({reasons or 'none'}), "
        f"{v['crashes']} crashes, {sum(v['malformed_accepted'].values())} malformed accepted, "
        f"{v['valid_rejected']} valid rejected",
        f"generate: {g['ran']} run, {g['images']} images, {g['rejected']} refused, {g['crashes']} crashes, "
        f"{g['non_finite']} non-finite, {g['skipped']} skipped (too many objects)",
        f"machine: {machine_line(report['machine'])}",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000, help="how many cases (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="the draw's seed: the same seed, the same cases")
    ap.add_argument("--checkpoint", default=None, help="a model folder (default: the tiny random 32 px test model)")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    ap.add_argument("--no-progress", action="store_true")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    guard = guard_from_args(args)
    try:
        if args.cases < 1:
            raise ConfigError(f"--cases must be positive, got {args.cases}")
        torch.manual_seed(0)
        if args.checkpoint:
            from layout2img.generate import load_model

            model, name = load_model(args.checkpoint, "cpu").eval(), str(args.checkpoint)
        else:
            from conftest import TINY_MODEL  # the property tests' model

            from layout2img.pipeline import SceneGraphToImage

            model, name = SceneGraphToImage(**TINY_MODEL).eval(), "tiny random 32 px (tests/conftest.py TINY_MODEL)"
        t0 = time.perf_counter()
        tally = fuzz(model, args.cases, args.seed, progress=not args.no_progress)
        report = report_of(tally, args.cases, args.seed, name, time.perf_counter() - t0, guard)
        save_report(report, args.out)
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("drawn", "validate", "generate", "crashes")}, indent=1))
    for line in summary_lines(report):
        print(line)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
