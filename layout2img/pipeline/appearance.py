"""Appearance from a reference image: each object's style code encoded from a user's picture
(:func:`encode_reference`, what :meth:`SceneGraphToImage.encode_styles` runs) and the codes carried
onto another graph's objects (:class:`ReferenceStyles`).

The appearance encoder is the one training uses (``style_source='encode'``): it pools the image's
features over each object's visible region of the reference layout - the reference graph's
boxes, with its masks given or predicted - and the posterior mean is the object's code. A code
is what the generator paints an object with, so "the red star and the blue sky of this picture"
carry over to a new layout::

    ref = ReferenceStyles.from_image(model, "photo.png", {"objects": ["star", "sky"],
                                     "boxes": [[.1, .5, .4, .9], [0, 0, 1, .5]]})
    images = model.generate(graph, style_codes=ref.codes_for(graph_objects))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError, DataError, GraphError


def reference_image(image: Any, size: int) -> torch.Tensor:
    """A reference picture as a (1, 3, size, size) float tensor in [-1, 1].

    ``image``: a tensor (3, H, W) or (1, 3, H, W) in [-1, 1] at the model's size, a PIL image or an
    image file's path (both resized to ``size`` x ``size``: boxes are fractions of the picture, so
    they follow the stretch). DataError naming what is wrong otherwise.
    """
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if not isinstance(image, torch.Tensor):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise DataError(f"image: expected a tensor, a PIL image or a file path, got {type(image).__name__}")
        import numpy as np

        rgb = image.convert("RGB").resize((size, size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (pixels.float() / 127.5 - 1.0)[None]
    shape = tuple(image.shape)
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[:2] != (1, 3) or tuple(image.shape[-2:]) != (size, size):
        raise DataError(f"image: expected a tensor of shape (3, {size}, {size}) (the model's size, RGB in [-1, 1]), "
                        f"got {shape}")
    if not image.is_floating_point() or not bool(torch.isfinite(image).all()):
        raise DataError("image: expected finite floating-point values in [-1, 1]")
    if float(image.abs().max()) > 1.0 + 1e-3:
        raise DataError(f"image: values must lie in [-1, 1], found {float(image.abs().max()):.3g} "
                        f"(an image in [0, 255] or [0, 1] needs x / 127.5 - 1 or 2 x - 1)")
    return image.float()


def open_image(path: str | Path):
    """The PIL image of a file (DataError naming it when it is missing or not an image)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None


def check_masks(masks: Any, num_objects: int, mask_size: int) -> torch.Tensor:
    """``masks`` as a float (num_objects, M, M) tensor of probabilities (DataError otherwise)."""
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != (num_objects, mask_size, mask_size):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise DataError(f"masks: expected a tensor of shape ({num_objects}, {mask_size}, {mask_size}) "
                        f"(one mask per object, the model's mask size), got {shape}")
    masks = masks.float()
    if not bool(torch.isfinite(masks).all()) or float(masks.min()) < 0 or float(masks.max()) > 1:
        raise DataError("masks: expected probabilities in [0, 1]")
    return masks


@torch.no_grad()
def encode_reference(model, image: Any, graph: Any, masks: Any = None) -> tuple[list[str], torch.Tensor]:
    """``(object names, (N, style_dim) codes)`` of the reference graph's N objects, encoded from
    ``image`` (see :meth:`SceneGraphToImage.encode_styles`)."""
    from .inputs import check_inputs
    from .layouts import packed_batch
    from .styles import encode_style_codes

    if model.encoder is None:
        raise ConfigError(f"encode_styles: this model has no appearance encoder (style_dim={model.style_dim})")
    from ..graph import SceneGraph

    if isinstance(graph, Mapping):
        graph = SceneGraph.from_dict(dict(graph), model.vocab, source="<reference graph>")
    if not isinstance(graph, SceneGraph):
        raise GraphError(f"reference graph: expected one SceneGraph or sg2im dict, got {type(graph).__name__}")
    request = check_inputs(model, graph)
    item = request.items[0]
    n = item["objs"].numel() - 1
    if item["boxes"] is None:
        raise GraphError(f"reference graph: needs a box for every object ({n}): where each one is in the image")
    pixels = reference_image(image, model.image_size)
    given = check_masks(masks, n, model.config["layout"]["mask_size"]) if masks is not None else None
    batch, noise = packed_batch(request, model.layout_stage, model.device)
    batch = dataclasses.replace(batch, images=pixels.to(model.device))
    stage = model.layout_stage
    with model.evaluating():
        texts = model.encode_texts(batch).as_kwargs() if model.text_encoder is not None else {}
        obj_vecs = model.object_vectors(batch, **texts)
        boxes_pred, mask_logits, _ = stage.predict_boxes(batch, obj_vecs, noise=noise)
        boxes, probs = stage.geometry_inputs(batch, boxes_pred, mask_logits, "gt")
        if given is not None:
            probs = torch.cat([given.to(probs.device), probs[n:]])
        geometry = stage.compose(batch, boxes, probs, model.stuff_classes, fill_holes=given is None)
        mu, _, _ = encode_style_codes(model.encoder, batch.images, geometry, batch.obj_to_img, model.image_size)
    names = [model.vocab.object_names[int(i)] for i in item["objs"][:n]]
    return names, mu[:n].float().cpu()


def parse_object_map(text: str) -> dict[int, int]:
    """``"0=1,2=0"`` (object of the new graph = object of the reference) -> ``{0: 1, 2: 0}``."""
    mapping: dict[int, int] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        left, sep, right = part.partition("=")
        if not sep or not left.strip().isdigit() or not right.strip().isdigit():
            raise ConfigError(f"--style-map {text!r}: expected OBJECT=REFERENCE_OBJECT pairs such as 0=1,2=0, "
                              f"got {part!r}")
        target = int(left)
        if target in mapping:
            raise ConfigError(f"--style-map {text!r}: object {target} is mapped twice")
        mapping[target] = int(right)
    return mapping


@dataclass
class ReferenceStyles:
    """The style codes of a reference picture's objects, and the rule that hands them to another
    graph's objects (:meth:`codes_for`)."""

    objects: list[str]  # the reference graph's object names
    codes: torch.Tensor  # (N, style_dim), row i for objects[i]

    @classmethod
    def from_image(cls, model, image: Any, graph: Any, masks: Any = None) -> "ReferenceStyles":
        """The codes of ``image``'s objects (the arguments: :meth:`SceneGraphToImage.encode_styles`)."""
        return cls(*encode_reference(model, image, graph, masks))

    def codes_for(self, objects: Sequence[str], mapping: Mapping[int, int] | None = None,
                  where: str = "graph") -> dict[int, torch.Tensor]:
        """``{object index: code}`` for a graph's ``objects``: an object ``mapping`` names takes
        that reference object's code; the others take the code of a reference object of their
        class (the k-th of a class the k-th such reference object, cycling); objects whose class
        the reference lacks are left out (they keep the default appearance source)."""
        out: dict[int, torch.Tensor] = {}
        for target, ref in (mapping or {}).items():
            if not 0 <= target < len(objects):
                raise DataError(f"{where}: style map: object {target} does not exist ({len(objects)} objects)")
            if not 0 <= ref < len(self.objects):
                raise DataError(f"{where}: style map: reference object {ref} does not exist "
                                f"({len(self.objects)} reference objects)")
            out[target] = self.codes[ref]
        by_class: dict[str, list[int]] = {}
        for i, name in enumerate(self.objects):
            by_class.setdefault(name, []).append(i)
        seen: dict[str, int] = {}
        for i, name in enumerate(objects):
            if i in out or name not in by_class:
                continue
            k = seen.get(name, 0)
            seen[name] = k + 1
            out[i] = self.codes[by_class[name][k % len(by_class[name])]]
        return out
