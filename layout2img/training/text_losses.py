"""The text terms of a generator step: the text style prior's fit and the optional CLIP loss."""
from __future__ import annotations

import torch

from ..config import LossConfig
from ..data.batch import Batch
from ..models.losses import gaussian_kl
from ..models.layout import crop_boxes
from ..models.text import CROP_MARGIN


def text_losses(encoder, out, fake: torch.Tensor, batch: Batch, texts, keep: torch.Tensor,
                weights: LossConfig) -> dict[str, torch.Tensor]:
    """``prior``: KL of the (detached) appearance-encoder posterior to the text style prior, on the
    objects with text (``weights.lambda_prior``); ``clip``: ``1 - cos`` between the fake image and
    its caption and between object crops and their descriptions under the frozen ``encoder``
    (``weights.lambda_clip``). A weight of 0 switches its term off."""
    losses: dict[str, torch.Tensor] = {}
    if (weights.lambda_prior > 0 and out.prior_mu is not None and out.style_mu is not None
            and bool(out.prior_mask.any())):
        rows = out.prior_mask
        losses["prior"] = weights.lambda_prior * gaussian_kl(out.style_mu[rows].detach().float(),
                                                             out.style_logvar[rows].detach().float(),
                                                             out.prior_mu[rows], out.prior_logvar[rows])
    if weights.lambda_clip > 0:
        terms = []
        if bool(texts.text_mask.any()):
            rows = texts.text_mask.nonzero().flatten()
            sim = (encoder.encode_image(fake[rows].float()) * texts.text_emb[rows]).sum(dim=1)
            terms.append(1 - sim)
        obj_rows = (texts.obj_text_mask & keep).nonzero().flatten()
        if obj_rows.numel() > 0:
            crops = crop_boxes(fake.float(), batch.boxes[obj_rows], batch.obj_to_img[obj_rows], encoder.image_size,
                               margin=CROP_MARGIN)
            sim = (encoder.encode_image(crops) * texts.obj_text_emb[obj_rows]).sum(dim=1)
            terms.append(1 - sim)
        if terms:
            losses["clip"] = weights.lambda_clip * torch.cat(terms).mean()
    return losses
