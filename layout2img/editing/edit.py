"""edit_image: one text-guided edit of a generated image, from the original to the composite."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..data.batch import collate
from ..errors import ConfigError, GraphError
from ..graph import SceneGraph
from .guidance import Guidance, guidance_encoder
from .region import EditRegion, Target
from .search import EditObjective, EditRenderer, EditState, ProgressCallback, run_search
from .settings import COLOUR_WORDS, EditSettings


@dataclass
class EditResult:
    """What :func:`edit_image` returns (images (3, H, W) in [-1, 1], masks (H, W) in [0, 1])."""

    image: Any  # the masked composite: the edit inside the mask, the original outside
    original: Any  # the image ``model.generate(graph, seed)`` makes
    mask: Any  # the composite's mask (region grown and feathered)
    region: Any  # the region itself: the object's layout mask, the box, or all ones
    edited: Any  # the generator's raw output for the chosen codes (before compositing)
    style_codes: Any  # (num_objects, style_dim) the codes of the result (None: style_dim 0)
    history: list[dict] = field(default_factory=list)  # per step: loss, clip, preserve
    clip_before: float = math.nan  # CLIP similarity of the region with the text, before / after
    clip_after: float = math.nan
    improved: bool = False  # False: nothing scored better than the original, ``image`` is the original
    negatives: list[str] = field(default_factory=list)  # the negatives used (given, or derived from the text)


def _one_graph(model, graph) -> SceneGraph:
    if isinstance(graph, SceneGraph):
        return graph
    if isinstance(graph, dict):
        return SceneGraph.from_dict(graph, model.vocab, source="<edit>", index=0)
    raise GraphError(f"edit: expected one SceneGraph or sg2im dict, got {type(graph).__name__}")


def _check_texts(text: Any, negatives: Any) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("edit: text must be a non-empty string")
    if isinstance(negatives, str) or not all(isinstance(t, str) and t.strip() for t in negatives):
        raise ConfigError("edit: negatives must be a list of non-empty strings")


def colour_negatives(text: str, vocab) -> list[str]:
    """``text`` with its one colour word replaced by each other colour (the colours ``vocab``
    lists as attributes, else :data:`COLOUR_WORDS`); none when the text names no colour or
    several."""
    named = {w for w in re.findall(r"[a-z]+", text.lower()) if w in COLOUR_WORDS}
    if len(named) != 1:
        return []
    colour = named.pop()
    known = [c for c in COLOUR_WORDS if c in getattr(vocab, "attribute_names", ())] or list(COLOUR_WORDS)
    return [re.sub(rf"\b{colour}\b", c, text, flags=re.IGNORECASE) for c in known if c != colour]


def cluster_candidates(model, graph: SceneGraph, rows: list[int], state: EditState,
                       base_codes) -> list[dict[str, torch.Tensor]]:
    """Starts at the fitted style clusters of the edited object's class (the data's own
    appearances): each sets the object's code to one centre, the rest as in the original. None
    for several objects, a model without fitted clusters or without style codes."""
    clusters = model.style_clusters
    if clusters is None or not clusters.fitted or len(rows) != 1 or "codes" not in state.tensors:
        return []
    row = rows[0]
    cls = model.vocab.object_index(graph.objects[row])
    zero = {name: torch.zeros_like(t) for name, t in state.snapshot().items()}
    starts = []
    for j in range(int(clusters.counts[cls])):
        start = {name: t.clone() for name, t in zero.items()}
        start["codes"][0] = clusters.centre(cls, j).to(base_codes) - base_codes[row]
        starts.append(start)
    return starts


def edit_image(model, graph, *, text: str, seed: int = 0, target: Target = None,
               steps: int = EditSettings.steps, lr: float = EditSettings.lr, strength: float = EditSettings.strength,
               preserve_weight: float = EditSettings.preserve_weight, code_weight: float = EditSettings.code_weight,
               modulation: bool = EditSettings.modulation, clip=None, grow: int = EditSettings.grow,
               feather: int = EditSettings.feather, augment: int = EditSettings.augment,
               jitter: float = EditSettings.jitter, negatives: Sequence[str] = (),
               modulation_at: str = EditSettings.modulation_at,
               restarts: int = EditSettings.restarts, init_scale: float = EditSettings.init_scale,
               patience: int = EditSettings.patience, screen: int = EditSettings.screen,
               cluster_starts: bool = EditSettings.cluster_starts, auto_negatives: bool = EditSettings.auto_negatives,
               progress: bool = True, callback: ProgressCallback | None = None,
               style_codes: Any = None) -> EditResult:
    """Edit the image ``model.generate(graph, seed=seed)`` makes so its region matches ``text``.
    (The defaults are :class:`EditSettings`' own.)

    ``target``: an object index of the graph (its layout mask is the region; its style code is
    optimised), a box ``(x0, y0, x1, y1)`` (the codes of the objects visible in it), or None (the
    whole image from a caption: every code). ``steps`` Adam steps at ``lr``; the loss is
    ``strength * (1 - cos(CLIP(crop), text)) + preserve_weight * mean |edited - original|``
    outside the mask ``+ code_weight * mean(code**2)`` (a pull towards the N(0, I) prior).
    ``modulation`` also optimises a per-channel scale and shift of the generator's features at
    ``modulation_at`` (one of ``Generator.MODULATION_POINTS``), applied inside the mask:
    ``'rgb'``, the default, the RGB head's output before the tanh, a colour transform of the
    region - the best point for colour edits in the editing benchmark; ``'output'`` the last
    features before the RGB head, which can also change texture; ``'decoder'`` the features
    entering the decoder, after the residual blocks - the later points keep colours like the
    data's. On models with ``text_dim > 0`` it also optimises an offset to the caption embedding
    that drives FiLM. ``clip``: the guiding CLIP (a :class:`TextEncoder` or a spec such as
    ``runs/clip_shapes``; default the model's own text encoder). The CLIP term averages over
    ``augment`` views of the region (the crop and ``augment - 1`` copies jittered by up to
    ``jitter`` of its size, drawn from ``seed``). ``negatives``: texts the region should *not*
    match ("a blue circle"); the CLIP term then adds the cross-entropy of ``text`` against them.
    The composite's mask is the region grown by ``grow`` pixels and feathered ``feather`` times.

    Every 10 steps (and at the last) the current state is scored on one fixed set of views, and
    the best-scoring state is kept (step 0 = the original; ``result.improved`` is False when it
    stays the best). ``restarts`` > 1 runs the optimisation again from random starts near the
    original (N(0, ``init_scale``) code offsets, half that for the modulation; drawn from
    ``seed``) and keeps the best over all runs. Deterministic on CPU for a given seed.
    ``patience`` > 0 ends a run early once that many of its checks in a row did not beat its
    best (the result is still the best state seen, never worse than the original by that
    score). ``screen`` > 0 first scores that many random starts (one forward each, no
    gradient) and starts the runs after the first from the best of them, not from fresh draws.
    ``cluster_starts`` (one object edited, a model with fitted style clusters): the class's
    cluster centres are scored as starts beside the original first, so a request the data
    already covers ("a white cross") starts at a code the generator paints well.
    ``auto_negatives``: without ``negatives``, a text naming one colour gets the same text with
    each other colour as negatives (:func:`colour_negatives`).

    ``progress`` shows a tqdm bar. ``callback(info)`` is called after every step with
    ``{"restart": r, "restarts": R, "step": s, "steps": S, "clip": c, "best_clip": b}``
    (``r`` from 0 to ``R - 1``; ``s`` from 0, the run's start, to ``S``; ``c`` the similarity at
    this step, ``b`` the best state's on the fixed views); returning False stops the edit with
    :class:`~layout2img.errors.EditCancelled`. ``style_codes``: the ``(num_objects, style_dim)``
    codes of the image to start from, as ``model.generate(style_codes=...)`` takes them (default:
    those ``generate`` draws from ``seed``).
    """
    _check_texts(text, negatives)
    settings = EditSettings(steps=steps, lr=lr, strength=strength, preserve_weight=preserve_weight,
                            code_weight=code_weight, modulation=modulation, modulation_at=modulation_at, grow=grow,
                            feather=feather, augment=augment, jitter=jitter, restarts=restarts, init_scale=init_scale,
                            patience=patience, screen=screen, cluster_starts=cluster_starts,
                            auto_negatives=auto_negatives)
    if model.style_dim == 0 and not settings.modulation:
        raise ConfigError("edit: this model has no style codes (style_dim=0); only modulation=True can edit it")
    graph = _one_graph(model, graph)
    encoder = guidance_encoder(model, clip)
    negatives = list(negatives) or (colour_negatives(text, model.vocab) if settings.auto_negatives else [])

    was_training = model.training
    model.eval()
    try:
        device = model.device
        encoder.to(device)
        out = model.generate(graph, seed=seed, return_output=True, style_codes=style_codes)
        original = out.images[0].detach()
        texts = model.encode_texts(collate([graph.to_item(model.vocab)]).to(device)) \
            if model.text_encoder is not None else None
        where = EditRegion.build(target, out.layout.geometry.weights.detach(), out.boxes, graph.num_objects,
                                 settings.grow, settings.feather)
        guidance = Guidance(encoder, text, negatives, crop_box=where.crop_box, jitter=settings.jitter, seed=seed,
                            device=device)
        state = EditState(model, len(where.rows), settings)
        render = EditRenderer(model, out, texts, where.rows, where.mask, settings.modulation_at,
                              film="film" in state.tensors)
        objective = EditObjective(guidance, original, where.mask, where.rows, settings)
        candidates = (cluster_candidates(model, graph, where.rows, state, render.base_codes)
                      if settings.cluster_starts and render.base_codes is not None else [])
        outcome = run_search(state, render, objective, guidance, settings, seed, callback=callback, progress=progress,
                             candidates=candidates)
        with torch.no_grad():
            edited, codes = render(outcome.best)
            image = (where.mask * edited + (1 - where.mask) * original).clamp(-1, 1)
            clip_before = float(guidance.similarity(original))
            clip_after = float(guidance.similarity(image))
        return EditResult(image=image, original=original, mask=where.mask, region=where.region.detach(),
                          edited=edited, style_codes=codes[:graph.num_objects].detach() if codes is not None else None,
                          history=outcome.history, clip_before=clip_before, clip_after=clip_after,
                          improved=outcome.improved, negatives=negatives)
    finally:
        model.train(was_training)
