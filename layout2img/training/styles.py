"""Per-class style clusters (pix2pixHD's feature clusters) fitted on a trained model's codes."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batch import collate
from ..errors import ConfigError


@torch.no_grad()
def fit_style_clusters(model, dataset, max_images: int | None = 2000, batch_size: int = 32, seed: int = 0,
                       progress: bool = True) -> dict:
    """Encode the objects of up to ``max_images`` images of ``dataset`` (ground-truth layouts, the
    appearance encoder's mean codes), k-means them per class into ``model.style_clusters`` (k from
    the model's config) and return a summary ``{"images", "objects", "classes"}``. The first
    ``max_images`` in dataset order are used, so the result is deterministic for a given seed."""
    if model.encoder is None or model.style_clusters is None:
        raise ConfigError("fit-styles: this model has no style codes (style_dim=0): nothing to cluster")
    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n < 1:
        raise ConfigError("fit-styles: the dataset is empty")
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    was_training = model.training
    model.eval()
    codes, classes = [], []
    try:
        for batch in tqdm(loader, desc="fit-styles", unit="batch", disable=not progress or None, leave=False):
            batch = batch.to(model.device)
            out = model(batch, layout_source="gt", style_source="encode")
            keep = batch.objs != 0
            codes.append(out.style_mu[keep].float().cpu())
            classes.append(batch.objs[keep].cpu())
    finally:
        model.train(was_training)
    codes_t, classes_t = torch.cat(codes), torch.cat(classes)
    model.style_clusters.fit(codes_t, classes_t, generator=torch.Generator().manual_seed(int(seed)))
    return {"images": n, "objects": int(codes_t.shape[0]), "classes": int(torch.unique(classes_t).numel())}
