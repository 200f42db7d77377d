"""What every benchmark report records about where it ran (imported by the scripts beside it)."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def machine() -> dict:
    """CPU model and count, torch threads, GPU, Python / torch / OS versions, date, load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
