"""The editor's style clusters: each class's fitted clusters with a colour swatch apiece (GET /api/styles).

A swatch is the colour the model gives that cluster: the class drawn alone in a fixed box
(:data:`SWATCH_BOX`, its mask predicted) with the cluster's centre as its style code, and the
mean RGB of the image weighted by the object's visible share of each pixel. All clusters of a
class are drawn in one batch, once per model; the answer is cached per class.
"""
from __future__ import annotations

import threading

from ..vocab import IMAGE_OBJECT
from .protocol import RequestError

#: Where the swatch's object is drawn (a box in the middle, big enough for its mask).
SWATCH_BOX = [0.15, 0.15, 0.85, 0.85]


class StyleSwatches:
    """The fitted style clusters of one model, by class name, with their swatch colours."""

    def __init__(self, model):
        self.model = model
        self._cache: dict[str, dict] = {}
        self._lock = threading.Lock()

    @property
    def fitted(self) -> bool:
        clusters = self.model.style_clusters
        return clusters is not None and clusters.fitted

    def counts(self) -> dict[str, int]:
        """Class name -> number of fitted clusters (classes without any left out; {} when unfitted)."""
        if not self.fitted:
            return {}
        counts = self.model.style_clusters.counts.tolist()
        names = self.model.vocab.object_names
        return {names[c]: int(n) for c, n in enumerate(counts) if n > 0}

    def for_class(self, name: str) -> dict:
        """``{"object", "clusters": [{"index", "code", "color": "#rrggbb"}, ...]}`` for class
        ``name`` (RequestError 400 for an unknown class, 409 when the model has no clusters).
        Call with a turn on the model held: it may run the model once."""
        vocab = self.model.vocab
        if name not in vocab.object_names or name == IMAGE_OBJECT:
            raise RequestError(400, f"unknown object class {name[:80]!r} (see /api/info's objects)")
        if not self.fitted:
            reason = ("this model has no style codes (style_dim 0)" if self.model.style_clusters is None
                      else "this model's style clusters are not fitted (run `layout2img fit-styles --checkpoint DIR`)")
            raise RequestError(409, reason)
        with self._lock:
            answer = self._cache.get(name)
            if answer is None:
                answer = self._cache[name] = self._compute(name)
        return answer

    def _compute(self, name: str) -> dict:
        import torch

        clusters = self.model.style_clusters
        c = self.model.vocab.object_index(name)
        centres = clusters.centres[c, : int(clusters.counts[c])].float().cpu()
        if len(centres) == 0:
            return {"object": name, "clusters": []}
        graph = {"objects": [name], "relationships": [], "boxes": [SWATCH_BOX]}
        out = self.model.generate([graph] * len(centres), seed=0, return_output=True,
                                  style_codes=[code[None] for code in centres])
        images = (out.images.float().cpu() + 1) / 2  # (k, 3, H, W) in [0, 1]
        weights = out.layout.geometry.weights.float().cpu()[0::2]  # each graph's object; its __image__ follows
        means = (images * weights[:, None]).sum(dim=(2, 3)) / weights.sum(dim=(1, 2)).clamp(min=1e-6)[:, None]
        rgb = torch.round(means.clamp(0, 1) * 255).long().tolist()
        return {"object": name, "clusters": [
            {"index": j, "code": code, "color": "#%02x%02x%02x" % tuple(rgb[j])}
            for j, code in enumerate(centres.tolist())]}
