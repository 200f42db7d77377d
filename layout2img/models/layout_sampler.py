"""Sampled layouts: a conditional VAE over boxes with a learned prior and per-object noise.

Today's :class:`~layout2img.models.layout.LayoutPredictor` maps a graph to one layout, the mean
of the plausible ones (things pile up in the middle). :class:`LayoutSampler` draws one latent
``z_i`` per object and decodes all objects together, so one graph gives many layouts:

    context_i = GraphTripleConvNet(obj_vec_i ⊕ pinned box_i ⊕ pinned flag_i)   (+ residual)
    prior p(z_i | context_i), posterior q(z_i | context_i, box_i): diagonal Gaussians
    GraphTripleConvNet(context_i ⊕ z_i) ─► LayoutPredictor head ─► box, mask logits

* The objects' draws meet in the decoder's graph convolution *before* any box exists, and the
  prior sees the pinned boxes around each object: training pins a random subset of the true
  boxes (:func:`sample_known_mask`), so the prior learns where an object goes given the others.
* Sampling places the free objects one at a time per graph (``placement='sequential'``), each
  drawn given the boxes placed so far, so later objects fit around earlier ones (or all at once,
  ``'joint'``). A ``torch.Generator`` (or explicit ``noise``) fixes the draw: same seed, same layout.
* Pinned boxes (user boxes, ``__image__``) are copied to the output exactly and steer the rest.
* :meth:`LayoutSampler.losses`: box reconstruction (posterior pass) + KL(q || p), balanced so
  the posterior stays informative and the prior follows it, + a relation hinge on boxes decoded
  from *prior* draws (what sampling produces), + the mask loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, GraphError
from .gcn import GraphTripleConvNet, build_mlp
from .layout import LayoutPredictor, boxes_from_params
from .layout_relations import mask_centre_fractions, predicate_kinds, relation_hinge
from .losses import box_loss, gaussian_kl, mask_loss

#: Object index of ``__image__`` in every vocabulary: its box is always the whole image.
IMAGE_OBJECT_INDEX = 0
LOGVAR_RANGE = (-10.0, 6.0)
POSTERIOR_INIT_LOGVAR = -4.0


@dataclass
class LayoutSample:
    """One draw of :class:`LayoutSampler` (rows follow the input objects)."""

    boxes: torch.Tensor  # (O, 4) valid normalised boxes; known rows are the known boxes exactly
    mask_logits: torch.Tensor  # (O, M, M)
    known: torch.Tensor  # (O,) bool: rows copied from the known boxes (incl. __image__ with objs)
    z: torch.Tensor  # (O, z_dim) the latents decoded
    mu_p: torch.Tensor  # (O, z_dim) prior
    logvar_p: torch.Tensor
    mu_q: torch.Tensor | None = None  # (O, z_dim) posterior (training: gt_boxes given)
    logvar_q: torch.Tensor | None = None
    prior_boxes: torch.Tensor | None = None  # (O, 4) decoded from prior draws (training only)


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """(O, 4) boxes -> (O, 8): corners, centre and size (what the context and posterior read)."""
    return torch.cat([boxes, (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def standard_normal(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """N(0, I) draws from ``generator`` (on its own device), moved to ``device``."""
    rng_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=rng_device).to(device)


def standard_uniform(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    rng_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=rng_device).to(device)


def sample_known_mask(obj_to_img: torch.Tensor, max_fraction: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(O,) bool: random boxes to pin in training. Each image draws a fraction in
    [0, max_fraction], then pins each of its objects with that probability, so the model sees
    free graphs, lightly pinned ones and nearly placed ones (every stage of sequential placement)."""
    if not 0 <= max_fraction <= 1:
        raise ConfigError(f"sample_known_mask: max_fraction must be in [0, 1], got {max_fraction}")
    num_images = int(obj_to_img.max()) + 1 if obj_to_img.numel() else 0
    fraction = standard_uniform((num_images,), generator, obj_to_img.device) * max_fraction
    return standard_uniform(obj_to_img.shape, generator, obj_to_img.device) < fraction[obj_to_img]


def _call(module: nn.Module, *args):
    return module(*args)


def frozen_call(module: nn.Module, *args):
    """``module(*args)`` with its parameters detached: gradients flow to the inputs only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


def placement_ranks(order_key: torch.Tensor, obj_to_img: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """(O,) long: each free object's turn within its image (0 first, by ascending ``order_key``),
    -1 for the others."""
    num = order_key.shape[0]
    by_key = torch.sort(order_key, stable=True).indices
    by_img = torch.sort(obj_to_img[by_key], stable=True).indices
    order = by_key[by_img]  # objects grouped by image, each group by key
    free_sorted = free[order].long()
    before = torch.cumsum(free_sorted, 0) - free_sorted  # free objects earlier in the whole order
    img_sorted = obj_to_img[order]
    first = torch.ones(num, dtype=torch.bool, device=order_key.device)
    first[1:] = img_sorted[1:] != img_sorted[:-1]
    start = torch.cummax(torch.where(first, before, torch.zeros_like(before)), 0).values
    ranks = torch.full((num,), -1, dtype=torch.long, device=order_key.device)
    ranks[order] = torch.where(free_sorted.bool(), before - start, torch.full_like(before, -1))
    return ranks


class LayoutSampler(nn.Module):
    """Boxes and masks for a graph's object vectors, one layout per latent draw (module doc).

    ``width``: the object vectors' size (the graph encoder's); ``num_predicates``: the
    vocabulary's; ``z_dim``: latent size per object; ``layers`` / ``hidden``: each of the two
    triple graph convolutions (context and decoder); ``mask_size``, ``box_hidden``,
    ``mask_channels``, ``mask_norm``: the :class:`LayoutPredictor` head's (today's options).
    """

    def __init__(self, width: int, num_predicates: int, z_dim: int = 8, layers: int = 2, hidden: int = 256,
                 mask_size: int = 16, box_hidden: int = 256, mask_channels: int | None = None,
                 mask_norm: str = "batch", pooling: str = "avg"):
        super().__init__()
        for key, value in (("width", width), ("num_predicates", num_predicates), ("z_dim", z_dim),
                           ("hidden", hidden)):
            if int(value) <= 0:
                raise ConfigError(f"layout.{key}: must be positive, got {value}")
        if layers < 0:
            raise ConfigError(f"layout.layers: must be >= 0, got {layers}")
        self.width, self.num_predicates, self.z_dim = int(width), int(num_predicates), int(z_dim)
        self.pred_embeddings = nn.Embedding(num_predicates, width)
        self.context_in = nn.Linear(width + 8 + 1, width)
        self.context_gconv = GraphTripleConvNet(width, layers, hidden, pooling)
        self.prior_net = build_mlp([width, hidden, 2 * z_dim], final_relu=False)
        self.posterior_net = build_mlp([width + 8, hidden, 2 * z_dim], final_relu=False)
        # The prior starts at N(0, I); the posterior starts informative (its means a random map of
        # the box, its spread small), so the decoder learns to read z before the KL can close it.
        nn.init.normal_(self.prior_net[-1].weight, std=1e-3)
        nn.init.constant_(self.posterior_net[-1].bias[z_dim:], POSTERIOR_INIT_LOGVAR)
        self.decoder_in = nn.Linear(width + z_dim, width)
        self.decoder_gconv = GraphTripleConvNet(width, layers, hidden, pooling)
        self.head = LayoutPredictor(width, mask_size, box_hidden, mask_channels, mask_norm)

    # -- the parts -----------------------------------------------------------------------------
    @staticmethod
    def _gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = params.chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def _convolve(self, net: GraphTripleConvNet, h: torch.Tensor, triples: torch.Tensor,
                  frozen: bool = False) -> torch.Tensor:
        if len(net.layers) == 0 or triples.numel() == 0:
            return h
        call = frozen_call if frozen else _call
        out, _ = call(net, h, call(self.pred_embeddings, triples[:, 1]), triples[:, [0, 2]])
        return h + out  # residual: an object in no triple keeps its own input

    def context(self, obj_vecs, triples, known, known_boxes) -> torch.Tensor:
        """(O, width) each object's situation: its vector, and the pinned boxes around it."""
        flag = known.to(obj_vecs.dtype)[:, None]
        pinned = box_features(known_boxes.to(obj_vecs.dtype)) * flag
        return self._convolve(self.context_gconv, self.context_in(torch.cat([obj_vecs, pinned, flag], 1)), triples)

    def prior(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(O, width) context -> mean, log-variance (O, z_dim) of p(z | context)."""
        return self._gaussian(self.prior_net(context))

    def posterior(self, context: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(O, width) context, (O, 4) boxes -> mean, log-variance (O, z_dim) of q(z | context, box)."""
        return self._gaussian(self.posterior_net(torch.cat([context, box_features(boxes.to(context.dtype))], 1)))

    def decode(self, context, z, triples, frozen: bool = False) -> torch.Tensor:
        """(O, width) vectors for the head, after the objects have exchanged their draws.
        ``frozen``: gradients reach ``context`` and ``z`` but not the decoder's weights."""
        call = frozen_call if frozen else _call
        return self._convolve(self.decoder_gconv, call(self.decoder_in, torch.cat([context, z], 1)), triples, frozen)

    def draw_noise(self, num_objects: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(O, z_dim + 1) N(0, I) draws: the latents' noise, and a last column ordering the placement."""
        return standard_normal((num_objects, self.z_dim + 1), generator, device or self.pred_embeddings.weight.device)

    def _check_inputs(self, obj_vecs, triples, known, known_boxes, gt_boxes, objs, noise, obj_to_img):
        num = obj_vecs.shape[0]
        if obj_vecs.dim() != 2 or obj_vecs.shape[1] != self.width:
            raise GraphError(f"layout sampler: object vectors must be (O, {self.width}), got {tuple(obj_vecs.shape)}")
        if triples.dim() != 2 or triples.shape[1] != 3:
            raise GraphError(f"layout sampler: triples must be (T, 3), got {tuple(triples.shape)}")
        if triples.numel():
            ends, preds = triples[:, [0, 2]], triples[:, 1]
            if int(ends.min()) < 0 or int(ends.max()) >= num:
                bad = int(((ends < 0) | (ends >= num)).any(1).nonzero()[0])
                raise GraphError(f"layout sampler: triple {bad} names an object outside 0..{num - 1}")
            if int(preds.min()) < 0 or int(preds.max()) >= self.num_predicates:
                bad = int(((preds < 0) | (preds >= self.num_predicates)).nonzero()[0])
                raise GraphError(f"layout sampler: triple {bad} has predicate {int(preds[bad])}, outside "
                                 f"0..{self.num_predicates - 1}")
        for name, t, shape in (("known", known, (num,)), ("known_boxes", known_boxes, (num, 4)),
                               ("gt_boxes", gt_boxes, (num, 4)), ("objs", objs, (num,)),
                               ("noise", noise, (num, self.z_dim + 1)), ("obj_to_img", obj_to_img, (num,))):
            if t is not None and tuple(t.shape) != shape:
                raise GraphError(f"layout sampler: {name} must have shape {shape}, got {tuple(t.shape)}")

    # -- sampling --------------------------------------------------------------------------------
    def forward(self, obj_vecs: torch.Tensor, triples: torch.Tensor, known: torch.Tensor | None = None,
                known_boxes: torch.Tensor | None = None, gt_boxes: torch.Tensor | None = None,
                objs: torch.Tensor | None = None, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, temperature: float = 1.0, placement: str = "sequential",
                obj_to_img: torch.Tensor | None = None) -> LayoutSample:
        """Decode one layout.

        ``known`` (O,) bool with ``known_boxes`` (O, 4): boxes kept exactly (None: none);
        ``objs`` (O,): ``__image__`` rows (index 0) are pinned to the whole image.

        Training (``gt_boxes`` given): the free objects' latents come from the posterior, and a
        second decode from prior draws fills ``prior_boxes`` for the relation loss.

        Sampling: ``noise`` (O, z_dim + 1) (:meth:`draw_noise`; drawn from ``generator`` when
        None) gives the latents ``mu + temperature * sigma * noise``. ``placement='sequential'``
        places the free objects one per graph at a time in the order of the noise's last column,
        each drawn given the boxes placed before it (as training pins random subsets), so later
        objects fit around earlier ones; ``'joint'`` draws them all at once. ``obj_to_img`` (O,)
        lets the graphs of a batch take their turns together (the result does not depend on it).
        """
        if placement not in ("sequential", "joint"):
            raise ConfigError(f"layout sampler: placement must be 'sequential' or 'joint', got {placement!r}")
        num, device = obj_vecs.shape[0], obj_vecs.device
        known = torch.zeros(num, dtype=torch.bool, device=device) if known is None else known
        known_boxes = obj_vecs.new_zeros(num, 4) if known_boxes is None else known_boxes
        self._check_inputs(obj_vecs, triples, known, known_boxes, gt_boxes, objs, noise, obj_to_img)
        known, known_boxes = known.to(device).bool(), known_boxes.to(device, obj_vecs.dtype)
        if objs is not None:
            is_image = objs.to(device) == IMAGE_OBJECT_INDEX
            known = known | is_image
            full = known_boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(num, 4)
            known_boxes = torch.where(is_image[:, None], full, known_boxes)
        if gt_boxes is not None:
            return self._training_sample(obj_vecs, triples, known, known_boxes, gt_boxes.to(device), generator,
                                         temperature)
        noise = self.draw_noise(num, generator, device) if noise is None else noise.to(device, obj_vecs.dtype)
        eps, order_key = noise[:, :self.z_dim], noise[:, self.z_dim]
        ctx = self.context(obj_vecs, triples, known, known_boxes)
        z, mu_p, logvar_p = self._draw(ctx, known, known_boxes, eps, temperature)
        if placement == "joint":
            boxes = self.decode_boxes(self.decode(ctx, z, triples), known, known_boxes)
        else:
            img = obj_to_img.to(device) if obj_to_img is not None else torch.zeros(num, dtype=torch.long, device=device)
            rank = placement_ranks(order_key, img, ~known)
            placed, boxes = known, known_boxes
            for turn in range(int(rank.max()) + 1 if rank.numel() else 0):
                if turn > 0:  # the first turn's context is the pinned boxes alone
                    ctx = self.context(obj_vecs, triples, placed, boxes)
                    z, _, _ = self._draw(ctx, placed, boxes, eps, temperature)
                now = rank == turn
                boxes = torch.where(now[:, None], self.decode_boxes(self.decode(ctx, z, triples), placed, boxes), boxes)
                placed = placed | now
        return LayoutSample(boxes, self.masks_for(obj_vecs, triples, boxes), known, z, mu_p, logvar_p)

    def _draw(self, ctx, placed, boxes, eps, temperature):
        """Latents: placed objects at their boxes' posterior means (as pinned ones in training),
        the others ``mu + temperature * sigma * eps`` from the prior; and the prior."""
        mu_p, logvar_p = self.prior(ctx)
        drawn = mu_p + temperature * (0.5 * logvar_p).exp() * eps
        if bool(placed.any()):
            drawn = torch.where(placed[:, None], self.posterior(ctx, boxes)[0], drawn)
        return drawn, mu_p, logvar_p

    def decode_boxes(self, vecs: torch.Tensor, known: torch.Tensor, known_boxes: torch.Tensor,
                     frozen: bool = False) -> torch.Tensor:
        """Boxes of the decoded vectors, with the known rows copied from ``known_boxes``."""
        boxes = boxes_from_params((frozen_call if frozen else _call)(self.head.box_net, vecs))
        return torch.where(known[:, None], known_boxes.to(boxes.dtype), boxes)

    def masks_for(self, obj_vecs: torch.Tensor, triples: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(O, M, M) mask logits of a finished layout: every box pinned, latents at their posterior
        means. A graph whose every box is given gets the same masks, so writing a sampled layout's
        boxes into the graph and generating from it reproduces the layout."""
        everything = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
        ctx = self.context(obj_vecs, triples, everything, boxes)
        _, mask_logits = self.head(self.decode(ctx, self.posterior(ctx, boxes)[0], triples))
        return mask_logits

    def _training_sample(self, obj_vecs, triples, known, known_boxes, gt_boxes, generator, temperature):
        target = torch.where(known[:, None], known_boxes, gt_boxes.to(known_boxes.dtype))
        ctx = self.context(obj_vecs, triples, known, known_boxes)
        mu_p, logvar_p = self.prior(ctx)
        mu_q, logvar_q = self.posterior(ctx, target)
        eps = standard_normal(mu_q.shape, generator, obj_vecs.device)
        z = torch.where(known[:, None], mu_q, mu_q + (0.5 * logvar_q).exp() * eps)
        boxes, mask_logits = self.head(self.decode(ctx, z, triples))
        boxes = torch.where(known[:, None], known_boxes.to(boxes.dtype), boxes)
        eps_prior = standard_normal(mu_p.shape, generator, obj_vecs.device)
        z_prior = torch.where(known[:, None], mu_q, mu_p + temperature * (0.5 * logvar_p).exp() * eps_prior)
        # The relation loss on these boxes trains the prior (and the context it reads) to draw
        # latents that keep the relations; the decoder stays a faithful latent-to-box map (letting
        # the relation loss into it teaches it to ignore the latents: the regression again).
        prior_boxes = self.decode_boxes(self.decode(ctx, z_prior, triples, frozen=True), known, known_boxes,
                                        frozen=True)
        return LayoutSample(boxes, mask_logits, known, z, mu_p, logvar_p, mu_q, logvar_q, prior_boxes)

    # -- training --------------------------------------------------------------------------------
    def losses(self, sample: LayoutSample, gt_boxes: torch.Tensor, triples: torch.Tensor,
               predicate_names: Sequence[str], gt_masks: torch.Tensor | None = None,
               objs: torch.Tensor | None = None, beta: float = 0.001, lambda_prior: float = 0.01,
               lambda_box: float = 1.0, lambda_relation: float = 1.0, lambda_mask: float = 1.0,
               margin: float = 0.02) -> dict:
        """Weighted training losses of a posterior ``sample`` (forward with ``gt_boxes``).

        ``box``: L1 of the free objects' boxes; ``layout_kl``: ``beta`` x KL(q || p) per object
        with the prior held fixed, and ``layout_prior``: ``lambda_prior`` x the same KL with the
        posterior held fixed. The split (DreamerV2's KL balancing) lets the posterior keep the
        boxes' information (a small ``beta``: the boxes are explained to about ``4 * beta`` of the
        image side) while the prior is pulled hard onto the posteriors it will stand in for; one
        weight for both collapses the latents to the regression. ``layout_relation``: mean relation
        hinge over the geometric triples of the prior-drawn boxes (judged on mask centroids, the
        mask held fixed); ``mask``: BCE with ``gt_masks``. ``objs`` (O,) drops ``__image__`` rows.
        """
        if sample.mu_q is None or sample.prior_boxes is None:
            raise ConfigError("layout sampler losses: the sample has no posterior; call forward with gt_boxes")
        keep = objs != IMAGE_OBJECT_INDEX if objs is not None else torch.ones_like(sample.known)
        free = keep & ~sample.known  # a pinned object's latent is never drawn from the prior
        out: dict[str, torch.Tensor] = {}
        if lambda_box > 0:
            out["box"] = lambda_box * box_loss(sample.boxes, gt_boxes, mask=free, kind="l1")
        mean = lambda per_object: (per_object * free).sum() / free.sum().clamp(min=1)  # noqa: E731
        q, p = (sample.mu_q.float(), sample.logvar_q.float()), (sample.mu_p.float(), sample.logvar_p.float())
        if beta > 0:
            out["layout_kl"] = beta * mean(gaussian_kl(*q, *(t.detach() for t in p), reduction="none"))
        if lambda_prior > 0:
            out["layout_prior"] = lambda_prior * mean(gaussian_kl(*(t.detach() for t in q), *p, reduction="none"))
        if lambda_relation > 0:
            fractions = mask_centre_fractions(torch.sigmoid(sample.mask_logits.detach().float()))
            hinge = relation_hinge(sample.prior_boxes.float(), triples, predicate_names, fractions, margin)
            counted = (predicate_kinds(triples, predicate_names) >= 0).sum()
            out["layout_relation"] = lambda_relation * hinge.sum() / counted.clamp(min=1)
        if gt_masks is not None and lambda_mask > 0:
            out["mask"] = lambda_mask * mask_loss(sample.mask_logits, gt_masks, mask=keep)
        return out


__all__ = ["LayoutSample", "LayoutSampler", "sample_known_mask", "placement_ranks", "box_features",
           "IMAGE_OBJECT_INDEX"]
