"""Where a benchmark ran and whether it ran alone: the machine record, its one-line form, the quiet guard.

Every benchmark script calls ``guard_from_args`` first (refuses with exit code 2 when the machine
is busy, unless ``--allow-busy``) and stores ``machine(guard=...)`` next to its numbers.

    python benchmarks/machine.py                  # check the machine is quiet; print its line (exit 2 if busy)
    python benchmarks/machine.py --allow-busy     # print the line, stamped "busy: ..." when it is
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from layout2img.errors import Layout2ImgError  # noqa: E402

#: Above this 1-minute load average (or CPUs kept busy by other processes) the machine is not quiet:
#: half a core of background work plus a margin for the shell and the script's own start-up.
DEFAULT_MAX_LOAD = 0.6
#: The ISA extensions that decide which CPU kernels torch can use (x86, then Arm).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")
#: The few of them the one-line form shows: vector width and bf16 support decide torch's CPU speed.
LINE_ISA = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")


class MachineBusy(Layout2ImgError):
    """Other work is running, so timings taken now would measure the neighbours too."""


# -- what the machine is ------------------------------------------------------------------------------
def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.stdout.splitlines()) if v}


def _cpuinfo() -> tuple[str | None, set[str]]:
    """The first model name and the first flags line of /proc/cpuinfo (Arm calls them Features)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and model is None:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine(guard: dict | None = None) -> dict:
    """CPU model, ISA flags, CPU counts, torch threads and version, GPU, UTC date, command line, load."""
    lscpu = _lscpu()
    cpuinfo_model, flags = _cpuinfo()
    physical = None
    if lscpu.get("Core(s) per socket", "").isdigit() and lscpu.get("Socket(s)", "").isdigit():
        physical = int(lscpu["Core(s) per socket"]) * int(lscpu["Socket(s)"])
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": lscpu.get("Model name") or cpuinfo_model or platform.processor() or platform.machine(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cpu_count": os.cpu_count(), "cpus_usable": usable, "physical_cores": physical,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv), "command": shlex.join(["python", *sys.argv]),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "guard": guard,
    }


def machine_line(m: dict) -> str:
    """The record as one line for docs: CPU, flags, cores, threads, torch, GPU, date, load (and busy stamp)."""
    cores = f"{m['cpus_usable']} CPUs" + (f" ({m['physical_cores']} cores)" if m.get("physical_cores") else "")
    parts = [m["cpu"], f"[{' '.join(f for f in m['isa'] if f in LINE_ISA) or 'no AVX2'}]", cores,
             f"torch {m['torch']}, {m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}"]
    if m.get("gpu"):
        parts.append(m["gpu"])
    parts.append(m["date"])
    guard = m.get("guard") or {}
    if guard.get("busy"):
        parts.append(guard["busy"])
    elif guard.get("load_1min") is not None:
        parts.append(f"quiet: load {guard['load_1min']:.2f}")
    return ", ".join(parts)


# -- is anything else running -------------------------------------------------------------------------
def system_busy_seconds() -> float | None:
    """CPU-seconds all processes have used since boot (every CPU summed, steal included), or None."""
    try:
        import psutil  # optional: the same figure on systems without /proc

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    except ImportError:
        pass
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def watch_other_processes():
    """Yields a dict that, on exit, holds ``others_cpus``: CPUs other processes kept busy meanwhile.

    This process and the children it has waited for are subtracted, so a benchmark that runs its
    measurements in subprocesses sees only its neighbours."""
    record: dict = {"others_cpus": None}
    busy0, own0, t0 = system_busy_seconds(), _own_seconds(), time.monotonic()
    yield record
    busy1, own1, wall = system_busy_seconds(), _own_seconds(), time.monotonic() - t0
    if busy0 is not None and busy1 is not None and wall > 0:
        record["others_cpus"] = round(max(0.0, (busy1 - busy0) - (own1 - own0)) / wall, 3)


def others_cpu_use(seconds: float = 1.0) -> float | None:
    """CPUs other processes keep busy, averaged over ``seconds`` of sleeping here."""
    with watch_other_processes() as record:
        time.sleep(seconds)
    return record["others_cpus"]


def check_quiet(max_load: float = DEFAULT_MAX_LOAD, allow_busy: bool = False, sample_seconds: float = 1.0,
                wait_seconds: float = 0.0) -> dict:
    """The guard: the 1-minute load average and other processes' CPU use, both at most ``max_load``.

    Waits up to ``wait_seconds`` (polling every 5 s) for a busy machine to settle; then raises
    ``MachineBusy``, or with ``allow_busy`` returns the record stamped ``busy: load X``."""
    if max_load < 0:
        raise MachineBusy(f"--max-load {max_load}: a load threshold must be >= 0")
    deadline = time.monotonic() + wait_seconds
    while True:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        others = others_cpu_use(sample_seconds) if sample_seconds > 0 else None
        reasons = []
        if load is not None and load > max_load:
            reasons.append(f"1-minute load average {load:.2f}")
        if others is not None and others > max_load:
            reasons.append(f"other processes keep {others:.2f} CPUs busy")
        if not reasons or time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    record = {"load_1min": load, "others_cpus": others, "max_load": max_load, "busy": None}
    if reasons:
        if not allow_busy:
            raise MachineBusy(f"machine busy: {' and '.join(reasons)} above {max_load}; "
                              "measure alone, wait (--wait-quiet SECONDS) or pass --allow-busy")
        busy = f"busy: load {load:.2f}" if load is not None else "busy"
        record["busy"] = busy + (f", others {others:.2f} CPUs" if others is not None else "")
    return record


def add_guard_args(parser: argparse.ArgumentParser) -> None:
    """--allow-busy, --max-load and --wait-quiet, the same on every benchmark script."""
    g = parser.add_argument_group("quiet-machine guard")
    g.add_argument("--allow-busy", action="store_true",
                   help="measure even when the machine is busy; results are stamped 'busy: load X'")
    g.add_argument("--max-load", type=float, default=DEFAULT_MAX_LOAD,
                   help="highest 1-minute load average / others' CPU use counted as quiet "
                   f"(default {DEFAULT_MAX_LOAD})")
    g.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for a busy machine to become quiet before refusing")


def guard_from_args(args: argparse.Namespace) -> dict:
    """Run the guard as the flags say; a busy machine ends the script: one line on stderr, exit code 2."""
    try:
        record = check_quiet(args.max_load, args.allow_busy, wait_seconds=args.wait_quiet)
    except MachineBusy as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if record["busy"]:
        print(f"warning: {record['busy']} (--allow-busy): these figures are not comparable", file=sys.stderr)
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_guard_args(p)
    args = p.parse_args(argv)
    print(machine_line(machine(guard=guard_from_args(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def save_report(report: dict, out) -> None:
    """Write a benchmark's JSON report atomically (nothing when ``out`` is None or empty)."""
    if not out:
        return
    import json
    from pathlib import Path

    from layout2img.io import atomic_write_text

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), json.dumps(report, indent=1) + "\n")


def emit_report(report: dict, out) -> None:
    """Print a benchmark's JSON report on stdout and write it to ``out`` too (when given)."""
    import json

    print(json.dumps(report, indent=1))
    save_report(report, out)
