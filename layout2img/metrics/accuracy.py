"""Object accuracy (the field's classification accuracy score, CAS): a classifier of object crops.

``train_classifier`` trains :class:`ObjectClassifier` on *real* crops (roi_align at the
ground-truth boxes, things and stuff, ``__image__`` excluded) of a dataset's train split and
reports its accuracy on real crops of the val split. The evaluation applies it to crops of
generated images at the boxes they were generated from and reports real-crop accuracy beside
it: a generator whose objects look like their class scores close to the real figure.

A classifier is saved as a folder ``config.json`` + ``model.safetensors`` + ``vocab.json``
(written atomically); :func:`load_classifier` reads it back.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io import check_state, load_weights
from ..models.layout import crop_boxes
from ..vocab import Vocab

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ObjectClassifier(nn.Module):
    """A small VGG-style CNN for ``crop_size`` x ``crop_size`` object crops in [-1, 1].

    Four 3x3 convolutions with batch norm (widths ``width`` x 1, 2, 4, 8), each but the last
    followed by 2x2 max-pooling, then global average pooling and a linear layer over all
    ``num_classes`` vocabulary objects (index 0, ``__image__``, is never a target). 0.4M
    parameters and 0.02 GFLOPs per 32 px crop at width 32: it trains on a CPU in minutes.
    """

    def __init__(self, num_classes: int, crop_size: int = 32, width: int = 32):
        super().__init__()
        if crop_size < 8 or width < 1 or num_classes < 2:
            raise ConfigError(f"object classifier: bad size (crop_size={crop_size}, width={width}, "
                              f"num_classes={num_classes})")
        self.config = {"num_classes": int(num_classes), "crop_size": int(crop_size), "width": int(width)}
        self.crop_size = int(crop_size)
        w = int(width)
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2), _block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.features(crops).flatten(1))
        # __image__ is not a class an object crop can have
        return logits.index_fill(1, torch.tensor([0], device=logits.device), float("-inf"))


def batch_crops(batch, images: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops at the batch's ground-truth boxes of every object but ``__image__``, and their labels."""
    keep = batch.objs != 0
    crops = crop_boxes(images.float(), batch.boxes[keep], batch.obj_to_img[keep], size)
    return crops, batch.objs[keep]


class AccuracyCounter:
    """Top-1 (and top-5 when there are more than 10 classes) accuracy over many updates."""

    def __init__(self):
        self.correct1 = self.correct5 = self.total = 0
        self.num_classes = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if labels.numel() == 0:
            return
        self.num_classes = logits.shape[1]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        self.correct1 += int((top[:, 0] == labels).sum())
        self.correct5 += int((top == labels[:, None]).any(1).sum())
        self.total += int(labels.numel())

    def result(self) -> dict:
        if self.total == 0:
            return {"top1": float("nan"), "num_objects": 0}
        out = {"top1": self.correct1 / self.total, "num_objects": self.total}
        if self.num_classes - 1 > 10:
            out["top5"] = self.correct5 / self.total
        return out


# -- saving and loading ------------------------------------------------------------------------
def save_classifier(folder: str | Path, model: ObjectClassifier, vocab: Vocab, metadata: Mapping[str, Any]) -> Path:
    from safetensors.torch import save_file

    from ..io import atomic_dir, atomic_save, atomic_write_text

    folder = Path(folder)
    payload = {"model_class": "ObjectClassifier", **model.config, "metadata": dict(metadata)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(folder, overwrite=True) as tmp:
        atomic_write_text(tmp / CONFIG_FILE, json.dumps(payload, indent=1) + "\n")
        atomic_write_text(tmp / VOCAB_FILE, json.dumps(vocab.to_dict(), indent=1) + "\n")
        atomic_save(tmp / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    return folder


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ObjectClassifier, Vocab, dict]:
    """(classifier in eval mode, its vocabulary, its config.json) from a folder ``save_classifier`` wrote."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: not an object classifier (missing {name}); "
                                  "make one with `layout2img train-classifier`")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
        vocab = Vocab.from_dict(json.loads((folder / VOCAB_FILE).read_text("utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder}: unreadable classifier config ({e})") from None
    if config.get("model_class") != "ObjectClassifier":
        raise CheckpointError(f"{folder / CONFIG_FILE}: model_class is {config.get('model_class')!r}, "
                              "not ObjectClassifier")
    model = ObjectClassifier(config["num_classes"], config["crop_size"], config["width"])
    state = load_weights(folder / WEIGHTS_FILE)
    check_state(folder / WEIGHTS_FILE, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), vocab, config


# -- training ------------------------------------------------------------------------------------
def _batches(dataset, batch_size: int, seed: int, shuffle: bool) -> Iterator:
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
    counter = AccuracyCounter()
    model.eval()
    for batch in tqdm(_batches(Subset(dataset, range(n)), batch_size, 0, False), desc="val crops",
                      total=-(-n // batch_size), disable=not progress, dynamic_ncols=True):
        batch = batch.to(device)
        crops, labels = batch_crops(batch, batch.images, model.crop_size)
        counter.update(model(crops), labels)
    return counter.result()


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
    from .fid import check_device

    if steps < 1 or batch_size < 1:
        raise ConfigError(f"train-classifier: steps ({steps}) and batch size ({batch_size}) must be positive")
    dev = check_device(device)
    torch.manual_seed(seed)
    data_cfg = to_container(cfg.data)
    train_set = build_dataset(data_cfg, "train", seed=seed)
    val_set = build_dataset(data_cfg, "val", seed=seed) if data_cfg.get("val") is not None else None
    vocab = train_set.vocab
    model = ObjectClassifier(vocab.num_objects, crop_size, width).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    flip_rng = torch.Generator().manual_seed(seed + 1)
    t0, seen = time.perf_counter(), 0
    train_counter = AccuracyCounter()
    bar = tqdm(total=steps, desc="train-classifier", unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    data = _batches(train_set, batch_size, seed, True)
    try:
        for step in range(steps):
            batch = next(data).to(dev)
            crops, labels = batch_crops(batch, batch.images, crop_size)
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
                train_counter.update(logits.detach(), labels)
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
        "train_accuracy_last_fifth": train_counter.result().get("top1"),
        "val_accuracy": val.get("top1"), "val_top5": val.get("top5"), "val_objects": val.get("num_objects"),
        "crop": "roi_align at ground-truth boxes, things and stuff, __image__ excluded",
        "config_path": str(cfg.get("config_path", "")), "seconds": round(time.perf_counter() - t0, 1),
    }
    folder = save_classifier(out, model.cpu(), vocab, metadata)
    log(f"object classifier: val accuracy {val.get('top1', float('nan')):.4f} on {val.get('num_objects', 0)} "
        f"real crops; saved to {folder}")
    return folder, metadata
