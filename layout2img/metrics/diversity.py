"""Diversity: how different the K samples of one layout are from each other.

The measure is the mean pairwise LPIPS distance (Zhang et al. 2018, AlexNet) when the ``lpips``
package *and* its weights are already on disk (nothing is downloaded); otherwise the mean pairwise
L2 distance between the samples' Inception pool features, labelled
``inception-feature-distance`` so the two are never confused.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

LPIPS = "lpips-alex"
INCEPTION_DISTANCE = "inception-feature-distance"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's weights, which lpips loads


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS can run offline, else why not."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return "the lpips package is not installed"
    linear = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return f"lpips weights not found at {linear}"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if not backbone.is_file():
        return f"AlexNet weights for lpips not found at {backbone} (never downloaded)"
    return None


def mean_pairwise_distance(groups: Sequence[np.ndarray]) -> float:
    """Mean over groups of the mean L2 distance between every pair of rows of a group (K, D)."""
    means = []
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if g.shape[0] < 2:
            continue
        d = np.sqrt(np.maximum(((g[:, None, :] - g[None, :, :]) ** 2).sum(-1), 0))
        iu = np.triu_indices(g.shape[0], 1)
        means.append(d[iu].mean())
    return float(np.mean(means)) if means else float("nan")


class LpipsDiversity:
    """Mean pairwise LPIPS within groups of images in [-1, 1] (only when available offline).

    ``update(groups)`` once per batch of layouts, each group the (K, 3, H, W) samples of one
    layout; ``compute()`` is the mean over updates of each update's mean over its groups.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        import lpips  # noqa: PLC0415 - optional dependency, checked by lpips_unavailable_reason

        self.net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        self.device = device
        self.batch_means: list[float] = []

    @torch.no_grad()
    def update(self, groups: Sequence[torch.Tensor]) -> None:
        means = []
        for g in groups:
            k = g.shape[0]
            if k < 2:
                continue
            i, j = torch.triu_indices(k, k, 1)
            d = self.net(g[i].to(self.device), g[j].to(self.device)).flatten()
            means.append(float(d.mean()))
        self.batch_means.append(float(np.mean(means)) if means else float("nan"))

    def compute(self) -> float:
        return float(np.mean(self.batch_means)) if self.batch_means else float("nan")
