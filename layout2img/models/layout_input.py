"""The generator's input: class channels, the instance edge map of pix2pixHD, optional per-pixel
noise (OASIS) and box coordinates, and a per-object style map (:class:`LayoutTensors`), built from
a composed layout (:func:`~.layout.compose`) by :func:`build_layout`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layout import LayoutGeometry, compose, instance_edges
from .position import coordinates_in_boxes

@dataclass
class LayoutTensors:
    """The layout at image resolution.

    ``semantic`` (B, C, H, W): class channels; one-hot has ``C = num_classes - 1`` (channel
    ``c - 1`` for class ``c``: ``__image__`` has no channel, so uncovered pixels are all-zero),
    or ``C = class_embed_dim`` with learned class embeddings. ``edges`` (B, 1, H, W) instance
    boundaries. ``style`` (B, S, H, W) per-object style codes (S may be 0). ``instances``
    (B, H, W) long, 0 = no object, else 1 + batch-global object index. ``geometry`` holds the
    per-object visible weights (e.g. for the appearance encoder); ``noise`` (B, N, H, W) or None OASIS's
    per-pixel N(0, 1) channels, drawn once with the layout (re-rendering it reuses them); ``box_coords``
    (B, 2, H, W) or None each pixel's place in its object's box (:func:`~.position.coordinates_in_boxes`).
    """

    semantic: torch.Tensor
    edges: torch.Tensor
    style: torch.Tensor
    instances: torch.Tensor
    geometry: LayoutGeometry | None = None
    noise: torch.Tensor | None = None
    box_coords: torch.Tensor | None = None

    def tensor(self) -> torch.Tensor:
        """semantic ⊕ edges [⊕ noise] [⊕ box_coords] ⊕ style: the generator's input (shape side first)."""
        return torch.cat([p.to(self.semantic.dtype) for p in self._parts()], 1)

    def _parts(self) -> list[torch.Tensor]:
        return [p for p in (self.semantic, self.edges, self.noise, self.box_coords, self.style) if p is not None]

    def for_discriminator(self) -> torch.Tensor:
        """semantic ⊕ edges: what the discriminators see beside the image."""
        return torch.cat([self.semantic, self.edges.to(self.semantic.dtype)], 1)

    @property
    def num_channels(self) -> int:
        return sum(p.shape[1] for p in self._parts())


def layout_channels(num_classes: int, class_embed_dim: int = 0, style_dim: int = 0, noise_channels: int = 0,
                    box_coordinates: bool = False) -> int:
    """Channels of :meth:`LayoutTensors.tensor` (the generator's ``in_channels``)."""
    return (class_embed_dim or num_classes - 1) + 1 + noise_channels + 2 * bool(box_coordinates) + style_dim


def class_vectors(objs: torch.Tensor, num_classes: int, class_embedding: nn.Module | None = None,
                  dtype=torch.float32) -> torch.Tensor:
    """(O,) class indices -> (O, C): one-hot without ``__image__``'s channel, or embeddings."""
    if class_embedding is not None:
        return class_embedding(objs).to(dtype)
    return F.one_hot(objs, num_classes).to(dtype)[:, 1:]


def build_layout(objs: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, obj_to_img: torch.Tensor,
                 num_images: int, size, num_classes: int, style_codes: torch.Tensor | None = None,
                 class_embedding: nn.Module | None = None, stuff_classes: torch.Tensor | None = None,
                 geometry: LayoutGeometry | None = None, noise_channels: int = 0,
                 generator: torch.Generator | None = None, box_coordinates: bool = False) -> LayoutTensors:
    """The generator's layout from boxes (O, 4) and mask probabilities (O, M, M).

    ``__image__`` objects (class 0) are never drawn. Overlaps are resolved by :func:`compose`
    (pass a precomputed ``geometry`` to reuse one). ``noise_channels`` > 0: that many N(0, 1) channels
    per image, drawn from ``generator`` (any device; None: the global RNG); 0 draws nothing.
    ``box_coordinates``: add each pixel's place in its object's box (two channels).
    """
    if geometry is None:
        geometry = compose(boxes, masks, obj_to_img, num_images, size, objs=objs, stuff_classes=stuff_classes,
                           skip=objs == 0)
    dtype = geometry.weights.dtype
    semantic = geometry.spread(class_vectors(objs, num_classes, class_embedding, dtype))
    no_style = style_codes is None or style_codes.shape[1] == 0
    style = (semantic.new_zeros(num_images, 0, *semantic.shape[2:]) if no_style
             else geometry.spread(style_codes.to(dtype)))
    rng_device = generator.device if generator is not None else semantic.device
    noise = (torch.randn((num_images, noise_channels, *semantic.shape[2:]), generator=generator, device=rng_device)
             .to(semantic) if noise_channels > 0 else None)
    coords = coordinates_in_boxes(boxes, geometry.weights, obj_to_img, num_images) if box_coordinates else None
    return LayoutTensors(semantic, instance_edges(geometry.instances).to(dtype), style, geometry.instances, geometry,
                         noise, coords)
