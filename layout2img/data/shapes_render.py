"""The Shapes world's procedural renderer: textured backgrounds, shaded shapes, one random scene.

Each image is a small outdoor (or walled) scene: one to three large *stuff* regions (sky above a
horizon with grass, sea, sand or snow below; or a brick wall) and 3-8 shaded geometric *things*
in eight colours and three sizes, painted far-to-near (lower in the picture is nearer), so near
things occlude far ones. :mod:`.shapes_captions` writes a caption from the scene: "a small red
circle above a blue square, on grass under the sky".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..vocab import SHAPES_COLORS, SHAPES_SIZES, SHAPES_THINGS
from .shapes_captions import article, scene_captions

# Saturated, well separated colours (sRGB 0-255).
COLOR_RGB = {
    "red": (222, 32, 38),
    "green": (36, 196, 84),
    "blue": (38, 72, 222),
    "yellow": (252, 218, 30),
    "purple": (150, 52, 200),
    "orange": (252, 128, 16),
    "white": (248, 248, 246),
    "black": (28, 28, 32),
}
# Side of the area-equivalent square, as a fraction of the image side: [low, high) per size class.
SIZE_RANGES = {"small": (0.15, 0.21), "medium": (0.22, 0.30), "large": (0.31, 0.40)}

# Colours that blend into a background are drawn less often on it (not never: the rim and the
# shadow keep them visible, and the model should see such scenes too).
_CLASHES = {
    "grass": {"green"},
    "sea": {"blue"},
    "sky": set(),  # deep blue and white shapes stand out against a pale sky
    "sand": {"yellow", "orange"},
    "snow": {"white"},
    "wall": {"red", "orange"},
}

# Background layouts: (top region, ground regions from far to near, probability).
_SCENES = (
    ("sky", ("grass",), 0.20),
    ("sky", ("sea",), 0.14),
    ("sky", ("sea", "sand"), 0.14),
    ("sky", ("sand",), 0.10),
    ("sky", ("snow",), 0.14),
    ("sky", ("sea", "grass"), 0.04),
    ("wall", (), 0.08),
    ("wall", ("grass",), 0.08),
    ("wall", ("sand",), 0.06),
)


# -- shape outlines ------------------------------------------------------------------------------
def _unit(points: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Scale a polygon to fill the unit square (its bounding box becomes [0, 1]^2)."""
    p = np.asarray(points, dtype=np.float64)
    p = (p - p.min(0)) / (p.max(0) - p.min(0))
    return tuple(map(tuple, p))


def _star(n: int = 5, inner: float = 0.45):
    a = -math.pi / 2 + np.arange(2 * n) * math.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return _unit(list(zip(r * np.cos(a), r * np.sin(a))))


def _heart(k: int = 48):
    t = np.linspace(0, 2 * math.pi, k, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _unit(list(zip(x, y)))


def _cross(t: float = 0.36):
    a, b = (1 - t) / 2, (1 + t) / 2
    return ((a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a))


def _hexagon():
    a = np.arange(6) * math.pi / 3  # flat top and bottom, corners left and right
    return _unit(list(zip(np.cos(a), np.sin(a))))


# Polygon in the unit box (None: an ellipse) and width / height of the shape's box.
SHAPE_GEOMETRY = {
    "circle": (None, 1.0),
    "square": (((0, 0), (1, 0), (1, 1), (0, 1)), 1.0),
    "triangle": (((0.5, 0), (1, 1), (0, 1)), 1.15),
    "star": (_star(), 1.05),
    "hexagon": (_hexagon(), 1.155),
    "diamond": (((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)), 0.72),
    "cross": (_cross(), 1.0),
    "heart": (_heart(), 1.12),
}
assert tuple(SHAPE_GEOMETRY) == SHAPES_THINGS


def _fill(poly) -> float:
    """Fraction of its box a shape covers (shoelace area of the unit-box polygon)."""
    if poly is None:
        return math.pi / 4
    x, y = np.asarray(poly, np.float64).T
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


# Thin shapes (a star fills 40% of its box, a square all of it) get somewhat larger boxes, so a
# small star stays as readable as a small square: box side ~ size / fill ** 0.25.
BOX_SCALE = {k: _fill(poly) ** -0.25 for k, (poly, _) in SHAPE_GEOMETRY.items()}


# -- one scene -------------------------------------------------------------------------------------
@dataclass
class Thing:
    shape: str
    color: str
    size: str
    box: tuple[float, float, float, float]  # drawn extent in pixels [x0, y0, x1, y1] (floats)
    mask: np.ndarray  # (S, S) bool: the visible part
    full_mask: np.ndarray  # (S, S) bool: the whole shape
    depth: int  # paint order, 0 = farthest

    @property
    def description(self) -> str:
        return article(f"{self.color} {self.shape}")


@dataclass
class Scene:
    image: np.ndarray  # (S, S, 3) uint8
    things: list[Thing]  # in paint order (far to near)
    stuff: dict[str, np.ndarray]  # name -> (S, S) bool, visible pixels only
    captions: list[str] = field(default_factory=list)


def _value_noise(rng: np.random.Generator, size: int, cells: int, aspect: float = 1.0) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a (cells x cells*aspect) grid upsampled bilinearly."""
    grid = rng.standard_normal((cells + 1, max(2, int(round(cells * aspect)) + 1))).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(img) * 0.5


def _jitter(rgb, rng, amount=14) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255) / 255.0


def _below(curve: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage of the region below ``y = curve(x)`` (pixel rows span [r, r+1])."""
    rows = np.arange(size, dtype=np.float32)[:, None]
    return np.clip(rows + 1 - curve[None, :], 0.0, 1.0)


def _sky(rng, s, horizon):
    rows = np.arange(s, dtype=np.float32)[:, None, None] / max(horizon, 1.0)
    top, low = _jitter((58, 118, 212), rng, 16), _jitter((176, 210, 240), rng, 10)
    img = top + (low - top) * np.clip(rows, 0, 1) ** 0.8
    img = np.broadcast_to(img, (s, s, 3)).copy()
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    for _ in range(rng.integers(0, 3)):  # soft clouds: a few overlapping ellipses
        cx, cy = rng.uniform(0, s), rng.uniform(0.05 * s, max(0.1 * s, 0.75 * horizon))
        w, h = rng.uniform(0.12, 0.22) * s, rng.uniform(0.04, 0.07) * s
        a = np.zeros((s, s), np.float32)
        for dx, dy, k in ((0, 0, 1.0), (-0.7, 0.3, 0.7), (0.7, 0.25, 0.75), (0.2, -0.45, 0.6)):
            d = ((xx - cx - dx * w) / (w * k)) ** 2 + ((yy - cy - dy * h * 2) / (h * k * 1.3)) ** 2
            a = np.maximum(a, np.clip((1 - d) * 2.5, 0, 1))
        img += (np.array([0.98, 0.98, 1.0], np.float32) - img) * (0.8 * a)[..., None]
    return img


def _grass(rng, s, horizon):
    base = _jitter((78, 150, 44), rng, 16)
    streaks = rng.standard_normal((max(2, s // 3), s)).astype(np.float32)  # tall, thin: blades
    blades = np.asarray(Image.fromarray(streaks, "F").resize((s, s), Image.BILINEAR))
    shade = 1 + 0.12 * _value_noise(rng, s, 5) + 0.09 * blades
    rows = np.arange(s, dtype=np.float32)[:, None]
    far = np.clip(1 - (rows - horizon) / (0.5 * s), 0, 1)  # aerial perspective: hazier far away
    img = base * shade[..., None]
    return img + (np.array([0.62, 0.74, 0.55], np.float32) - img) * (0.25 * far)[..., None]


def _sea(rng, s, horizon):
    deep, light = _jitter((18, 84, 140), rng, 12), _jitter((70, 146, 196), rng, 12)
    rows = np.arange(s, dtype=np.float32)[:, None]
    t = np.clip((rows - horizon) / (0.6 * s), 0, 1)
    img = light + (deep - light) * t[..., None]
    phase = rng.uniform(0, 2 * math.pi)
    depth = np.maximum(rows - horizon, 0.5)
    waves = np.sin(np.sqrt(depth) * 9.0 * (64 / s) ** 0.5 + phase + 0.9 * _value_noise(rng, s, 6, 0.5) * 3)
    shade = 1 + 0.10 * waves * np.clip(t * 4, 0.3, 1) + 0.05 * _value_noise(rng, s, 8)
    return img * shade[..., None]


def _sand(rng, s, horizon):
    base = _jitter((222, 192, 124), rng, 12)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) * (64.0 / s)
    ripples = np.sin(0.9 * yy + 0.25 * xx + 2 * _value_noise(rng, s, 4) + rng.uniform(0, 6.3))
    shade = 1 + 0.04 * ripples + 0.07 * _value_noise(rng, s, 5) + 0.035 * rng.standard_normal((s, s))
    return base * shade[..., None].astype(np.float32)


def _snow(rng, s, horizon):
    base = _jitter((234, 240, 250), rng, 6)
    n = _value_noise(rng, s, 4)
    img = base * (1 + 0.03 * rng.standard_normal((s, s)).astype(np.float32))[..., None]
    blue = np.array([0.70, 0.78, 0.92], np.float32)  # drifts: bluish shade in the hollows
    return img + (blue - img) * np.clip(0.35 * n + 0.1, 0, 0.45)[..., None]


def _wall(rng, s, horizon):
    palettes = (  # (brick, mortar): red brick, grey stone, dark brick
        ((164, 70, 48), (206, 198, 186)), ((128, 128, 134), (80, 80, 84)), ((112, 58, 46), (176, 166, 154)))
    brick, mortar = palettes[rng.integers(len(palettes))]
    brick, mortar = _jitter(brick, rng, 12), _jitter(mortar, rng, 8)
    bh = max(3, int(round(s / rng.uniform(9, 12))))  # brick height in pixels
    bw = 2 * bh + 1
    yy, xx = np.mgrid[0:s, 0:s]
    row = yy // bh
    xo = xx + (row % 2) * (bw // 2) + rng.integers(bw)
    col = xo // bw
    joint = (yy % bh == 0) | (xo % bw == 0)
    tint = rng.uniform(0.86, 1.12, (s // bh + 2, s // bw + 3)).astype(np.float32)[row, col]
    img = brick * (tint * (1 + 0.04 * rng.standard_normal((s, s)).astype(np.float32)))[..., None]
    img = np.where(joint[..., None], mortar, img)
    rows = np.arange(s, dtype=np.float32)[:, None, None]
    return img * (0.85 + 0.2 * rows / s)  # lit from above


_TEXTURES = {"sky": _sky, "grass": _grass, "sea": _sea, "sand": _sand, "snow": _snow, "wall": _wall}


def _background(rng, s):
    """(image (S,S,3) float in [0,1], label map (S,S) of stuff names' indices, stuff names)."""
    probs = np.array([p for _, _, p in _SCENES])
    top, grounds, _ = _SCENES[rng.choice(len(_SCENES), p=probs / probs.sum())]
    names = [top, *grounds]
    label = np.zeros((s, s), np.int8)
    if top == "wall":
        horizon = rng.uniform(0.55, 0.75) * s if grounds else float(s)
    else:
        horizon = rng.uniform(0.34, 0.58) * s
    img = _TEXTURES[top](rng, s, horizon)
    x = np.arange(s, dtype=np.float32) + 0.5
    edge = horizon
    for k, g in enumerate(grounds, start=1):
        if k == 1:
            flat = g == "sea" or top == "wall"
            amp = 0.0 if flat else rng.uniform(0.01, 0.05) * s
            edge = horizon
        else:  # a nearer band (beach, meadow) starts lower down, with a wavy shoreline
            amp = rng.uniform(0.01, 0.03) * s
            edge = edge + rng.uniform(0.14, 0.26) * s
        curve = edge + amp * np.sin(2 * math.pi * (x / s) * rng.uniform(0.6, 1.8) + rng.uniform(0, 6.3))
        cover = _below(curve.astype(np.float32), s)
        img = img * (1 - cover[..., None]) + _TEXTURES[g](rng, s, edge) * cover[..., None]
        label[cover >= 0.5] = k
    return np.clip(img, 0, 1).astype(np.float32), label, names


def _shape_alpha(shape, box, s, ss):
    """Anti-aliased coverage of a shape in a local window, and its ``ss``-times finer drawing.

    Returns ``(x0, y0, alpha, hires)`` with the window's top-left pixel: the shape is drawn at
    ``ss`` times the resolution (``hires``, uint8) and box-filtered down to ``alpha`` in [0, 1].
    """
    bx0, by0, bx1, by1 = box
    x0, y0 = max(0, int(math.floor(bx0)) - 1), max(0, int(math.floor(by0)) - 1)
    x1, y1 = min(s, int(math.ceil(bx1)) + 1), min(s, int(math.ceil(by1)) + 1)
    w, h = x1 - x0, y1 - y0
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    poly, _ = SHAPE_GEOMETRY[shape]
    ox, oy, sw, sh = (bx0 - x0) * ss, (by0 - y0) * ss, (bx1 - bx0) * ss, (by1 - by0) * ss
    if poly is None:
        draw.ellipse((ox, oy, ox + sw - 1, oy + sh - 1), fill=255)
    else:
        draw.polygon([(ox + u * sw, oy + v * sh) for u, v in poly], fill=255)
    hires = np.asarray(canvas)
    return x0, y0, _downsample(hires, ss), hires


def _downsample(hires: np.ndarray, ss: int) -> np.ndarray:
    h, w = hires.shape[0] // ss, hires.shape[1] // ss
    return hires.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32) / 255.0


def _erode(a: np.ndarray, r: int) -> np.ndarray:
    """Minimum over a (2r+1)^2 square (separable), treating outside as empty."""
    p = np.pad(a, r)
    h, w = a.shape
    rows = p[:, r : r + w].copy()
    for d in range(-r, r + 1):
        np.minimum(rows, p[:, r + d : r + d + w], out=rows)
    out = rows[r : r + h].copy()
    for d in range(-r, r + 1):
        np.minimum(out, rows[r + d : r + d + h], out=out)
    return out


def _box_blur(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1, mode="edge")
    a = (p[:-2] + p[1:-1] + p[2:]) / 3
    return (a[:, :-2] + a[:, 1:-1] + a[:, 2:]) / 3


def _paint(img, color, box, x0, y0, alpha, hires, ss):
    """Composite one shaded shape with its drop shadow onto ``img`` (in place)."""
    s = img.shape[0]
    h, w = alpha.shape
    rim = max(1, int(round(0.9 * ss * s / 64)))  # a dark rim about one pixel wide at 64 px
    inner = _downsample(_erode(hires, rim), ss)
    # Drop shadow: the coverage shifted down-right and blurred, darkening what lies beneath.
    dx, dy = max(1, round(0.035 * s)), max(1, round(0.05 * s))
    sh = np.zeros((h + dy + 2, w + dx + 2), np.float32)
    sh[dy + 1 : dy + 1 + h, dx + 1 : dx + 1 + w] = alpha
    sh = _box_blur(_box_blur(sh))
    sy0, sx0 = y0 - 1, x0 - 1
    ys, xs = slice(max(sy0, 0), min(sy0 + sh.shape[0], s)), slice(max(sx0, 0), min(sx0 + sh.shape[1], s))
    img[ys, xs] *= (1 - 0.42 * sh[ys.start - sy0 : ys.stop - sy0, xs.start - sx0 : xs.stop - sx0])[..., None]
    # Shading: brighter towards the top-left light, a soft highlight, a darker rim.
    bx0, by0, bx1, by1 = box
    cx, cy, rx, ry = (bx0 + bx1) / 2, (by0 + by1) / 2, (bx1 - bx0) / 2, (by1 - by0) / 2
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (u + x0 + 0.5 - cx) / rx
    v = (v + y0 + 0.5 - cy) / ry
    base = np.asarray(COLOR_RGB[color], np.float32) / 255.0
    light = 1.0 - 0.22 * (0.6 * u + 0.8 * v)
    spec = 0.38 * np.exp(-((u + 0.38) ** 2 + (v + 0.42) ** 2) / 0.10)
    fill = np.clip(base * light[..., None], 0, 1)
    fill = fill + (1 - fill) * spec[..., None]
    rim_rgb = np.array([0.36, 0.36, 0.40], np.float32) if color == "black" else base * 0.42
    region = img[y0 : y0 + h, x0 : x0 + w]
    region *= (1 - alpha)[..., None]
    region += rim_rgb * (alpha - inner)[..., None] + fill * inner[..., None]


def _color_choice(rng, stuff_names):
    clash = set().union(*(_CLASHES[n] for n in stuff_names))
    weights = np.array([0.4 if c in clash else 1.0 for c in SHAPES_COLORS])
    return SHAPES_COLORS[rng.choice(len(SHAPES_COLORS), p=weights / weights.sum())]


def render_scene(rng: np.random.Generator, size: int = 64, supersample: int | None = None) -> Scene:
    """Draw one random scene with its annotations (what ``prepare_shapes`` writes per image)."""
    s = int(size)
    ss = supersample or (4 if s <= 128 else 2)
    img, stuff_label, stuff_names = _background(rng, s)
    n_target = int(rng.integers(3, 9))
    placed: list[dict] = []
    min_visible = 0.55  # every thing keeps most of itself in view ...
    min_pixels = 30 * (s / 64) ** 2  # ... and enough pixels to be read
    for _ in range(n_target * 12):
        if len(placed) == n_target:
            break
        shape = SHAPES_THINGS[rng.integers(len(SHAPES_THINGS))]
        size_name = SHAPES_SIZES[rng.choice(3, p=[0.4, 0.35, 0.25])]
        color = _color_choice(rng, stuff_names)
        side = rng.uniform(*SIZE_RANGES[size_name]) * s * BOX_SCALE[shape]
        aspect = SHAPE_GEOMETRY[shape][1]
        w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
        bx0, by0 = rng.uniform(1, s - 1 - w), rng.uniform(1, s - 1 - h)
        box = (bx0, by0, bx0 + w, by0 + h)
        x0, y0, alpha, hires = _shape_alpha(shape, box, s, ss)
        full = np.zeros((s, s), bool)
        full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha >= 0.5
        cand = dict(shape=shape, color=color, size=size_name, box=box, x0=x0, y0=y0, alpha=alpha,
                    hires=hires, full=full)
        trial = sorted(placed + [cand], key=lambda t: t["box"][3])  # lower = nearer = painted later
        covered = np.zeros((s, s), bool)
        ok = True
        for t in reversed(trial):  # near to far
            vis = t["full"] & ~covered
            if vis.sum() < max(min_visible * t["full"].sum(), min_pixels):
                ok = False
                break
            t["visible"] = vis
            covered |= t["full"]
        if ok:
            placed = trial
    if len(placed) < 3:  # astronomically rare with these sizes; draw the scene again
        return render_scene(rng, size, supersample)
    label = stuff_label.astype(np.int16)
    things = []
    for depth, t in enumerate(placed):
        _paint(img, t["color"], t["box"], t["x0"], t["y0"], t["alpha"], t["hires"], ss)
        label[t["full"]] = 100 + depth
        things.append(Thing(t["shape"], t["color"], t["size"], t["box"], t["visible"], t["full"], depth))
    stuff = {}
    for k, name in enumerate(stuff_names):
        m = label == k
        if m.any():
            stuff[name] = m
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Scene(image, things, stuff, scene_captions(rng, things, stuff_names))

