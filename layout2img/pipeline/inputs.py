"""What ``generate`` and ``predict_layout`` accept, checked once: :func:`check_inputs` turns the
arguments into a :class:`GenerationRequest` (graphs as items, captions applied, the style source
resolved, style codes packed), and nothing after it checks them again."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..config import STYLE_CHOICES
from ..errors import ConfigError, DataError, GraphError
from ..vocab import Vocab


@dataclass
class GenerationRequest:
    """The checked arguments of ``generate`` / ``predict_layout``."""

    items: list[dict]  # one dataset item per graph, its caption replaced by ``text`` where given
    num_samples: int
    seed: int  # the style codes' seed
    layout_seed: int  # the layout sampler's seed
    style_source: str  # 'cluster' or 'sample'
    style_codes: torch.Tensor | None  # rows following the packed batch, or None
    refine: bool
    pinned: Any = None
    style_known: torch.Tensor | None = None  # (O,) bool: the given rows when only some are (else None)


def resolve_style_source(model, style: str | None = "auto", checkpoint: Any = None) -> str:
    """A user's style choice (:data:`STYLE_CHOICES`; None = ``auto``) -> the pipeline's
    ``style_source``: ``auto`` is the fitted style clusters when the model has them, else sampled.
    ConfigError for ``cluster`` without fitted clusters (``checkpoint`` goes into the hint to run
    ``layout2img fit-styles``)."""
    style = "auto" if style is None else style
    if style not in STYLE_CHOICES:
        raise ConfigError(f"style {style!r}: expected one of {', '.join(STYLE_CHOICES)}")
    fitted = model.style_clusters is not None and model.style_clusters.fitted
    if style == "auto":
        return "cluster" if fitted else "sample"
    if style == "cluster" and not fitted:
        if model.style_dim == 0:
            raise ConfigError("style cluster: this model has no style codes (style_dim 0), so no style clusters")
        where = checkpoint if checkpoint is not None else model.pretrained_folder or "DIR"
        raise ConfigError(f"style cluster: this model's style clusters are not fitted; run "
                          f"`layout2img fit-styles --checkpoint {where}` first (or use style sample)")
    return style


#: Where :meth:`SceneGraphToImage.forward` takes the layout and the style codes from.
LAYOUT_SOURCES = ("gt", "pred")
STYLE_SOURCES = ("encode", "sample", "cluster")


def check_sources(layout_source: str, style_source: str) -> None:
    """ConfigError unless ``layout_source`` / ``style_source`` are :data:`LAYOUT_SOURCES` / :data:`STYLE_SOURCES`."""
    if layout_source not in LAYOUT_SOURCES:
        raise ConfigError(f"layout_source: unknown value {layout_source!r} ({' or '.join(LAYOUT_SOURCES)})")
    if style_source not in STYLE_SOURCES:
        raise ConfigError(f"style_source: unknown value {style_source!r} ({', '.join(STYLE_SOURCES)})")


def _check_int(name: str, value: Any, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        kind = "a positive integer" if minimum == 1 else "an integer"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value


def check_inputs(model, graphs: Any, seed: int = 0, num_samples: int = 1, text: Any = None,
                 style_source: str | None = None, style_codes: Any = None, layout_seed: int | None = None,
                 refine: bool | None = None, pinned: Any = None) -> GenerationRequest:
    """Every argument of ``generate`` / ``predict_layout`` checked once, with one-line errors
    naming the argument (see :meth:`SceneGraphToImage.generate` for their meaning)."""
    if text is not None and model.text_encoder is None:
        raise ConfigError("text given, but this model has no text encoder "
                          f"(text_dim={model.text_dim}); text guidance needs a model trained with one")
    num_samples = _check_int("num_samples", num_samples, 1)
    seed = _check_int("seed", seed)
    layout_seed = seed if layout_seed is None else _check_int("layout_seed", layout_seed)
    items = graph_items(graphs, model.vocab)
    if text is not None:
        items = with_captions(items, text)
    if style_source == "encode":
        raise ConfigError("style_source 'encode' needs the real images: use forward() on a dataset batch")
    source = resolve_style_source(model, style_source)
    known = None
    if style_codes is not None:
        style_codes, known = pack_style_codes(style_codes, items, num_samples, model.style_dim)
    refine = model.refines_by_default if refine is None else bool(refine)
    return GenerationRequest(items, num_samples, seed, layout_seed, source, style_codes, refine, pinned, known)


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


def pack_style_codes(codes: Any, items: list[dict], num_samples: int,
                     style_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-graph codes -> ``(rows, known)`` following the packed batch of ``num_samples`` copies of
    each graph (zeros for each ``__image__``). A graph's entry is an (N_i, S) tensor, a mapping
    ``{object index: (S,) code}`` for some of its objects, or None (none given); ``known`` (O,)
    bool marks the given rows, None when every object's code is given. One tensor: one graph."""
    if isinstance(codes, (torch.Tensor, Mapping)):
        codes = [codes]
    if not isinstance(codes, Sequence) or isinstance(codes, (str, bytes)) or len(codes) != len(items):
        have = len(codes) if isinstance(codes, Sequence) else type(codes).__name__
        raise DataError(f"style_codes: expected one tensor per graph ({len(items)}), got {have}")
    rows, known = [], []
    for i, (c, it) in enumerate(zip(codes, items)):
        n = it["objs"].numel() - 1
        try:
            given = torch.ones(n, dtype=torch.bool)
            if c is None or isinstance(c, Mapping):
                c, given = partial_codes(c or {}, n, style_dim)
            c = check_style_codes(c, n, style_dim)
        except DataError as e:
            raise DataError(f"graph {i}: {e}") from None
        rows += [torch.cat([c, c.new_zeros(1, style_dim)])] * num_samples
        known += [torch.cat([given, given.new_zeros(1)])] * num_samples
    every_object = all(bool(k[:-1].all()) for k in known)  # then the codes replace the draw (no RNG use)
    return torch.cat(rows), None if every_object else torch.cat(known)


def partial_codes(codes: Mapping, num_objects: int, style_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``{object index: (S,) code}`` -> ((N, S) codes with zeros where none is given, (N,) given)."""
    if style_dim == 0:
        raise ConfigError("style_codes given, but this model has no style codes (style_dim=0)")
    rows = torch.zeros(num_objects, style_dim)
    given = torch.zeros(num_objects, dtype=torch.bool)
    for index, code in codes.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < num_objects:
            raise DataError(f"style_codes: object {index!r} does not exist ({num_objects} objects)")
        if not isinstance(code, torch.Tensor) or tuple(code.shape) != (style_dim,):
            shape = tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__
            raise DataError(f"style_codes: object {index}: expected a tensor of shape ({style_dim},), got {shape}")
        rows[index] = code.detach().float().cpu()
        given[index] = True
    return rows, given
