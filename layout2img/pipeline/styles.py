"""Appearance codes: encoded from an image, or drawn without one (N(0, I) or the fitted per-class
style clusters, the objects with text following the text style prior instead)."""
from __future__ import annotations

import torch

from ..errors import ConfigError, DataError
from ..models.encoder import AppearanceEncoder, StyleClusters
from ..models.layout import LayoutGeometry


def draw_style_codes(source: str, objs: torch.Tensor, style_dim: int, clusters: StyleClusters | None,
                     generator: torch.Generator | None, device: torch.device, prior_mu: torch.Tensor | None = None,
                     prior_logvar: torch.Tensor | None = None, prior_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(O, style_dim) codes for ``objs``: ``source`` ``'sample'`` (N(0, I)) or ``'cluster'`` (the
    clusters' centres drawn by their share). Rows ``prior_mask`` marks are drawn from
    N(prior_mu, exp(prior_logvar)) - for ``'sample'`` the same draws, scaled and shifted."""
    rng_device = generator.device if generator is not None else device
    if source == "sample":
        codes = torch.randn((objs.shape[0], style_dim), generator=generator, device=rng_device).to(device)
        if prior_mask is not None:
            codes = torch.where(prior_mask[:, None], prior_mu + torch.exp(0.5 * prior_logvar) * codes, codes)
        return codes
    if not clusters.fitted:
        raise ConfigError("style_source='cluster': the style clusters are not fitted (run "
                          "`layout2img fit-styles --checkpoint DIR`, or train with train.fit_styles > 0)")
    codes = clusters.sample(objs, generator)
    if prior_mask is not None and bool(prior_mask.any()):
        eps = torch.randn(codes.shape, generator=generator, device=rng_device).to(codes.device)
        codes = torch.where(prior_mask[:, None], prior_mu + torch.exp(0.5 * prior_logvar) * eps, codes.float())
    return codes


def encode_style_codes(encoder: AppearanceEncoder, images: torch.Tensor | None, geometry: LayoutGeometry,
                       obj_to_img: torch.Tensor, size: int, generator: torch.Generator | None = None):
    """``(mu, logvar, codes)`` of each object: the appearance encoder's posterior of ``images``
    pooled over ``geometry``'s object weights, and a reparameterised draw from it."""
    if images is None:
        raise DataError("style_source='encode' needs batch.images (use 'sample' or 'cluster')")
    if tuple(images.shape[-2:]) != (size, size):
        raise DataError(f"batch.images are {tuple(images.shape[-2:])}, the model makes {size}x{size}")
    mu, logvar = encoder(images, geometry.weights, obj_to_img)
    return mu, logvar, AppearanceEncoder.reparameterize(mu, logvar, generator)
