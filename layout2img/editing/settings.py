"""The knobs of an edit and their defaults (no torch here: the ``edit`` command's parser reads them)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

#: Colour words an edit's text may name; with ``auto_negatives`` the text with each other one of
#: them (those the model's vocabulary lists as attributes, when it lists any) is a negative.
COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "gray", "black")

#: Where ``modulation`` acts, the default first (the names of ``Generator.MODULATION_POINTS``;
#: spelled out here so that the ``edit`` command's parser does not load torch).
MODULATION_SITES = ("rgb", "output", "decoder")


@dataclass(frozen=True)
class EditSettings:
    """The knobs of an edit (see :func:`~layout2img.editing.edit_image`), checked on creation."""

    # The defaults: one run of <= 18 steps from the best of the original and the class's style
    # clusters, 2 views, the other colours as negatives - chosen on Shapes val scenes 0-59 (88 % in
    # 1.4 s an edit, where 3 runs took 3.7 s for 90 %; docs/BENCHMARKS.md, "Edits that land").
    # ``screen`` matters from a second run on (``restarts`` > 1).
    steps: int = 18
    lr: float = 0.1
    strength: float = 1.0
    preserve_weight: float = 1.0
    code_weight: float = 0.0
    modulation: bool = True
    modulation_at: str = "rgb"
    grow: int = 1
    feather: int = 1
    augment: int = 2
    jitter: float = 0.1
    restarts: int = 1
    init_scale: float = 1.0
    patience: int = 2
    screen: int = 8
    # Start from the object class's fitted style clusters (scored with the guiding CLIP beside the
    # current code) and, without negatives, contrast the text's colour with the other colours.
    cluster_starts: bool = True
    auto_negatives: bool = True

    def __post_init__(self):
        if self.modulation_at not in MODULATION_SITES:
            raise ConfigError(f"edit: modulation_at must be one of {', '.join(MODULATION_SITES)}, "
                              f"got {self.modulation_at!r}")
        for name in ("restarts", "augment"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"edit: {name} must be a positive integer, got {value!r}")
        for name in ("steps", "patience", "screen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"edit: {name} must be a non-negative integer, got {value!r}")
        for name in ("lr", "strength", "preserve_weight", "code_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"edit: {name} must be a finite number >= 0, got {value!r}")
