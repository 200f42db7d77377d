"""Exponential moving average of the model's weights (the weights used for sampling).

torch's ``AveragedModel`` does the bookkeeping; the decay warms up as ``(1 + n) / (10 + n)``
so short runs are not dominated by the random initial weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _warmup_ema(decay: float):
    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model``; call ``update_ema(ema, model)`` after each optimiser step."""
    ema = AveragedModel(model, multi_avg_fn=_warmup_ema(decay), use_buffers=False)
    ema.requires_grad_(False)
    ema.eval()
    return ema


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module) -> None:
    """Average the parameters; copy the buffers (running stats, style clusters, counters)."""
    ema.update_parameters(model)
    for b_ema, b in zip(ema.module.buffers(), model.buffers()):
        b_ema.copy_(b)
