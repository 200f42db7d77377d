"""Instance-wise appearance encoder (style codes per object) and per-class style clusters.

pix2pixHD's feature encoder runs an encoder-decoder over the real image and averages its output
over each instance, so every object gets one low-dimensional appearance code that the generator
reads from the layout's style channels. We keep that and add a VAE head: the pooled features go to
``mu`` and ``logvar`` and the codes are trained with a KL term towards N(0, I) (``losses.kl_loss``),
so sampling N(0, I) at inference gives plausible appearances. pix2pixHD's alternative - k-means
of the codes of each class after training - is :class:`StyleClusters`; choosing another centre
for one object restyles just that object.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import conv_block, upsample_block
from .normalization import conv2d, init_weights


class AppearanceEncoder(nn.Module):
    """images (B, 3, H, W), instance_masks (O, H, W), obj_to_img (O,) -> mu, logvar (O, style_dim).

    ``instance_masks`` are full-image soft masks in [0, 1] (resized to the image if they differ);
    each object's code pools the decoder's feature map weighted by its mask. Objects whose mask is
    empty get ``mu = logvar = 0`` (the prior), so they cost nothing in the KL term.
    """

    def __init__(self, in_channels: int = 3, style_dim: int = 8, nef: int = 16, n_downsample: int = 3,
                 norm: str = "instance", padding: str = "reflect"):
        super().__init__()
        self.style_dim = style_dim
        self.stem = conv_block(in_channels, nef, 7, 1, norm, padding)
        self.down = nn.Sequential(*[
            conv_block(nef * 2 ** i, nef * 2 ** (i + 1), 3, 2, norm, padding) for i in range(n_downsample)
        ])
        self.up = nn.Sequential(*[
            upsample_block(nef * 2 ** (i + 1), nef * 2 ** i, norm, padding, "nearest")
            for i in reversed(range(n_downsample))
        ])
        self.out = conv2d(nef, nef, 3, padding=padding)
        self.to_mu = nn.Linear(nef, style_dim)
        self.to_logvar = nn.Linear(nef, style_dim)
        init_weights(self)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, nef, H, W) full-resolution appearance features."""
        return F.leaky_relu(self.out(self.up(self.down(self.stem(images)))), 0.2)

    def forward(self, images: torch.Tensor, instance_masks: torch.Tensor, obj_to_img: torch.Tensor):
        if instance_masks.dim() != 3 or instance_masks.shape[0] != obj_to_img.shape[0]:
            raise ConfigError(
                f"AppearanceEncoder: instance_masks must be (O, H, W) with O={obj_to_img.shape[0]} objects, "
                f"got {tuple(instance_masks.shape)}")
        feats = self.feature_map(images)
        masks = instance_masks.to(feats.dtype)
        if masks.shape[-2:] != feats.shape[-2:]:
            masks = F.interpolate(masks[:, None], size=feats.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        # masked average of each object's own image's features: (O, C)
        weighted = (feats[obj_to_img] * masks[:, None]).sum(dim=(2, 3))
        area = masks.sum(dim=(1, 2))
        pooled = weighted / area.clamp_min(1e-6)[:, None]
        present = (area > 0)[:, None]
        mu = torch.where(present, self.to_mu(pooled), torch.zeros((), dtype=pooled.dtype, device=pooled.device))
        logvar = torch.where(present, self.to_logvar(pooled),
                             torch.zeros((), dtype=pooled.dtype, device=pooled.device))
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        """``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (from ``generator`` if given)."""
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                          device=generator.device if generator is not None else mu.device).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps


class StyleClusters(nn.Module):
    """Per-class k-means centres of style codes, fitted after training (pix2pixHD's feature clusters).

    All state lives in buffers (``centres`` (num_classes, k, S), ``counts`` (num_classes,) = number
    of valid centres of each class, ``shares`` (num_classes, k) = each centre's share of its class's
    codes, ``is_fitted``), so it is saved and loaded with the model. :meth:`sample` draws a centre
    with its share, so sampled appearances follow the data's frequencies (a class whose shares are
    all zero, as in checkpoints from before shares, draws its centres uniformly).
    """

    def __init__(self, num_classes: int, style_dim: int, k: int = 10):
        super().__init__()
        if num_classes < 1 or style_dim < 1 or k < 1:
            raise ConfigError(f"StyleClusters: invalid num_classes={num_classes} style_dim={style_dim} k={k}")
        self.num_classes, self.style_dim, self.k = num_classes, style_dim, k
        self.register_buffer("centres", torch.zeros(num_classes, k, style_dim))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("shares", torch.zeros(num_classes, k))
        self.register_buffer("is_fitted", torch.zeros((), dtype=torch.bool))

    @property
    def fitted(self) -> bool:
        return bool(self.is_fitted)

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, classes: torch.Tensor, iters: int = 20,
            generator: torch.Generator | None = None) -> "StyleClusters":
        """k-means (k-means++ seeding, Lloyd iterations) of ``codes`` (N, S) separately per class (N,).

        Deterministic for a given ``generator`` (the work runs on its device, CPU by default); a class
        with fewer distinct codes than ``k`` gets fewer centres; classes absent from ``classes`` none.
        """
        if codes.dim() != 2 or codes.shape[1] != self.style_dim or classes.shape != codes.shape[:1]:
            raise ConfigError(
                f"StyleClusters.fit: codes must be (N, {self.style_dim}) and classes (N,), "
                f"got {tuple(codes.shape)} and {tuple(classes.shape)}")
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ConfigError(f"StyleClusters.fit: class indices must lie in [0, {self.num_classes})")
        rng_device = generator.device if generator is not None else torch.device("cpu")
        codes = codes.detach().float().to(rng_device)
        classes = classes.detach().long().to(rng_device)
        centres = torch.zeros_like(self.centres, device=rng_device)
        counts = torch.zeros_like(self.counts, device=rng_device)
        shares = torch.zeros_like(self.shares, device=rng_device)
        for c in torch.unique(classes).tolist():
            x = codes[classes == c]
            found = _kmeans(x, self.k, iters, generator)
            centres[c, : len(found)] = found
            counts[c] = len(found)
            nearest = torch.cdist(x, found).argmin(dim=1)
            shares[c, : len(found)] = torch.bincount(nearest, minlength=len(found)).float() / len(x)
        self.centres.copy_(centres)
        self.counts.copy_(counts)
        self.shares.copy_(shares)
        self.is_fitted.fill_(True)
        return self

    @torch.no_grad()
    def sample(self, classes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(O,) class indices -> (O, S) codes: a centre of the class drawn with its share, N(0, I)
        for a class with none.

        Both draws are always made, so the random stream consumed does not depend on the classes.
        """
        device = self.centres.device
        rng_device = generator.device if generator is not None else device
        classes = classes.to(device).long()
        n = self.counts[classes]
        u = torch.rand(classes.shape, generator=generator, device=rng_device).to(device)
        valid = (torch.arange(self.k, device=device)[None, :] < n[:, None]).float()
        shares = self.shares[classes] * valid
        weights = torch.where(shares.sum(1, keepdim=True) > 0, shares, valid)  # no shares: uniform
        cdf = weights.cumsum(1) / weights.sum(1, keepdim=True).clamp_min(1e-12)
        pick = (cdf < u[:, None]).sum(1)
        pick = torch.minimum(pick, (n - 1).clamp_min(0))
        from_clusters = self.centres[classes, pick]
        prior = torch.randn(classes.shape + (self.style_dim,), generator=generator, device=rng_device).to(device)
        return torch.where((n > 0)[:, None], from_clusters, prior)

    def centre(self, class_index: int, cluster_index: int) -> torch.Tensor:
        """One centre (S,), e.g. to restyle one object with a chosen cluster."""
        if not 0 <= cluster_index < int(self.counts[class_index]):
            raise ConfigError(
                f"StyleClusters: class {class_index} has {int(self.counts[class_index])} clusters, "
                f"no cluster {cluster_index}")
        return self.centres[class_index, cluster_index]


def _kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeding then Lloyd; returns (k', S) with k' <= k (fewer when points coincide)."""
    first = torch.randint(len(x), (1,), generator=generator, device=x.device)
    centres = x[first]
    while len(centres) < k:
        d2 = torch.cdist(x, centres).pow(2).min(dim=1).values
        if float(d2.sum()) <= 0:  # every point already is a centre
            break
        nxt = torch.multinomial(d2, 1, generator=generator)
        centres = torch.cat([centres, x[nxt]])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        sizes = torch.bincount(assign, minlength=len(centres)).to(x.dtype)[:, None]
        # an emptied cluster keeps its previous centre
        updated = torch.where(sizes > 0, sums / sizes.clamp_min(1), centres)
        if torch.equal(updated, centres):
            break
        centres = updated
    return centres
