"""The training schedule: what a step renders and how fast it learns, each a function of the step
alone, so a resumed run follows the schedule of the run it resumes.

pix2pixHD's coarse-to-fine (``train.global_steps``: the global generator alone at reduced
resolution, then held fixed for ``fix_global_steps``), progressive resizing (``low_res_steps``:
the same network at half size first) and the linear learning-rate decay (``lr_decay_start``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def shrink(images: torch.Tensor, size) -> torch.Tensor:
    """Real images at a reduced training resolution (antialiased: no aliasing the fakes cannot match)."""
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class Schedule:
    """``image_size`` is the model's, ``size_multiple`` what its generator's sizes must divide by."""

    max_steps: int
    image_size: int
    size_multiple: int = 1
    global_steps: int = 0
    fix_global_steps: int = 0
    low_res_steps: int = 0
    lr_decay_start: float = 1.0

    def __post_init__(self):
        low = self.image_size // 2
        if self.low_res_steps < 0 or (self.low_res_steps and low % self.size_multiple):
            raise ConfigError(f"train.low_res_steps={self.low_res_steps}: needs >= 0 and half the image size ({low}) "
                              f"a multiple of the generator's {self.size_multiple}")
        if not 0.0 <= self.lr_decay_start <= 1.0:
            raise ConfigError(f"train.lr_decay_start: expected a fraction of max_steps in [0, 1], "
                              f"got {self.lr_decay_start}")

    @classmethod
    def from_config(cls, cfg, image_size: int, size_multiple: int) -> "Schedule":
        """The schedule of a run config (``cfg.max_steps`` and its ``train`` section)."""
        tr = cfg.train
        return cls(int(cfg.max_steps), image_size, size_multiple, int(tr.global_steps), int(tr.fix_global_steps),
                   int(tr.low_res_steps), float(tr.lr_decay_start))

    def stage(self, step: int) -> str:
        """'global' while the global generator trains alone at reduced resolution, else 'full'."""
        return "global" if step < self.global_steps else "full"

    def size(self, step: int) -> int:
        """The side ``step`` renders at: half the model's during ``low_res_steps``."""
        return self.image_size // 2 if step < self.low_res_steps else self.image_size

    def global_frozen(self, step: int) -> bool:
        """Whether the global generator is held fixed at ``step`` (pix2pixHD's ``niter_fix_global``)."""
        return self.stage(step) == "full" and step < self.global_steps + self.fix_global_steps

    def lr_factor(self, step: int) -> float:
        """The learning rates' multiplier at ``step`` (counted from 0): 1, then linearly to 0 at
        ``max_steps`` from ``lr_decay_start * max_steps`` on."""
        first = self.lr_decay_start * self.max_steps
        if self.lr_decay_start >= 1.0 or step < first:
            return 1.0
        return max(0.0, (self.max_steps - step) / max(self.max_steps - first, 1e-9))
