"""Drawing helpers: layouts (boxes, labels, masks) over images, and image grids.

Images may be torch tensors ``(3, H, W)`` in [-1, 1] (the project's convention), numpy arrays
``(H, W, 3)`` uint8 or float in [0, 1], or PIL images. Boxes are normalised ``[x0, y0, x1, y1]``.
Small images are upscaled (nearest) so labels stay legible. Predicted and ground-truth layouts
can share one picture: draw one, then draw the other over the result in another colour.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_save

#: Distinct colours for labels (each label name always gets the same one).
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)
#: Two colours for comparing layouts: ground truth and prediction.
GT_COLOR = (40, 220, 60)
PRED_COLOR = (255, 40, 40)

Color = tuple[int, int, int]


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; torch itself need not be imported here
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x)


def to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from a tensor (3,H,W) in [-1,1], an array (H,W,3) / (H,W), or a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):  # CHW tensor: [-1, 1]
        a = (np.clip(a, -1, 1) + 1) * 127.5
        a = a.transpose(1, 2, 0)
    elif a.dtype != np.uint8 and a.size and a.max() <= 1.0 + 1e-6:  # HWC float in [0, 1]
        a = a * 255.0
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"to_pil: expected an image (3,H,W), (H,W,3) or (H,W), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a + 0.5, 0, 255).astype(np.uint8)  # round to nearest
    return Image.fromarray(a).convert("RGB")


def label_color(label: str) -> Color:
    """A fixed colour per label name, so a class looks the same in every picture."""
    return PALETTE[zlib.crc32(str(label).encode("utf-8")) % len(PALETTE)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _colors_for(colors, labels: Sequence[str] | None, n: int) -> list[Color]:
    if colors is None:
        return [label_color(labels[i]) if labels is not None else PALETTE[i % len(PALETTE)] for i in range(n)]
    if isinstance(colors, str):
        from PIL import ImageColor

        return [ImageColor.getrgb(colors)[:3]] * n
    if len(colors) == 3 and all(isinstance(c, (int, np.integer)) for c in colors):
        return [tuple(int(c) for c in colors)] * n
    if len(colors) != n:
        raise ValueError(f"draw_layout: {len(colors)} colours for {n} boxes")
    return [tuple(int(v) for v in c) for c in colors]


def draw_layout(
    image: Any = None,
    boxes: Any = (),
    labels: Sequence[str] | None = None,
    masks: Any = None,
    colors: Any = None,
    scale: int | None = None,
    size: int = 256,
    width: int = 2,
    mask_alpha: float = 0.45,
    min_side: int = 256,
    image_masks: Any = None,
) -> Image.Image:
    """Draw normalised ``boxes`` with ``labels`` (and box-relative ``masks`` (N,M,M)) on ``image``.

    ``image`` None: a blank ``size`` x ``size`` canvas. ``scale`` None: upscale (nearest) until the
    shorter side is at least ``min_side``. ``colors``: None (one per label name), one colour for
    all boxes (name or RGB), or one per box. ``image_masks`` (N, h, w): masks over the whole
    picture instead (a layout's visible weights, which may reach outside their boxes).
    """
    if image is None:
        canvas = Image.new("RGB", (size, size), (242, 242, 242))
    else:
        canvas = to_pil(image)
    if scale is None:
        scale = max(1, math.ceil(min_side / min(canvas.size)))
    if scale != 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    b = _numpy(boxes).reshape(-1, 4).astype(np.float64)
    n = b.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"draw_layout: {len(labels)} labels for {n} boxes")
    cols = _colors_for(colors, labels, n)
    W, H = canvas.size
    px = np.stack([b[:, 0] * W, b[:, 1] * H, b[:, 2] * W, b[:, 3] * H], 1)
    if masks is not None and image_masks is not None:
        raise ValueError("draw_layout: give box-relative masks or image_masks, not both")
    if masks is not None or image_masks is not None:
        whole = masks is None
        m = _numpy(image_masks if whole else masks)
        if m.shape[0] != n:
            raise ValueError(f"draw_layout: {m.shape[0]} masks for {n} boxes")
        overlay = np.asarray(canvas, np.float32).copy()
        for i in range(n):
            x0, y0, x1, y1 = (0, 0, W, H) if whole else (int(round(v)) for v in px[i])
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if x1 <= x0 or y1 <= y0:
                continue
            mi = Image.fromarray((np.clip(m[i], 0, 1) * 255).astype(np.uint8))
            mi = np.asarray(mi.resize((x1 - x0, y1 - y0), Image.BILINEAR), np.float32) / 255.0
            a = (mi >= 0.5)[..., None] * mask_alpha
            region = overlay[y0:y1, x0:x1]
            region[:] = region * (1 - a) + np.asarray(cols[i], np.float32) * a
        canvas = Image.fromarray(overlay.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, min(14, W // 20)))
    for i in range(n):
        x0, y0, x1, y1 = px[i]
        if x1 < x0 or y1 < y0:
            continue
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=cols[i], width=width)
        if labels is not None and labels[i]:
            text = str(labels[i])
            l, t, r, btm = draw.textbbox((0, 0), text, font=font)
            tw, th = r - l, btm - t
            tx = min(max(x0, 0), W - tw - 3)
            ty = y0 - th - 3 if y0 - th - 3 >= 0 else max(y0, 0)  # above the box, or inside at the top
            draw.rectangle((tx, ty, tx + tw + 3, ty + th + 3), fill=cols[i])
            lum = 0.299 * cols[i][0] + 0.587 * cols[i][1] + 0.114 * cols[i][2]
            draw.text((tx + 2 - l, ty + 1 - t), text, fill=(0, 0, 0) if lum > 140 else (255, 255, 255), font=font)
    return canvas


def _row_images(row: Any) -> list[Image.Image]:
    if isinstance(row, Image.Image):
        return [row.convert("RGB")]
    if hasattr(row, "detach") or isinstance(row, np.ndarray):
        a = _numpy(row)
        if a.ndim == 4:  # a batch (B,3,H,W) or (B,H,W,3)
            return [to_pil(x) for x in a]
        return [to_pil(a)]
    return [to_pil(x) for x in row]


def make_grid_image(
    rows: Sequence[Any],
    pad: int = 4,
    background: Color = (255, 255, 255),
    titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    min_cell: int = 0,
) -> Image.Image:
    """Lay images out in rows (each row: a batch tensor, or a list of tensors / arrays / PIL).

    Cells take the size of the largest image; smaller ones are upscaled (nearest), so a 64 px
    sample sits next to its 256 px layout drawing. ``titles`` head the columns, ``row_titles``
    start the rows.
    """
    grid = [_row_images(r) for r in rows]
    if not grid or not any(grid):
        raise ValueError("make_grid_image: no images")
    cw = max(max(im.width for r in grid for im in r), min_cell)
    ch = max(max(im.height for r in grid for im in r), min_cell)
    ncol = max(len(r) for r in grid)
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = (probe.textbbox((0, 0), "Ag", font=font)[3] + 4) if titles else 0
    text_w = (max(probe.textbbox((0, 0), t, font=font)[2] for t in row_titles) + 6) if row_titles else 0
    W = text_w + ncol * cw + (ncol + 1) * pad
    H = text_h + len(grid) * ch + (len(grid) + 1) * pad
    out = Image.new("RGB", (W, H), background)
    draw = ImageDraw.Draw(out)
    for j, t in enumerate(titles or ()):
        draw.text((text_w + pad + j * (cw + pad), 1), str(t), fill=(0, 0, 0), font=font)
    for i, r in enumerate(grid):
        y = text_h + pad + i * (ch + pad)
        if row_titles and i < len(row_titles):
            draw.text((2, y + ch // 2 - 6), str(row_titles[i]), fill=(0, 0, 0), font=font)
        for j, im in enumerate(r):
            if im.size != (cw, ch):
                f = max(1, min(cw // im.width, ch // im.height))
                im = im.resize((im.width * f, im.height * f), Image.NEAREST)
                if im.size != (cw, ch):
                    im = im.resize((cw, ch), Image.BILINEAR)
            out.paste(im, (text_w + pad + j * (cw + pad), y))
    return out


def save_image(path: str | Path, image: Image.Image) -> Path:
    """Write a PIL image atomically; the format comes from the suffix (.png, .jpg, ...)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r} (use .png or .jpg)")
    atomic_save(path, lambda tmp: image.save(tmp, format=fmt))
    return path


def save_grid(path: str | Path, rows: Sequence[Any], **kwargs) -> Path:
    """``make_grid_image(rows, **kwargs)`` written atomically to ``path``."""
    return save_image(path, make_grid_image(rows, **kwargs))
