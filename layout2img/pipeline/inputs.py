"""What ``generate`` accepts, checked: scene graphs, captions and fixed style codes."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError, DataError, GraphError
from ..vocab import Vocab


def graph_items(graphs: Any, vocab: Vocab) -> list[dict]:
    """Dataset items of a :class:`~layout2img.graph.SceneGraph`, an sg2im dict or a non-empty list
    of them; a bad graph is a GraphError naming its index."""
    from ..graph import SceneGraph

    if isinstance(graphs, (SceneGraph, Mapping)):
        graphs = [graphs]
    if not isinstance(graphs, Sequence) or isinstance(graphs, (str, bytes)) or len(graphs) == 0:
        raise GraphError("generate: expected a SceneGraph, an sg2im dict, or a non-empty list of them")
    items = []
    for i, g in enumerate(graphs):
        if isinstance(g, Mapping):
            g = SceneGraph.from_dict(dict(g), vocab, source="<generate>", index=i)
        elif not isinstance(g, SceneGraph):
            raise GraphError(f"<generate>: graph {i}: expected a SceneGraph or an sg2im dict, "
                             f"got {type(g).__name__}")
        items.append(g.to_item(vocab))
    return items


def with_captions(items: list[dict], text: Any) -> list[dict]:
    """``items`` with their captions replaced: one string for all, or one string (or None) each."""
    if isinstance(text, str):
        text = [text] * len(items)
    if not isinstance(text, Sequence) or len(text) != len(items):
        have = len(text) if isinstance(text, Sequence) else type(text).__name__
        raise ConfigError(f"generate: text must be a string or one caption per graph ({len(items)}), got {have}")
    for i, t in enumerate(text):
        if t is not None and not isinstance(t, str):
            raise ConfigError(f"generate: text {i}: expected a string or None, got {type(t).__name__}")
    return [{**it, "caption": t} for it, t in zip(items, text)]


def check_style_codes(codes: Any, num_objects: int, style_dim: int, finite: bool = True) -> torch.Tensor:
    """``codes`` as a float (num_objects, style_dim) tensor (gradients kept); ``finite`` also checks
    the values (a device sync, so the rendering hook skips it)."""
    if style_dim == 0:
        raise ConfigError("style_codes given, but this model has no style codes (style_dim=0)")
    if not isinstance(codes, torch.Tensor) or tuple(codes.shape) != (num_objects, style_dim):
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise DataError(f"style_codes: expected a tensor of shape ({num_objects}, {style_dim}) "
                        f"(one row per object), got {shape}")
    if not codes.is_floating_point() or (finite and not bool(torch.isfinite(codes).all())):
        raise DataError("style_codes: expected finite floating-point values")
    return codes.float()


def pack_style_codes(codes: Any, items: list[dict], num_samples: int, style_dim: int) -> torch.Tensor:
    """Per-graph (N_i, S) codes (a list, or one tensor for one graph) -> rows following the
    packed batch of ``num_samples`` copies of each graph (zeros for each ``__image__``)."""
    if isinstance(codes, torch.Tensor):
        codes = [codes]
    if not isinstance(codes, Sequence) or len(codes) != len(items):
        have = len(codes) if isinstance(codes, Sequence) else type(codes).__name__
        raise DataError(f"style_codes: expected one tensor per graph ({len(items)}), got {have}")
    rows = []
    for i, (c, it) in enumerate(zip(codes, items)):
        n = it["objs"].numel() - 1
        try:
            c = check_style_codes(c, n, style_dim)
        except DataError as e:
            raise DataError(f"graph {i}: {e}") from None
        rows += [torch.cat([c, c.new_zeros(1, style_dim)])] * num_samples
    return torch.cat(rows)
