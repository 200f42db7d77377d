"""Packed batches of scene graphs (sg2im's ``objs, triples, obj_to_img`` form).

An *item* is what a dataset's ``__getitem__`` or ``SceneGraph.to_item`` returns: a dict with

=================  =========================================================================
``objs``           LongTensor (O,) vocabulary indices; the last object is ``__image__``
``triples``        LongTensor (T, 3) ``[subject, predicate, object]`` with item-local indices;
                   ends with one ``__in_image__`` triple per real object
``boxes``          FloatTensor (O, 4) normalised ``[x0, y0, x1, y1]``, or absent/None
``masks``          FloatTensor (O, M, M) box-relative masks in {0, 1}, or absent/None
``image``          FloatTensor (3, S, S) in [-1, 1], or absent/None
``caption``        str or None
``descriptions``   list of O (str or None): free text per object
``image_id``       anything hashable, or absent
=================  =========================================================================

``collate`` packs a list of items into a :class:`Batch`; object and triple indices become
batch-global and ``obj_to_img`` / ``triple_to_img`` say which image each belongs to.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch

from ..errors import DataError


@dataclass
class Batch:
    objs: torch.Tensor  # (O,) long
    triples: torch.Tensor  # (T, 3) long, batch-global object indices
    obj_to_img: torch.Tensor  # (O,) long
    triple_to_img: torch.Tensor  # (T,) long
    boxes: torch.Tensor  # (O, 4) float; zeros where unknown
    boxes_known: torch.Tensor  # (O,) bool: the item gave this box (dataset or user)
    masks: torch.Tensor | None  # (O, M, M) float or None
    images: torch.Tensor | None  # (B, 3, S, S) in [-1, 1] or None
    captions: list[str | None]
    descriptions: list[str | None]  # one per object
    image_ids: list[Any]

    @property
    def num_images(self) -> int:
        return len(self.captions)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return replace(self, **moved)

    def pin_memory(self) -> "Batch":
        return replace(
            self,
            **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)},
        )

    def select(self, keep: Sequence[int]) -> "Batch":
        """The sub-batch of images ``keep`` (in that order), with indices renumbered."""
        keep_t = torch.as_tensor(list(keep), dtype=torch.long, device=self.objs.device)
        img_map = torch.full((self.num_images,), -1, dtype=torch.long, device=keep_t.device)
        img_map[keep_t] = torch.arange(len(keep_t), device=keep_t.device)
        # objects and triples ordered by their new image index, as collate would lay them out
        obj_order = torch.cat([self.objects_of(int(i)) for i in keep_t])
        tri_order = torch.cat([(self.triple_to_img == int(i)).nonzero().flatten() for i in keep_t])
        new_index = torch.full((self.objs.numel(),), -1, dtype=torch.long, device=keep_t.device)
        new_index[obj_order] = torch.arange(obj_order.numel(), device=keep_t.device)
        triples = self.triples[tri_order].clone()
        triples[:, 0], triples[:, 2] = new_index[triples[:, 0]], new_index[triples[:, 2]]
        return Batch(
            objs=self.objs[obj_order], triples=triples, obj_to_img=img_map[self.obj_to_img[obj_order]],
            triple_to_img=img_map[self.triple_to_img[tri_order]], boxes=self.boxes[obj_order],
            boxes_known=self.boxes_known[obj_order],
            masks=self.masks[obj_order] if self.masks is not None else None,
            images=self.images[keep_t] if self.images is not None else None,
            captions=[self.captions[i] for i in keep_t.tolist()],
            descriptions=[self.descriptions[i] for i in obj_order.tolist()],
            image_ids=[self.image_ids[i] for i in keep_t.tolist()],
        )

    def objects_of(self, i: int) -> torch.Tensor:
        """Batch-global indices of image ``i``'s objects."""
        return (self.obj_to_img == i).nonzero().flatten()


def collate(items: Sequence[dict]) -> Batch:
    """Pack items (see module doc) into one :class:`Batch`."""
    if len(items) == 0:
        raise DataError("collate: empty list of items")
    objs, triples, obj_to_img, triple_to_img = [], [], [], []
    boxes, boxes_known, masks, images = [], [], [], []
    captions, descriptions, image_ids = [], [], []
    any_masks = any(it.get("masks") is not None for it in items)
    any_images = any(it.get("image") is not None for it in items)
    if any_images and not all(it.get("image") is not None for it in items):
        raise DataError("collate: some items have an image and some do not")
    offset = 0
    for i, it in enumerate(items):
        o = torch.as_tensor(it["objs"], dtype=torch.long)
        n = o.numel()
        t = torch.as_tensor(it["triples"], dtype=torch.long).reshape(-1, 3)
        if t.numel() and (t[:, [0, 2]].min() < 0 or t[:, [0, 2]].max() >= n):
            raise DataError(f"collate: item {i} has a triple whose object index is outside 0..{n - 1}")
        objs.append(o)
        triples.append(t + torch.tensor([offset, 0, offset]))
        obj_to_img.append(torch.full((n,), i, dtype=torch.long))
        triple_to_img.append(torch.full((t.shape[0],), i, dtype=torch.long))
        b = it.get("boxes")
        if b is None:
            boxes.append(torch.zeros(n, 4))
            boxes_known.append(torch.zeros(n, dtype=torch.bool))
        else:
            boxes.append(torch.as_tensor(b, dtype=torch.float32).reshape(n, 4))
            boxes_known.append(torch.ones(n, dtype=torch.bool))
        if any_masks:
            m = it.get("masks")
            if m is None:
                raise DataError(f"collate: item {i} has no masks but others do")
            masks.append(torch.as_tensor(m, dtype=torch.float32))
        if any_images:
            images.append(it["image"])
        captions.append(it.get("caption"))
        d = it.get("descriptions")
        descriptions.extend(d if d is not None else [None] * n)
        image_ids.append(it.get("image_id"))
        offset += n
    return Batch(
        objs=torch.cat(objs),
        triples=torch.cat(triples),
        obj_to_img=torch.cat(obj_to_img),
        triple_to_img=torch.cat(triple_to_img),
        boxes=torch.cat(boxes),
        boxes_known=torch.cat(boxes_known),
        masks=torch.cat(masks) if any_masks else None,
        images=torch.stack(images) if any_images else None,
        captions=captions,
        descriptions=descriptions,
        image_ids=image_ids,
    )
