"""What an edit may change: the region, the composite mask around it, and the objects whose codes move."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import kornia
import torch

from ..errors import ConfigError, DataError

#: An edit target: an object index, a normalised box (x0, y0, x1, y1) or its 'x0,y0,x1,y1' text,
#: or None for the whole image.
Target = int | Sequence[float] | str | None


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' (normalised, origin top-left) -> a valid box, or a one-line ConfigError."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 in [0, 1]")
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ConfigError(f"--box {text!r}: expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return values


def box_mask(box: Sequence[float], h: int, w: int, device=None) -> torch.Tensor:
    """(H, W) pixel coverage of a normalised box (fractional at its edges)."""

    def cover(lo: float, hi: float, n: int) -> torch.Tensor:
        edges = torch.arange(n, dtype=torch.float32, device=device)
        return (torch.minimum(edges + 1, torch.tensor(hi * n, device=device))
                - torch.maximum(edges, torch.tensor(lo * n, device=device))).clamp(0, 1)

    x0, y0, x1, y1 = (float(v) for v in box)
    return cover(y0, y1, h)[:, None] * cover(x0, x1, w)[None, :]


def composite_mask(region: torch.Tensor, grow: int = 1, feather: int = 1) -> torch.Tensor:
    """The region (H, W) in [0, 1] grown by ``grow`` pixels (a flat (2 grow + 1)² dilation, the
    image border ignored) and softened by ``feather`` passes of a 3x3 box blur (border pixels
    replicated); every pixel the region touches stays at >= its value."""
    region = region[None, None].float()
    mask = region
    if grow > 0:
        mask = kornia.morphology.dilation(mask, torch.ones(2 * grow + 1, 2 * grow + 1, device=mask.device))
    for _ in range(max(0, feather)):
        mask = kornia.filters.box_blur(mask, 3, border_type="replicate", separable=False)
    return torch.maximum(mask, region)[0, 0].clamp(0, 1)


@dataclass(frozen=True)
class EditRegion:
    """Where an edit acts, built once from the target and the original image's layout."""

    region: torch.Tensor  # (H, W) in [0, 1]: the object's layout mask, the box, or all ones
    mask: torch.Tensor  # (H, W) in [0, 1]: the composite's mask (the region grown and feathered)
    crop_box: torch.Tensor | None  # (4,) the normalised box CLIP looks at; None: the whole image
    rows: list[int]  # the objects whose style codes the edit may change

    @classmethod
    def build(cls, target: Target, weights: torch.Tensor, boxes: torch.Tensor, num_objects: int,
              grow: int = 1, feather: int = 1) -> "EditRegion":
        """``weights`` (O, H, W): each object's visible share of each pixel; ``boxes`` (O, 4)
        the layout's boxes; the graph's objects are the first ``num_objects`` rows."""
        n = num_objects
        h, w = weights.shape[-2:]
        if target is None:  # a caption for the whole image: every code may change
            region = torch.ones(h, w, device=weights.device)
            return cls(region=region, mask=region.clone(), crop_box=None, rows=list(range(n)))
        if isinstance(target, int) and not isinstance(target, bool):
            if not 0 <= target < n:
                raise DataError(f"--object {target}: the graph has {n} objects (0-{n - 1})")
            region = weights[target]
            return cls(region=region, mask=composite_mask(region, grow, feather),
                       crop_box=boxes[target].detach().float(), rows=[target])
        box = parse_box(target if isinstance(target, str) else ",".join(str(v) for v in target))
        region = box_mask(box, h, w, weights.device)
        # the objects with a visible share of the box; at least the one that covers most of it
        inside = (weights[:n] * region).sum(dim=(1, 2))
        rows = [i for i in range(n) if inside[i] > 0.05 * float(region.sum())] or [int(inside.argmax())]
        return cls(region=region, mask=composite_mask(region, grow, feather),
                   crop_box=torch.tensor(box, dtype=torch.float32, device=weights.device), rows=rows)
