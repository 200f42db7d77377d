"""What an evaluation report holds and how it is read: the metric names ``--metrics`` takes, the
strict-JSON values and the one summary line."""
from __future__ import annotations

import difflib
import math
from typing import Any, Sequence

from ..errors import ConfigError

#: Every metric ``layout2img evaluate`` knows, in report order.
METRICS = ("fid", "kid", "is", "object-acc", "layout", "diversity", "clip")


def parse_metrics(spec: str | Sequence[str] | None) -> list[str] | None:
    """``"fid,kid"`` -> ``['fid', 'kid']`` (validated); None or ``"all"`` -> None (all, lenient)."""
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return None
    if not names:
        raise ConfigError("--metrics: empty list (choose from " + ", ".join(METRICS) + ")")
    for n in names:
        if n not in METRICS:
            close = difflib.get_close_matches(n, METRICS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {', '.join(METRICS)})"
            raise ConfigError(f"--metrics: unknown metric {n!r}{hint}")
    return list(dict.fromkeys(names))


def finite_or_none(obj: Any) -> Any:
    """NaN/Inf -> None (strict JSON), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def summary_line(report: dict) -> str:
    """One line with the headline numbers of a report."""
    m, p = report["metrics"], report["protocol"]
    parts = []
    if "value" in m.get("fid", {}):
        parts.append(f"FID {m['fid']['value']:.3f}")
    if "mean" in m.get("kid", {}):
        parts.append(f"KID {m['kid']['mean']:.5f}±{m['kid']['std']:.5f}")
    if "generated" in m.get("object-acc", {}):
        g, r = m["object-acc"]["generated"].get("top1"), m["object-acc"]["real"].get("top1")
        parts.append(f"object acc {g:.3f} (real {r:.3f})" if g is not None and r is not None else "object acc n/a")
    if "box_iou" in m.get("layout", {}) and m["layout"]["box_iou"] is not None:
        lay = m["layout"]
        rel = lay.get("relation_satisfaction")
        parts.append(f"box IoU {lay['box_iou']:.3f}, R@0.5 {lay['recall@0.5']:.3f}"
                     + (f", relations {rel:.3f}" if rel is not None else ""))
    if "value" in m.get("diversity", {}) and m["diversity"]["value"] is not None:
        parts.append(f"diversity ({m['diversity']['measure']}) {m['diversity']['value']:.3f}")
    if "generated" in m.get("clip", {}):
        parts.append(f"CLIP {m['clip']['generated']:.2f}")
    head = (f"{p['dataset']} {p['split']}: {p['num_layouts']} layouts x {p['samples_per_layout']} "
            f"({p['layout_source']} layout)")
    return head + ": " + ("; ".join(parts) if parts else "no metrics")
