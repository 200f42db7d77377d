"""Training the object classifier that the object-accuracy metric uses.

``train_classifier`` trains :class:`~layout2img.models.classifier.ObjectClassifier` on *real*
crops (roi_align at the ground-truth boxes, things and stuff, ``__image__`` excluded) of a
dataset's train split, reports its accuracy on real crops of the val split, and saves it as a
folder (``config.json`` + ``model.safetensors`` + ``vocab.json``) that
``ObjectClassifier.from_pretrained`` reads back.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..errors import ConfigError
from ..metrics.accuracy import ObjectAccuracy, TopKAccuracy
from ..models.classifier import ObjectClassifier, object_crops


def dataset_batches(dataset, batch_size: int, seed: int, shuffle: bool) -> Iterator:
    """Collated batches of ``dataset``: one pass in order, or shuffled epochs without end."""
    from torch.utils.data import DataLoader

    from ..data.batch import collate

    g = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g,
                            num_workers=0)
        yield from loader
        if not shuffle:
            return
        epoch += 1


@torch.no_grad()
def real_crop_accuracy(model: ObjectClassifier, dataset, batch_size: int = 32, max_images: int | None = None,
                       device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """The classifier's accuracy on real crops at the ground-truth boxes of ``dataset``."""
    from torch.utils.data import Subset
    from tqdm.auto import tqdm

    n = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    accuracy = ObjectAccuracy(model)
    model.eval()
    for batch in tqdm(dataset_batches(Subset(dataset, range(n)), batch_size, 0, False), desc="val crops",
                      total=-(-n // batch_size), disable=not progress, dynamic_ncols=True):
        batch = batch.to(device)
        accuracy.update(batch.images, batch.boxes, batch.obj_to_img, batch.objs)
    return accuracy.compute()


def train_classifier(cfg, out: str | os.PathLike, steps: int = 300, batch_size: int = 8, crop_size: int = 32,
                     width: int = 32, lr: float = 2e-3, seed: int = 0, device: str = "auto",
                     max_val_images: int | None = None, progress: bool = True, log=print) -> tuple[Path, dict]:
    """Train an :class:`ObjectClassifier` on the real crops of ``cfg.data``'s train split and save it.

    ``cfg`` is a run config (see :func:`layout2img.config.load_config`). Adam with a cosine
    schedule, horizontal flips. Returns (folder, metadata incl. ``val_accuracy``).
    """
    from tqdm.auto import tqdm

    from ..config import to_container
    from ..data.build import build_dataset

    if steps < 1 or batch_size < 1:
        raise ConfigError(f"train-classifier: steps ({steps}) and batch size ({batch_size}) must be positive")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    data_cfg = to_container(cfg.data)
    train_set = build_dataset(data_cfg, "train", seed=seed)
    val_set = build_dataset(data_cfg, "val", seed=seed) if data_cfg.get("val") is not None else None
    vocab = train_set.vocab
    model = ObjectClassifier(vocab.num_objects, crop_size, width, vocab=vocab).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    flip_rng = torch.Generator().manual_seed(seed + 1)
    t0, seen = time.perf_counter(), 0
    train_accuracy = TopKAccuracy()
    bar = tqdm(total=steps, desc="train-classifier", unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    data = dataset_batches(train_set, batch_size, seed, True)
    try:
        for step in range(steps):
            batch = next(data).to(dev)
            crops, labels = object_crops(batch.images, batch.boxes, batch.obj_to_img, batch.objs, crop_size)
            flip = torch.rand(crops.shape[0], generator=flip_rng) < 0.5
            crops = torch.where(flip.to(dev)[:, None, None, None], crops.flip(-1), crops)
            logits = model(crops)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += int(labels.numel())
            if step >= steps - max(1, steps // 5):  # training accuracy over the last fifth
                train_accuracy.update(logits.detach(), labels)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", crops_s=f"{seen / (time.perf_counter() - t0):.0f}",
                            refresh=False)
    finally:
        bar.close()
    model.eval()
    val = (real_crop_accuracy(model, val_set, batch_size, max_val_images, dev, progress)
           if val_set is not None else {"top1": float("nan"), "num_objects": 0})
    metadata = {
        "dataset": str(data_cfg.get("dataset")), "train_split": "train", "val_split": "val",
        "steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed),
        "train_accuracy_last_fifth": train_accuracy.compute().get("top1"),
        "val_accuracy": val.get("top1"), "val_top5": val.get("top5"), "val_objects": val.get("num_objects"),
        "crop": "roi_align at ground-truth boxes, things and stuff, __image__ excluded",
        "config_path": str(cfg.get("config_path", "")), "seconds": round(time.perf_counter() - t0, 1),
    }
    model.metadata = metadata
    folder = model.cpu().save_pretrained(out, metadata)
    log(f"object classifier: val accuracy {val.get('top1', float('nan')):.4f} on {val.get('num_objects', 0)} "
        f"real crops; saved to {folder}")
    return folder, metadata
