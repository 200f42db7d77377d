"""Training the projected discriminator's frozen encoder (:class:`~layout2img.models.segmenter.SceneSegmenter`).

The segmenter learns, on *real* train images only, to label every pixel with its class in the
ground-truth layout (``labels_of``: the trainer's composed label map, occlusion resolved as the
generator's layout is); unlabelled pixels (class 0) are ignored. With ``low_res`` set, every other
batch is shrunk to that size (antialiased, labels by nearest), so the features are meaningful at the
sizes the GAN trains at. Deterministic for a seed, and the global RNG is left as it was.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..models.losses import label_map
from ..models.segmenter import SceneSegmenter
from .classifier import dataset_batches
from .schedule import shrink

#: ``labels_of(batch, size) -> (B, size, size)`` class ids of the batch's ground-truth layouts
LabelsOf = Callable[[object, int], torch.Tensor]


def gt_label_map(model, batch, size: int) -> torch.Tensor:
    """(B, size, size) classes of ``batch``'s ground-truth layouts, composed by ``model``
    (a :class:`~layout2img.pipeline.SceneGraphToImage`) as its generator's layouts are."""
    masks = batch.masks
    if masks is None:  # boxes only (e.g. Visual Genome): each object fills its box
        masks = torch.ones(batch.objs.shape[0], 16, 16, device=batch.boxes.device)
    with torch.no_grad():
        geometry = model.layout_stage.compose(batch, batch.boxes.float(), masks.float(), model.stuff_classes,
                                              size=size)
    return label_map(geometry.instances, batch.objs)


def train_segmenter(segmenter: SceneSegmenter, dataset, labels_of: LabelsOf, steps: int, batch_size: int,
                    lr: float, seed: int, image_size: int, low_res: int | None = None,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Train ``segmenter`` in place for ``steps`` Adam steps; returns its pixel accuracy on the last
    batches (labelled pixels, 20 batches or fewer), the last loss and the wall seconds."""
    t0 = time.perf_counter()
    segmenter.unfreeze().train()
    opt = torch.optim.Adam(segmenter.parameters(), lr=lr)
    batches = dataset_batches(dataset, batch_size, seed, shuffle=True)
    correct = total = 0
    loss = torch.zeros(())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            batch = next(batches).to(device)
            size = low_res if low_res and step % 2 else image_size
            images = batch.images if size == image_size else shrink(batch.images, (size, size))
            labels = labels_of(batch, size)
            logits = segmenter(images)
            loss = F.cross_entropy(logits, labels, ignore_index=0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= steps - 20:
                known = labels > 0
                correct += int((logits.argmax(1)[known] == labels[known]).sum())
                total += int(known.sum())
    segmenter.freeze()
    return {"pixel_accuracy": correct / max(total, 1), "loss": float(loss.detach()),
            "seconds": time.perf_counter() - t0}
