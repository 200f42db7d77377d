"""Repeated timings and how they are reported: median (spread) over N, and one markdown row per figure."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

#: The columns every figure row has; paste the rows under this header in docs/BENCHMARKS.md.
FIGURE_HEADER = ("| figure | median (IQR, min–max) over N | command | machine |\n"
                 "|---|---|---|---|")


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call (after ``warmup`` untimed ones); ``first_s``: the first warm-up call."""

    samples: tuple[float, ...]
    warmup: int
    first_s: float | None = None

    def summary(self, unit: str = "s", scale: float = 1.0) -> dict:
        """The samples times ``scale`` (1000 for ms) summarised in ``unit``."""
        return summarize([s * scale for s in self.samples], unit, self.warmup)

    def rate(self, items: float, unit: str = "img/s") -> dict:
        """``items`` per second of each call, summarised: the median rate is items / median seconds."""
        return summarize([items / s for s in self.samples], unit, self.warmup)


def summarize(values: list[float], unit: str, warmup: int = 0) -> dict:
    """Median, min, max, quartiles and the spread: IQR and max - min, both relative to the median."""
    if not values:
        raise ValueError("no timed runs to summarise (runs must be >= 1)")
    med = statistics.median(values)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (med, med, med)
    rel = (lambda x: x / med) if med else (lambda x: 0.0)
    return {"median": med, "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "spread": rel(q3 - q1), "range": rel(max(values) - min(values)), "n": len(values),
            "warmup": warmup, "unit": unit}


def repeat(fn: Callable[[], object], runs: int, warmup: int = 1, sync: Callable[[], None] | None = None,
           clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed one by one.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read, so queued device work
    is inside the call that queued it."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    sync = sync or (lambda: None)
    first = None
    samples = []
    for i in range(warmup + runs):
        sync()
        t0 = clock()
        fn()
        sync()
        elapsed = clock() - t0
        if i == 0 and warmup:
            first = elapsed
        if i >= warmup:
            samples.append(elapsed)
    return Timing(tuple(samples), warmup, first)


def count_flops(fn: Callable[[], object]) -> tuple[int | None, str | None]:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them (every matmul and
    convolution, forward and backward, 2 per multiply-add; elementwise ops not counted), and a
    note when they could not be counted (then None): counting is a bonus, never a failure."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops(), None
    except Exception as e:  # noqa: BLE001
        return None, f"FLOPs not counted ({type(e).__name__}: {e})"


def _number(x: float) -> str:
    """Three significant digits below 100, whole numbers (thousands spaced) above."""
    if abs(x) >= 100:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def format_figure(s: dict) -> str:
    """'61.4 ms (IQR 4.2 %, 54.3–70.0) over 30'; a single run shows no spread."""
    value = f"{_number(s['median'])} {s['unit']}"
    if s["n"] == 1:
        return f"{value} (one run)"
    return f"{value} (IQR {100 * s['spread']:.1f} %, {_number(s['min'])}–{_number(s['max'])}) over {s['n']}"


def figure_row(figure: str, value: dict | str, command: str, machine_line: str) -> str:
    """One markdown row: what was measured, its value (a summary dict or a plain string), command, machine."""
    text = format_figure(value) if isinstance(value, dict) else value
    return f"| {figure} | {text} | `{command}` | {machine_line} |"
