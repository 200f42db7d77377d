"""Reading COCO annotation files: required fields, image id lists, segmentation masks and images."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import CHECK_HINT, DataError
from ..io import parse_json


def require_field(record: Any, key: str, path: Path, where: str) -> Any:
    """``record[key]``; DataError naming ``path`` and ``where`` (e.g. ``images[3]``) when it is missing."""
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} is a {type(record).__name__}, expected a JSON object")
    try:
        return record[key]
    except KeyError:
        raise DataError(f"{path}: {where} has no {key!r}") from None


def require_list(data: Any, key: str, path: Path) -> list:
    """The list at top-level ``key`` of a COCO JSON file; DataError when missing or not a list."""
    value = require_field(data, key, path, "the top level")
    if not isinstance(value, list):
        raise DataError(f"{path}: {key!r} is a {type(value).__name__}, expected a list")
    return value


def _parse_image_id(token: str) -> int | None:
    """``123``, ``000000000123`` or a file name like ``000000000123.jpg`` -> 123."""
    stem = Path(token).stem
    digits = stem[len(stem.rstrip("0123456789")):]
    return int(digits) if digits else None


def read_image_ids(path: str | Path) -> list[int]:
    """Image ids from a text file (one per line; ``#`` comments) or a JSON list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: image id list not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: image id list is not UTF-8 (byte {e.start})") from None
    if text.lstrip().startswith("["):
        values = parse_json(text, str(path), "image id list")  # a list: the text starts with "["
        ids = []
        for i, v in enumerate(values):
            parsed = v if isinstance(v, int) and not isinstance(v, bool) else (
                _parse_image_id(v) if isinstance(v, str) else None)
            if parsed is None:
                raise DataError(f"{path}: entry {i} ({v!r}) is not an image id")
            ids.append(parsed)
        return ids
    ids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parsed = _parse_image_id(line.split()[0])
        if parsed is None:
            raise DataError(f"{path}:{lineno}: {line!r} is not an image id")
        ids.append(parsed)
    return ids


# -- masks -----------------------------------------------------------------------------------
def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray | None:
    """(H, W) uint8 mask of a COCO segmentation (polygons, RLE, crowd RLE); None if it is empty."""
    if isinstance(seg, list):
        # Polygons need at least 3 points; pycocotools misreads shorter ones as boxes.
        polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(seg, dict) and "counts" in seg:
        if isinstance(seg["counts"], list):  # uncompressed RLE (crowd regions in instances)
            h, w = seg.get("size", (height, width))
            rle = mask_utils.frPyObjects(seg, h, w)
        else:  # compressed RLE (the COCO-Stuff stuff annotations)
            rle = seg
    else:
        return None
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= notice, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def crop_mask(full: np.ndarray | None, bbox: Sequence[float], mask_size: int) -> torch.Tensor:
    """Crop ``full`` to the COCO ``bbox`` (x, y, w, h; pixels) and reduce it to M x M in {0, 1}."""
    if full is None:  # no usable segmentation: the box is all we know
        return torch.ones(mask_size, mask_size)
    x, y, w, h = bbox
    hh, ww = full.shape
    # sg2im's rounding, never an empty crop
    x0 = min(max(int(round(x)), 0), ww - 1)
    y0 = min(max(int(round(y)), 0), hh - 1)
    x1 = min(max(int(round(x + w)), x0 + 1), ww)
    y1 = min(max(int(round(y + h)), y0 + 1), hh)
    crop = torch.from_numpy(np.ascontiguousarray(full[y0:y1, x0:x1], dtype=np.float32))
    # area averaging: each cell holds the fraction of it the object covers
    cover = F.interpolate(crop[None, None], size=(mask_size, mask_size), mode="area")[0, 0]
    mask = (cover >= 0.5).float()
    if mask.sum() == 0 and cover.max() > 0:
        mask = (cover > 0).float()  # thin objects: keep the cells they touch rather than nothing
    return mask


def mask_centers(boxes: torch.Tensor, masks: torch.Tensor) -> list[tuple[float, float]]:
    """Centroid of each box-relative mask in normalised image coordinates (box centre if empty)."""
    m = masks.shape[-1]
    cells = (torch.arange(m, dtype=torch.float32) + 0.5) / m
    centers = []
    for box, mask in zip(boxes.tolist(), masks):
        x0, y0, x1, y1 = box
        total = float(mask.sum())
        if total == 0:
            centers.append(((x0 + x1) / 2, (y0 + y1) / 2))
            continue
        fx = float((mask.sum(0) * cells).sum()) / total
        fy = float((mask.sum(1) * cells).sum()) / total
        centers.append((x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)))
    return centers


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """(3, S, S) float in [-1, 1]; the whole image resized to a square, as sg2im does."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; {CHECK_HINT}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e}); {CHECK_HINT}") from None
    pixels = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
    return pixels.permute(2, 0, 1).float().div_(127.5).sub_(1.0).clamp_(-1.0, 1.0)

