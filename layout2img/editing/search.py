"""The optimisation of an edit: what is optimised, how it is rendered and scored, restarts and selection."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import EditCancelled
from .guidance import Guidance
from .settings import EditSettings

SELECT_EVERY = 10  # steps between comparisons of the current edit with the best so far
MIN_SELECTION_VIEWS = 8  # candidates are compared on at least this many fixed views

#: Called after every step with {"restart", "restarts", "step", "steps", "clip", "best_clip"};
#: returning False cancels the edit.
ProgressCallback = Callable[[dict], bool | None]


class EditState:
    """The optimised tensors, all zero at the original image: ``codes`` (offsets to the chosen
    objects' style codes), and with modulation ``gamma`` / ``beta`` (a per-channel scale and shift
    at the modulation point) and, on text models, ``film`` (an offset to the caption embedding).
    A model without style codes has something to optimise only with modulation (edit_image checks)."""

    def __init__(self, model, num_rows: int, settings: EditSettings):
        device = model.device
        self.tensors: dict[str, torch.Tensor] = {}
        if model.style_dim > 0:
            self.tensors["codes"] = torch.zeros(num_rows, model.style_dim, device=device, requires_grad=True)
        if settings.modulation:
            channels = model.generator.modulation_channels(settings.modulation_at)
            self.tensors["gamma"] = torch.zeros(channels, device=device, requires_grad=True)
            self.tensors["beta"] = torch.zeros_like(self.tensors["gamma"], requires_grad=True)
            if model.text_dim > 0:
                self.tensors["film"] = torch.zeros(1, model.text_dim, device=device, requires_grad=True)

    @property
    def params(self) -> list[torch.Tensor]:
        return list(self.tensors.values())

    def restart(self, rng: torch.Generator, init_scale: float) -> None:
        """A fresh start near the original: N(0, init_scale) code offsets, half that for the rest."""
        with torch.no_grad():
            for name, p in self.tensors.items():
                scale = init_scale if name == "codes" else 0.5 * init_scale
                p.copy_(torch.randn(p.shape, generator=rng).to(p.device) * scale)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.tensors.items()}

    def load(self, snapshot: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.tensors.items():
                p.copy_(snapshot[name])


class RegionModulation:
    """Features (B, C, h, w) -> ``h * (1 + m * gamma) + m * beta``, ``m`` the edit mask at the
    features' resolution: a per-channel scale and shift that acts inside the region only."""

    def __init__(self, mask: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor):
        self.mask, self.gamma, self.beta = mask, gamma, beta

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(features.dtype)
        if tuple(m.shape) != tuple(features.shape[-2:]):
            m = F.interpolate(m[None, None], size=features.shape[-2:], mode="area")[0, 0]
        gamma = self.gamma.to(features.dtype)[None, :, None, None]
        beta = self.beta.to(features.dtype)[None, :, None, None]
        return features * (1 + m * gamma) + m * beta


class EditRenderer:
    """The image for a state, through the model's rendering hook (:meth:`SceneGraphToImage.render`)."""

    def __init__(self, model, output, texts, rows: list[int], mask: torch.Tensor, modulation_at: str,
                 film: bool = False):
        self.model = model
        self.layout = output.layout
        self.base_codes = output.style_codes.detach().float() if output.style_codes is not None else None
        self.row_index = torch.tensor(rows, dtype=torch.long, device=model.device)
        self.mask = mask
        self.modulation_at = modulation_at
        if texts is not None and bool(texts.text_mask.any()):
            self.caption_emb, self.caption_mask = texts.text_emb, texts.text_mask
        else:  # no caption: a zero embedding for the FiLM offset to start from
            self.caption_emb = torch.zeros(1, model.text_dim, device=model.device) if model.text_dim else None
            self.caption_mask = None
        # The generator's trunk reads neither the codes nor the modulations: computed once, each step
        # then runs the decoder alone (None with a FiLM offset, which changes the trunk every step).
        # (one image: its caption mask, when there is one, is all true)
        self.trunk = None if film else model.render_trunk(
            self.layout, self.caption_emb if self.caption_mask is not None else None)

    def __call__(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image (3, H, W) in [-1, 1], every object's codes) for the tensors of a state."""
        codes = self.base_codes
        if "codes" in values:
            codes = self.base_codes.index_add(0, self.row_index, values["codes"])
        modulate = None
        if "gamma" in values:
            modulate = {self.modulation_at: RegionModulation(self.mask, values["gamma"], values["beta"])}
        if "film" in values:  # the offset switches FiLM on even for an image without a caption
            image = self.model.render(self.layout, style_codes=codes, caption_emb=self.caption_emb + values["film"],
                                      modulate=modulate)
        else:
            caption_emb = self.caption_emb if self.caption_mask is not None else None
            image = self.model.render(self.layout, style_codes=codes, caption_emb=caption_emb,
                                      caption_mask=self.caption_mask, modulate=modulate, trunk=self.trunk)
        return image[0].float().clamp(-1, 1), codes


class EditObjective:
    """``strength * CLIP term`` on the composite ``+ preserve_weight * mean |edited - original|``
    outside the mask ``+ code_weight * mean(code**2)`` of the chosen objects (a pull to the prior)."""

    def __init__(self, guidance: Guidance, original: torch.Tensor, mask: torch.Tensor, rows: list[int],
                 settings: EditSettings):
        self.guidance, self.original, self.mask = guidance, original, mask
        self.row_index = torch.tensor(rows, dtype=torch.long, device=mask.device)
        self.settings = settings

    def __call__(self, edited: torch.Tensor, codes: torch.Tensor | None, boxes: torch.Tensor):
        """(total loss, CLIP similarity, outside L1) of an edited image scored on the views ``boxes``."""
        s = self.settings
        composite = self.mask * edited + (1 - self.mask) * self.original
        term, sim = self.guidance.score(composite, boxes)
        outside = ((edited - self.original).abs() * (1 - self.mask)[None]).mean()
        total = s.strength * term + s.preserve_weight * outside
        if s.code_weight > 0 and codes is not None:
            total = total + s.code_weight * codes[self.row_index].square().mean()
        return total, sim, outside


@dataclass
class SearchOutcome:
    """The best state found, the per-step history, and whether it beats the original."""

    best: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    improved: bool = False  # False: the original (restart 0, step 0) scored best


def score_starts(render: EditRenderer, objective: EditObjective, boxes: torch.Tensor,
                 snapshots: list[dict[str, torch.Tensor]]) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """(selection loss on ``boxes``, snapshot) of each start: one forward each, no gradient."""
    scored = []
    for snapshot in snapshots:
        with torch.inference_mode():
            loss, _, _ = objective(*render(snapshot), boxes)
        scored.append((float(loss), snapshot))
    return scored


def random_starts(state: EditState, settings: EditSettings, rng: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """``settings.screen`` random starts, drawn as restarts draw them."""
    starts = []
    for _ in range(settings.screen):
        state.restart(rng, settings.init_scale)
        starts.append(state.snapshot())
    return starts


def best_first(scored: list[tuple[float, dict[str, torch.Tensor]]]) -> list[dict[str, torch.Tensor]]:
    order = sorted(range(len(scored)), key=lambda i: (scored[i][0], i))
    return [scored[i][1] for i in order]


def run_search(state: EditState, render: EditRenderer, objective: EditObjective, guidance: Guidance,
               settings: EditSettings, seed: int, callback: ProgressCallback | None = None,
               progress: bool = True, candidates: list[dict[str, torch.Tensor]] = ()) -> SearchOutcome:
    """Adam on the state for ``steps`` steps, ``restarts`` times (the first run from the original,
    the others from random starts near it, drawn from ``seed``), keeping the state that scores
    best on one fixed set of views, checked every ``SELECT_EVERY`` steps and at the last.

    Candidates are compared on fixed views: picking the lowest of the noisy per-step losses
    (fresh jitter each step) would favour lucky views, not better edits. ``patience`` > 0 ends
    a run once that many checks in a row did not beat the run's best; ``screen`` > 0 scores that
    many random starts first and starts the later runs from the best of them. ``callback`` gets
    a progress dict after every step (step 0 is the run's start) and cancels with False.
    ``candidates``: starts scored beside the original before the first run (e.g. the class's
    style clusters): the first run starts from the best of them all, the later ones from the
    best of the rest and of the screened random starts.
    """
    steps = settings.steps
    select_boxes = guidance.views(max(MIN_SELECTION_VIEWS, settings.augment))
    params = state.params
    outcome = SearchOutcome(best={})
    best_loss, best_clip, best_at = math.inf, math.nan, None
    init_rng = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
    runs = settings.restarts if steps > 0 else 1  # steps=0: the original, nothing else
    starts: list[dict[str, torch.Tensor]] = []
    ranked, from_candidate = [], False
    if candidates:  # the first run starts from the best of the original and the candidates
        scored = score_starts(render, objective, select_boxes, [state.snapshot(), *candidates])
        best = min(range(len(scored)), key=lambda i: (scored[i][0], i))
        from_candidate = best != 0
        state.load(scored[best][1])
        ranked = [c for i, c in enumerate(scored) if i not in (0, best)]  # for the later runs
    bar = tqdm(total=runs * (steps + 1), desc="edit", unit="step", disable=not progress or None, leave=False)
    try:
        for restart in range(runs):
            if restart == 1:
                screened = score_starts(render, objective, select_boxes, random_starts(state, settings, init_rng))
                starts = best_first(ranked + screened)
            if restart > 0:
                if starts:
                    state.load(starts.pop(0))
                else:
                    state.restart(init_rng, settings.init_scale)
            optimiser = torch.optim.Adam(params, lr=settings.lr)
            run_best, stale = math.inf, 0
            for step in range(steps + 1):
                with torch.enable_grad():
                    edited, codes = render(state.tensors)
                    total, sim, outside = objective(edited, codes, guidance.views(settings.augment))
                record = {"restart": restart, "step": step, "loss": float(total.detach()),
                          "clip": float(sim.detach()), "preserve": float(outside.detach())}
                outcome.history.append(record)
                bar.update(1)
                bar.set_postfix(clip=f"{record['clip']:.3f}", refresh=False)
                if step % SELECT_EVERY == 0 or step == steps:
                    with torch.inference_mode():
                        selection_loss, selection_clip, _ = objective(edited, codes, select_boxes)
                    record["selection_loss"] = float(selection_loss)
                    if record["selection_loss"] < best_loss:
                        best_loss, best_clip, best_at = record["selection_loss"], float(selection_clip), (restart, step)
                        outcome.best = state.snapshot()
                    if record["selection_loss"] < run_best:
                        run_best, stale = record["selection_loss"], 0
                    else:
                        stale += 1
                if callback is not None and callback({"restart": restart, "restarts": runs, "step": step,
                                                      "steps": steps, "clip": record["clip"],
                                                      "best_clip": best_clip}) is False:
                    raise EditCancelled(f"edit cancelled at restart {restart + 1}/{runs}, step {step}/{steps}")
                if step == steps or 0 < settings.patience <= stale:  # the run is done, or stopped improving
                    break
                grads = torch.autograd.grad(total, params)  # the model's own weights get no gradient
                for p, g in zip(params, grads):
                    p.grad = g
                optimiser.step()
    finally:
        bar.close()
    outcome.improved = best_at != (0, 0) or from_candidate  # a candidate start already beat the original
    return outcome
