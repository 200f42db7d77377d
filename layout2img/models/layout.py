"""From object vectors to a layout: boxes, masks, and the tensors the generator reads.

* :class:`LayoutPredictor` regresses a box and an M x M mask per object.
* :func:`boxes_to_masks_full` places each box-relative mask in image coordinates;
  :func:`mask_centroids` finds where each mask's mass sits in the image.
* :func:`compose` resolves overlaps (smaller boxes over larger ones, things over stuff) into
  per-object *visible* weights and a hard instance map.
* :func:`masks_to_layout` spreads one vector per object over its mask (sg2im's operation).
* :func:`~.layout_input.build_layout` (its own module) makes the generator's input from them.

Everything that takes boxes or masks is differentiable with respect to them (and to the
spread vectors), so a predicted layout can be trained through the image losses.

Geometry conventions: boxes ``[x0, y0, x1, y1]`` normalised to [0, 1], origin top-left; pixel
``j`` of a ``W``-wide image covers ``[j/W, (j+1)/W)``. A mask is box-relative: its ``M``
columns split ``[x0, x1]`` evenly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .losses import box_loss, mask_loss


# -- prediction ------------------------------------------------------------------------------
def boxes_from_params(params: torch.Tensor) -> torch.Tensor:
    """Map unconstrained (..., 4) to valid boxes ``0 < x0 < x1 < 1`` (same for y).

    Per axis, ``size = sigmoid(a)`` and ``x0 = (1 - size) * sigmoid(b)``, so ``x1 = x0 + size``
    never leaves the image. The map is smooth and onto every valid box, so an L1/MSE loss to
    ground-truth boxes has gradients everywhere (sg2im's final ReLU, which zeroed them for
    negative outputs, is gone; there is no clamping either).
    """
    pos_x, pos_y, size_x, size_y = params.unbind(-1)
    w, h = torch.sigmoid(size_x), torch.sigmoid(size_y)
    x0 = (1 - w) * torch.sigmoid(pos_x)
    y0 = (1 - h) * torch.sigmoid(pos_y)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=-1)


def _norm2d(kind: str, channels: int) -> nn.Module:
    makers = {"batch": nn.BatchNorm2d, "instance": lambda c: nn.InstanceNorm2d(c, affine=True), "none": nn.Identity}
    if kind not in makers:
        raise ConfigError(f"layout.mask_norm: unknown normalisation {kind!r} (batch, instance or none)")
    return makers[kind](channels)


class LayoutPredictor(nn.Module):
    """Box and mask regression from object vectors (sg2im's box_net and mask_net).

    Boxes: an MLP with a *linear* last layer producing 4 parameters, mapped to a valid box by
    :func:`boxes_from_params`. Masks: the vector as a 1x1 map, upsampled ×2 ``log2(M)`` times
    with conv-norm-ReLU blocks, then a 1x1 conv to mask logits.
    """

    def __init__(self, width: int, mask_size: int = 16, box_hidden: int = 512, mask_channels: int | None = None,
                 mask_norm: str = "batch"):
        super().__init__()
        if mask_size < 2 or mask_size & (mask_size - 1):
            raise ConfigError(f"layout.mask_size: must be a power of two >= 2, got {mask_size}")
        self.mask_size = mask_size
        mask_channels = mask_channels or width
        self.box_net = nn.Sequential(nn.Linear(width, box_hidden), nn.ReLU(inplace=True), nn.Linear(box_hidden, 4))
        layers: list[nn.Module] = []
        in_ch = width
        size = 1
        while size < mask_size:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(in_ch, mask_channels, 3, padding=1), _norm2d(mask_norm, mask_channels),
                       nn.ReLU(inplace=True)]
            in_ch, size = mask_channels, size * 2
        layers.append(nn.Conv2d(in_ch, 1, 1))
        self.mask_net = nn.Sequential(*layers)

    def forward(self, obj_vecs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obj_vecs (O, D) -> boxes (O, 4) valid and normalised, mask logits (O, M, M)."""
        boxes = boxes_from_params(self.box_net(obj_vecs))
        mask_logits = self.mask_net(obj_vecs[:, :, None, None]).squeeze(1)
        return boxes, mask_logits

    @staticmethod
    def losses(boxes_pred: torch.Tensor, mask_logits: torch.Tensor, gt_boxes: torch.Tensor,
               gt_masks: torch.Tensor | None, objs: torch.Tensor, lambda_box: float = 1.0,
               lambda_mask: float = 1.0) -> dict[str, torch.Tensor]:
        """Weighted ``box`` (smooth L1) and ``mask`` (BCE, with ``gt_masks``) losses of a forward
        pass over the objects but ``__image__`` (``objs`` 0); a weight of 0 drops its term."""
        keep, out = objs != 0, {}
        if lambda_box > 0:
            out["box"] = lambda_box * box_loss(boxes_pred[keep], gt_boxes[keep])
        if gt_masks is not None and lambda_mask > 0:
            out["mask"] = lambda_mask * mask_loss(mask_logits[keep], gt_masks[keep])
        return out


def _size_hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _snap(v: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Move pixel coordinates within ``tol`` of an integer onto it (identity gradient).

    Boxes are fractions of the image and not exact in float32 (``0.3 * 100`` gives
    30.000002); a box meant to sit on pixel boundaries should place its mask exactly.
    """
    r = torch.round(v)
    return torch.where((v - r).abs() < tol, v + (r - v).detach(), v)


def _unit_ramp(t: torch.Tensor) -> torch.Tensor:
    """``clamp(t, 0, 1)`` whose gradient is 1 on the half-open [0, 1) (not 0 at both kinks), so
    a box edge lying exactly on a pixel boundary still gets a gradient."""
    return torch.where((t >= 0) & (t < 1), t, t.detach().clamp(0, 1))


def _axis_coverage(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """(O,) interval ends in pixels -> (O, n): the fraction of each pixel inside the interval."""
    left = torch.arange(n, device=lo.device, dtype=lo.dtype)
    covered = _unit_ramp(hi[:, None] - left) - _unit_ramp(lo[:, None] - left)
    return torch.where((hi >= lo)[:, None], covered, torch.zeros_like(covered))  # an inverted box covers nothing


def _axis_grid(lo: torch.Tensor, hi: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """grid_sample coordinates (O, n) of pixel centres across an m-pixel mask spanning [lo, hi]."""
    centres = torch.arange(n, device=lo.device, dtype=lo.dtype) + 0.5
    # position in mask pixels (0..m), then [-1, 1] with align_corners=False; exact for boxes on
    # pixel boundaries whose size is a power-of-two multiple of m
    u = (centres[None, :] - lo[:, None]) / (hi - lo).clamp(min=1e-4)[:, None] * m
    return u * (2.0 / m) - 1


def boxes_to_masks_full(boxes: torch.Tensor, masks: torch.Tensor, H: int, W: int | None = None) -> torch.Tensor:
    """Each object's box-relative mask (O, M, M) placed in its box -> (O, H, W).

    The mask is resampled bilinearly at pixel centres (edge values extend to the box border,
    like ``F.interpolate``) and multiplied by the fraction of each pixel the box covers. A box
    whose edges fall on pixel boundaries therefore gives exactly the resized mask inside and
    exactly 0 outside; otherwise edge pixels are anti-aliased. Differentiable with respect to
    boxes and masks.
    """
    W = H if W is None else W
    num, mh, mw = masks.shape
    boxes = boxes.to(masks.dtype)
    x0, y0, x1, y1 = _snap(boxes[:, 0] * W), _snap(boxes[:, 1] * H), _snap(boxes[:, 2] * W), _snap(boxes[:, 3] * H)
    gx, gy = _axis_grid(x0, x1, W, mw), _axis_grid(y0, y1, H, mh)
    grid = torch.stack([gx[:, None, :].expand(num, H, W), gy[:, :, None].expand(num, H, W)], dim=3)
    sampled = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    coverage = _axis_coverage(y0, y1, H)[:, :, None] * _axis_coverage(x0, x1, W)[:, None, :]
    return sampled[:, 0] * coverage


def mask_centroids(boxes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(O, 2) centroid of each box-relative mask in image coordinates (the box centre if empty)."""
    boxes, masks = boxes.double(), masks.double()
    m = masks.shape[-1]
    cells = (torch.arange(m, dtype=torch.float64, device=masks.device) + 0.5) / m
    total = masks.sum((1, 2))
    fx = (masks.sum(1) * cells).sum(1) / total.clamp(min=1e-12)
    fy = (masks.sum(2) * cells).sum(1) / total.clamp(min=1e-12)
    fx, fy = (torch.where(total > 0, f, torch.full_like(f, 0.5)) for f in (fx, fy))
    return torch.stack([boxes[:, 0] + fx * (boxes[:, 2] - boxes[:, 0]),
                        boxes[:, 1] + fy * (boxes[:, 3] - boxes[:, 1])], 1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, obj_to_img: torch.Tensor, size,
               margin: float = 0.0) -> torch.Tensor:
    """(K, C, h, w) bilinear crops (``torchvision.ops.roi_align``) of normalised ``boxes`` (K, 4)
    from ``images`` (B, C, H, W), box k from image ``obj_to_img[k]``; each box first grown by
    ``margin`` of its size on every side (clipped to the image). ``size``: an int or (h, w).
    Differentiable with respect to the images; computed in the images' dtype."""
    from torchvision.ops import roi_align

    h, w = images.shape[-2:]
    b = boxes.to(device=images.device, dtype=torch.float32)
    if margin:
        grow = (b[:, 2:] - b[:, :2]) * margin
        b = torch.cat([b[:, :2] - grow, b[:, 2:] + grow], dim=1).clamp(0, 1)
    rois = torch.cat([obj_to_img.to(b)[:, None], b * b.new_tensor([w, h, w, h])], dim=1)
    return roi_align(images, rois.to(images.dtype), output_size=_size_hw(size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


def paint_order_key(boxes: torch.Tensor, objs: torch.Tensor | None = None,
                    stuff_classes: torch.Tensor | None = None) -> torch.Tensor:
    """(O,) depth: objects with a larger key are painted first (further back).

    Larger boxes go under smaller ones; with ``stuff_classes`` (bool per class) every stuff
    object goes under every thing.
    """
    area = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).detach()
    if stuff_classes is not None and objs is not None:
        area = area + 2.0 * stuff_classes.to(area.device)[objs].to(area.dtype)
    return area


@dataclass
class LayoutGeometry:
    """Who is visible where. ``weights`` (O, H, W): each object's visible share of each pixel
    (its placed mask times the transparency of everything painted over it; 0 for skipped
    objects). ``instances`` (B, H, W) long: 1 + the batch-global index of the topmost object
    whose placed mask exceeds 0.5, or 0 where there is none."""

    weights: torch.Tensor
    instances: torch.Tensor
    obj_to_img: torch.Tensor
    num_images: int
    slots: torch.Tensor  # (O,) each object's position in its image's dense stack (-1: skipped)
    num_slots: int

    def spread(self, vecs: torch.Tensor) -> torch.Tensor:
        """Per-object vectors (O, D) -> (B, D, H, W): each pixel gets the visible-weighted sum."""
        return _spread(vecs, self.weights, self.obj_to_img, self.slots, self.num_images, self.num_slots)


def _slots(order_key: torch.Tensor, obj_to_img: torch.Tensor, keep: torch.Tensor, num_images: int):
    """Give each kept object a slot in its image: slot 0 is painted first (largest key)."""
    num = order_key.shape[0]
    idx = torch.arange(num, device=order_key.device)
    # Stable sorts: by key descending, then by image; ties keep object order (later on top).
    by_key = torch.sort(-order_key, stable=True).indices
    img_sorted = obj_to_img[by_key] + torch.where(keep[by_key], 0, num_images)  # skipped ones sort last
    by_img = torch.sort(img_sorted, stable=True).indices
    order = by_key[by_img]
    img_of = img_sorted[by_img]
    counts = torch.bincount(img_of, minlength=2 * num_images)
    starts = torch.cumsum(counts, 0) - counts
    slot_sorted = idx - starts[img_of]
    slots = torch.empty_like(slot_sorted)
    slots[order] = slot_sorted
    slots = torch.where(keep, slots, torch.full_like(slots, -1))
    num_slots = int(counts[:num_images].max().item()) if num_images and num else 0
    return slots, num_slots


def _to_dense(values: torch.Tensor, obj_to_img: torch.Tensor, slots: torch.Tensor, num_images: int,
              num_slots: int) -> torch.Tensor:
    """(O, ...) -> (B, K, ...) with skipped objects dropped and empty slots zero."""
    keep = slots >= 0
    dense = values.new_zeros((num_images, max(num_slots, 1)) + tuple(values.shape[1:]))
    return dense.index_put((obj_to_img[keep], slots[keep]), values[keep])


def _spread(vecs, weights, obj_to_img, slots, num_images, num_slots):
    H, W = weights.shape[-2:]
    if num_slots == 0:
        return vecs.new_zeros(num_images, vecs.shape[1], H, W)
    dense_w = _to_dense(weights, obj_to_img, slots, num_images, num_slots).flatten(2)  # (B, K, HW)
    dense_v = _to_dense(vecs.to(weights.dtype), obj_to_img, slots, num_images, num_slots)  # (B, K, D)
    return torch.bmm(dense_v.transpose(1, 2), dense_w).view(num_images, -1, H, W)


def compose(boxes: torch.Tensor, masks: torch.Tensor, obj_to_img: torch.Tensor, num_images: int, size,
            objs: torch.Tensor | None = None, stuff_classes: torch.Tensor | None = None,
            skip: torch.Tensor | None = None, pooling: str = "over") -> LayoutGeometry:
    """Place masks (probabilities, (O, M, M)) in boxes and resolve overlaps.

    ``pooling='over'``: painter's algorithm in :func:`paint_order_key` order with soft alpha
    (for binary masks every pixel belongs to one object, like a pix2pixHD label map);
    ``'sum'``: every object contributes its whole placed mask (sg2im's ``masks_to_layout``).
    ``skip`` (O,) bool: objects left out entirely (the pipeline skips ``__image__``).
    """
    if pooling not in ("over", "sum"):
        raise ConfigError(f"layout pooling: unknown mode {pooling!r} (over or sum)")
    H, W = _size_hw(size)
    alpha = boxes_to_masks_full(boxes, masks, H, W)
    keep = torch.ones_like(obj_to_img, dtype=torch.bool) if skip is None else ~skip.to(torch.bool)
    slots, num_slots = _slots(paint_order_key(boxes, objs, stuff_classes), obj_to_img, keep, num_images)
    alpha = alpha * keep[:, None, None].to(alpha.dtype)
    if num_slots == 0:
        return LayoutGeometry(alpha, torch.zeros(num_images, H, W, dtype=torch.long, device=alpha.device),
                              obj_to_img, num_images, slots, 0)
    dense_alpha = _to_dense(alpha, obj_to_img, slots, num_images, num_slots)  # (B, K, H, W), K-1 on top
    if pooling == "over":
        # Transparency of everything above slot k: prod_{j>k} (1 - alpha_j) (exclusive, reversed).
        through = torch.flip(torch.cumprod(torch.flip(1 - dense_alpha, [1]), dim=1), [1])
        above = torch.cat([through[:, 1:], torch.ones_like(through[:, :1])], dim=1)
        dense_weights = dense_alpha * above
        kept = slots >= 0
        weights = torch.zeros_like(alpha)
        weights[kept] = dense_weights[obj_to_img[kept], slots[kept]]
    else:
        weights = alpha
    # Hard instance map: topmost object whose placed mask exceeds 0.5.
    with torch.no_grad():
        slot_ids = torch.arange(1, dense_alpha.shape[1] + 1, device=alpha.device)[None, :, None, None]
        top = ((dense_alpha > 0.5) * slot_ids).amax(dim=1)  # (B, H, W): 0 or slot + 1
        table = torch.zeros(num_images, dense_alpha.shape[1] + 1, dtype=torch.long, device=alpha.device)
        kept = slots >= 0
        table[obj_to_img[kept], slots[kept] + 1] = torch.nonzero(kept).flatten() + 1
        instances = torch.gather(table, 1, top.flatten(1)).view(num_images, H, W)
    return LayoutGeometry(weights, instances, obj_to_img, num_images, slots, num_slots)


def masks_to_layout(vecs: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, obj_to_img: torch.Tensor,
                    num_images: int, H: int, W: int | None = None, pooling: str = "sum",
                    objs: torch.Tensor | None = None, stuff_classes: torch.Tensor | None = None) -> torch.Tensor:
    """Spread each object's vector over its mask placed in its box: (O, D) -> (B, D, H, W).

    ``pooling='sum'`` adds overlapping objects (sg2im); ``'over'`` lets smaller boxes occlude
    larger ones (see :func:`compose`). Differentiable w.r.t. vecs, boxes and masks.
    """
    W = H if W is None else W
    geometry = compose(boxes, masks, obj_to_img, num_images, (H, W), objs=objs, stuff_classes=stuff_classes,
                       pooling=pooling)
    return geometry.spread(vecs)


def instance_edges(instances: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's boundary map: 1 where a pixel differs from one of its 4 neighbours.

    instances (B, H, W) integer -> (B, 1, H, W) float. Both pixels on either side of a
    boundary are marked, and the image border is not a boundary.
    """
    edge = torch.zeros(instances.shape, dtype=torch.bool, device=instances.device)
    dx = instances[:, :, 1:] != instances[:, :, :-1]
    dy = instances[:, 1:, :] != instances[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge.unsqueeze(1).float()
