"""The one device resolver: a ``--device`` / ``device:`` string to a checked ``torch.device``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # torch loads only when a device is resolved (the CLI's parser stays light)
    import torch


def resolve_device(name: Any = "auto") -> "torch.device":
    """``'auto'`` -> ``cuda`` when a GPU is available, else ``cpu``; ``'cpu'``, ``'cuda'``,
    ``'cuda:N'`` and ``'mps'`` are checked against the machine. Anything else, or a device the
    machine lacks, is a one-line :class:`ConfigError` naming the value and the way out."""
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r}: not a device; expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA GPU is available (use cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r}: MPS is not available here (use cpu or auto)")
    return device
