"""TextStylePrior: p(style code | object, text), the learned prior that draws "a green circle" green."""
from __future__ import annotations

import torch
from torch import nn


class TextStylePrior(nn.Module):
    """p(style code | object, text): a Gaussian per object from its class, its graph vector, its
    image's caption and its own description.

    Trained by the KL of the (detached) appearance-encoder posterior to it, so it learns which
    codes make "a green circle" green; at generation objects with text draw their codes from it
    instead of N(0, I). The last layer starts at zero: an untrained prior *is* N(0, I).
    """

    def __init__(self, num_objects: int, width: int, text_dim: int, style_dim: int, hidden: int = 256,
                 class_dim: int = 32):
        super().__init__()
        self.text_dim, self.style_dim = text_dim, style_dim
        self.class_embedding = nn.Embedding(num_objects, class_dim)
        self.net = nn.Sequential(nn.Linear(class_dim + width + 2 * text_dim + 2, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * style_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, objs: torch.Tensor, obj_vecs: torch.Tensor, caption_emb: torch.Tensor,
                caption_mask: torch.Tensor, desc_emb: torch.Tensor, desc_mask: torch.Tensor):
        """(O,) classes, (O, width), (O, D) caption of each object's image, (O,) bool, (O, D), (O,) bool
        -> mu, logvar (O, style_dim)."""
        dtype = obj_vecs.dtype
        cm, dm = caption_mask.to(torch.bool)[:, None], desc_mask.to(torch.bool)[:, None]
        # where() rather than a product: a row without text may hold anything (even NaN)
        cap = torch.where(cm, caption_emb.to(dtype), caption_emb.new_zeros((), dtype=dtype))
        desc = torch.where(dm, desc_emb.to(dtype), desc_emb.new_zeros((), dtype=dtype))
        h = torch.cat([self.class_embedding(objs).to(dtype), obj_vecs, cap, desc, cm.to(dtype), dm.to(dtype)], dim=1)
        mu, logvar = self.net(h).float().chunk(2, dim=1)
        return mu, logvar.clamp(-8.0, 4.0)
