"""Per-class style clusters (pix2pixHD's feature clusters) fitted on a trained model's codes: on a
model in memory, or on a checkpoint folder, saved back (``layout2img fit-styles``)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batch import collate
from ..errors import ConfigError
from ..io import atomic_dir


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


def fit_checkpoint_styles(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, *,
                          config: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                          max_images: int = 2000, seed: int | None = None, batch_size: int = 32,
                          device: str = "auto", progress: bool = True) -> tuple[Path, dict]:
    """Fit the style clusters of ``checkpoint`` (a model or run folder) on the first ``max_images``
    of its run config's train split (``config`` / ``overrides`` as ``layout2img fit-styles`` takes
    them) and save the model to ``out`` (None: the checkpoint folder itself, rewritten atomically
    with its other files kept). Returns (the folder written, the fit's summary with
    ``seed`` and ``k`` added)."""
    from ..config import to_container
    from ..data.build import build_dataset
    from ..devices import resolve_device
    from ..pipeline import SceneGraphToImage
    from .runs import load_run_config, resolve_checkpoint

    if not isinstance(max_images, int) or max_images < 1:
        raise ConfigError(f"--max-images must be a positive integer, got {max_images!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    source = resolve_checkpoint(checkpoint).resolve()  # a `latest` link: write the folder it points at
    target = source if out is None else Path(out).resolve()
    if target != source and target.exists() and (not target.is_dir() or any(target.iterdir())) \
            and not (target / "config.json").is_file():
        raise ConfigError(f"--out {out}: exists and is not a checkpoint folder (give a new or empty folder)")
    model = SceneGraphToImage.from_pretrained(source, map_location=resolve_device(device))
    if model.style_clusters is None:
        raise ConfigError(f"{source}: this model has no style codes (style_dim 0): nothing to cluster")
    cfg, cfg_path = load_run_config(source, config, overrides)
    dataset = build_dataset(to_container(cfg.data), "train", seed=int(cfg.get("seed", 0)))
    if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names):
        raise ConfigError(f"{cfg_path}: the dataset's vocabulary ({dataset.vocab.name}, {dataset.vocab.num_objects} "
                          f"objects) is not the checkpoint's ({model.vocab.name}, {model.vocab.num_objects})")
    if getattr(dataset, "image_size", model.image_size) != model.image_size:
        raise ConfigError(f"{cfg_path}: the dataset makes {dataset.image_size} px images, the checkpoint "
                          f"{model.image_size} px (set data.image_size={model.image_size})")
    seed = int(cfg.get("seed", 0)) if seed is None else int(seed)
    summary = fit_style_clusters(model, dataset, max_images=max_images, batch_size=batch_size, seed=seed,
                                 progress=progress)
    summary.update(seed=seed, k=model.style_clusters.k)
    metadata = {**model.metadata, "style_clusters": dict(summary)}
    if target == source:
        save_in_place(model, source, metadata)
    else:
        model.save_pretrained(target, metadata=metadata)
    return target, summary


def save_in_place(model, folder: Path, metadata: dict) -> None:
    """Rewrite the model files of ``folder`` and keep the others (e.g. a training checkpoint's
    state): the new folder is built beside it and swapped in, so a crash leaves the old one."""
    with atomic_dir(folder, overwrite=True) as tmp:
        written = model.save_pretrained(tmp / "model", metadata=metadata)
        for path in written.iterdir():
            os.replace(path, tmp / path.name)
        written.rmdir()
        for path in folder.iterdir():
            if not (tmp / path.name).exists():
                if path.is_dir():
                    shutil.copytree(path, tmp / path.name, symlinks=True)
                else:
                    shutil.copy2(path, tmp / path.name, follow_symlinks=False)
