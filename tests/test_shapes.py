"""The embedded Shapes world: content, determinism, COCO files, reading back, a looked-at grid."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from layout2img.data import shapes as S
from layout2img.data import shapes_render as R
from layout2img.errors import DataError, Layout2ImgError
from layout2img.relations import geometric_relation
from layout2img.vocab import SHAPES_COLORS, SHAPES_SIZES, SHAPES_STUFF, SHAPES_THINGS, Vocab

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return S.prepare_shapes(root, num_train=24, num_val=8, size=64, seed=3, progress=False)


@pytest.fixture(scope="module")
def scenes():
    """300 scenes drawn in memory, for statistics."""
    return [R.render_scene(np.random.default_rng([11, i]), 64) for i in range(300)]


# -- what a scene holds ------------------------------------------------------------------------------
def test_scene_counts_and_ranges(scenes):
    for sc in scenes:
        assert sc.image.shape == (64, 64, 3) and sc.image.dtype == np.uint8
        assert 3 <= len(sc.things) <= 8
        assert 1 <= len(sc.stuff) <= 3
        for t in sc.things:
            assert t.shape in SHAPES_THINGS and t.color in SHAPES_COLORS and t.size in SHAPES_SIZES
            x0, y0, x1, y1 = t.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            side = np.sqrt((x1 - x0) * (y1 - y0)) / R.BOX_SCALE[t.shape]
            lo, hi = R.SIZE_RANGES[t.size]
            assert lo * 64 - 1e-6 <= side <= hi * 64 + 1e-6
            # most of every thing stays in view, and it is big enough to read at 64 px
            assert t.mask.sum() >= max(0.55 * t.full_mask.sum(), 30) and t.full_mask.sum() >= 40
            assert not (t.mask & ~t.full_mask).any()


def test_every_category_colour_and_size_is_common(scenes):
    images_with = Counter()
    for sc in scenes:
        images_with.update({t.shape for t in sc.things} | set(sc.stuff) | {t.color for t in sc.things}
                           | {t.size for t in sc.things})
    for name in SHAPES_THINGS + SHAPES_COLORS + SHAPES_SIZES:
        assert images_with[name] >= 60, (name, images_with[name])
    for name in SHAPES_STUFF:
        assert images_with[name] >= 15, (name, images_with[name])


def test_occlusion_happens_and_follows_depth(scenes):
    occluded = 0
    for sc in scenes:
        hidden = [t for t in sc.things if (t.full_mask & ~t.mask).any()]
        occluded += bool(hidden)
        for t in hidden:  # what hides a thing is a nearer thing (painted later)
            lost = t.full_mask & ~t.mask
            nearer = np.zeros_like(lost)
            for o in sc.things:
                if o.depth > t.depth:
                    nearer |= o.mask
            assert not (lost & ~nearer).any()
    assert occluded >= 0.15 * len(scenes)


def test_pixels_show_the_annotated_colour(scenes):
    """Inside each thing's visible mask the picture is that thing's colour (shaded)."""
    palette = np.array([R.COLOR_RGB[c] for c in SHAPES_COLORS], np.float32)
    right = total = 0
    for sc in scenes[:100]:
        for t in sc.things:
            m = t.mask.copy()
            m[1:-1, 1:-1] &= t.mask[:-2, 1:-1] & t.mask[2:, 1:-1] & t.mask[1:-1, :-2] & t.mask[1:-1, 2:]
            m[[0, -1]] = m[:, [0, -1]] = False  # drop the rim
            if m.sum() < 4:
                continue
            mean = sc.image[m].astype(np.float32).mean(0)
            total += 1
            right += SHAPES_COLORS[int(np.argmin(((palette - mean) ** 2).sum(1)))] == t.color
    assert total > 300 and right / total > 0.95, (right, total)


def test_stuff_is_a_plausible_background(scenes):
    for sc in scenes:
        names = list(sc.stuff)
        assert names[0] in ("sky", "wall")
        if "sky" in sc.stuff:  # the sky is on top: its lowest visible row is above the ground's
            sky_rows = np.nonzero(sc.stuff["sky"].any(1))[0]
            for ground in names[1:]:
                rows = np.nonzero(sc.stuff[ground].any(1))[0]
                assert sky_rows.min() < rows.min() and np.median(sky_rows) < np.median(rows)


# -- the files ---------------------------------------------------------------------------------------
def test_layout_on_disk(small):
    for split, n in (("train", 24), ("val", 8)):
        assert len(list((small / "images" / split).glob("*.png"))) == n
        for kind in ("instances", "stuff", "captions"):
            assert (small / "annotations" / f"{kind}_{split}.json").is_file()
    meta = json.loads((small / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["size"] == 64 and meta["num_train"] == 24 and meta["num_val"] == 8
    assert meta["generator_version"] == S.GENERATOR_VERSION
    # nothing left over from the atomic build
    assert [p.name for p in small.parent.iterdir()] == ["ds"]


def test_coco_json_is_consistent(small):
    vocab = Vocab.shapes()
    inst = COCO(str(small / "annotations" / "instances_train.json"))
    stuff = COCO(str(small / "annotations" / "stuff_train.json"))
    caps = COCO(str(small / "annotations" / "captions_train.json"))
    assert {c["id"]: (c["name"], c["supercategory"]) for c in inst.dataset["categories"]} == {
        vocab.object_index(n): (n, "shape") for n in SHAPES_THINGS}
    assert {c["id"]: (c["name"], c["supercategory"]) for c in stuff.dataset["categories"]} == {
        vocab.object_index(n): (n, "stuff") for n in SHAPES_STUFF}
    assert sorted(inst.getImgIds()) == list(range(1, 25))
    for image_id in inst.getImgIds():
        info = inst.loadImgs(image_id)[0]
        img = Image.open(small / "images" / "train" / info["file_name"])
        assert img.size == (64, 64) and img.mode == "RGB"
        things = inst.loadAnns(inst.getAnnIds(imgIds=image_id))
        regions = stuff.loadAnns(stuff.getAnnIds(imgIds=image_id))
        assert 3 <= len(things) <= 8 and 1 <= len(regions) <= 3
        cover = np.zeros((64, 64), np.int32)
        for a, m in [(a, inst.annToMask(a)) for a in things] + [(a, stuff.annToMask(a)) for a in regions]:
            ys, xs = np.nonzero(m)
            assert a["area"] == m.sum() > 0 and a["iscrowd"] == 0
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert isinstance(a["segmentation"]["counts"], str)
            cover += m
        assert (cover == 1).all()  # things and stuff tile the picture, like COCO-Stuff's pixel labels
        for a in things:
            assert a["color"] in SHAPES_COLORS and a["size"] in SHAPES_SIZES
            assert a["description"] == ("an " if a["color"][0] in "aeiou" else "a ") + \
                f"{a['color']} {vocab.object_names[a['category_id']]}"
        assert len(caps.getAnnIds(imgIds=image_id)) == 3


_PAIR = re.compile(
    r"\b(?:an?) (?:(?:small|large) )?(" + "|".join(SHAPES_COLORS) + r") (" + "|".join(SHAPES_THINGS) + r")\b")
_REL = re.compile(r" (to the left of|to the right of|above|below|inside|around) ")
_REL_NAME = {"to the left of": "left of", "to the right of": "right of", "around": "surrounding"}


def test_captions_describe_the_scene(small):
    inst = COCO(str(small / "annotations" / "instances_train.json"))
    stuff = COCO(str(small / "annotations" / "stuff_train.json"))
    caps = COCO(str(small / "annotations" / "captions_train.json"))
    vocab = Vocab.shapes()
    for image_id in inst.getImgIds():
        things = inst.loadAnns(inst.getAnnIds(imgIds=image_id))
        present = {(a["color"], vocab.object_names[a["category_id"]]) for a in things}
        regions = {vocab.object_names[a["category_id"]] for a in stuff.loadAnns(stuff.getAnnIds(imgIds=image_id))}
        full, listed, short = [c["caption"] for c in caps.loadAnns(caps.getAnnIds(imgIds=image_id))]
        for text in (full, listed, short):
            named = _PAIR.findall(text)
            assert named and set(named) <= present, (text, present)
            for word in ("grass", "sea", "sand", "snow", "sky", "wall"):
                if word in text:
                    assert word in regions, (text, regions)
        assert sorted(_PAIR.findall(listed)) == sorted((a["color"], vocab.object_names[a["category_id"]])
                                                       for a in things)
        assert listed.split()[0] in ("three", "four", "five", "six", "seven", "eight")
        # the background is always named in the full caption
        assert any(w in full for w in regions)
        # the relation holds between the two things named (some pair that looks like them)
        (ca, sa), (cb, sb) = _PAIR.findall(full)[:2]
        rel = _REL.search(full).group(1)
        rel = _REL_NAME.get(rel, rel)

        def norm(a):
            x, y, w, h = a["bbox"]
            return [x / 64, y / 64, (x + w) / 64, (y + h) / 64]

        def center(a):
            ys, xs = np.nonzero(inst.annToMask(a))
            return ((xs.mean() + 0.5) / 64, (ys.mean() + 0.5) / 64)

        A = [a for a in things if (a["color"], vocab.object_names[a["category_id"]]) == (ca, sa)]
        B = [b for b in things if (b["color"], vocab.object_names[b["category_id"]]) == (cb, sb)]
        assert any(geometric_relation(norm(a), norm(b), center(a), center(b)) == rel
                   for a in A for b in B if a is not b), full


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = S.prepare_shapes(tmp_path / "a", num_train=60, num_val=10, seed=5, workers=1, progress=False)
    b = S.prepare_shapes(tmp_path / "b", num_train=60, num_val=10, seed=5, workers=2, progress=False)
    c = S.prepare_shapes(tmp_path / "c", num_train=60, num_val=10, seed=6, workers=1, progress=False)
    assert _tree_hash(a) == _tree_hash(b)
    assert _tree_hash(a) != _tree_hash(c)


def test_existing_folder_needs_overwrite(small, tmp_path):
    with pytest.raises(DataError, match="already exists.*overwrite"):
        S.prepare_shapes(small, num_train=2, num_val=1, progress=False)
    out = S.prepare_shapes(tmp_path / "d", num_train=3, num_val=1, seed=1, progress=False)
    before = _tree_hash(out)
    S.prepare_shapes(out, num_train=4, num_val=1, seed=1, overwrite=True, progress=False)
    assert _tree_hash(out) != before
    assert json.loads((out / "meta.json").read_text())["num_train"] == 4


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_train=-1), "num_train"),
    (dict(size=8), "size"),
    (dict(num_train=0, num_val=0), "nothing to write"),
    (dict(seed=-3), "seed"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, words):
    with pytest.raises(DataError, match=words) as e:
        S.prepare_shapes(tmp_path / "x", **{**dict(num_train=2, num_val=1, progress=False), **kwargs})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x").exists()


def test_a_crash_leaves_nothing_behind(tmp_path, monkeypatch):
    real = S._make_one

    def flaky(job):
        if job[2] == 3:
            raise RuntimeError("disk on fire")
        return real(job)

    monkeypatch.setattr(S, "_make_one", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        S.prepare_shapes(tmp_path / "x", num_train=6, num_val=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_shapes_caches_and_rebuilds(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    assert S.ensure_shapes(root, num_train=3, num_val=1, seed=2) == root
    first = _tree_hash(root)
    calls = []
    monkeypatch.setattr(S, "prepare_shapes", lambda *a, **k: calls.append(k))
    assert S.ensure_shapes(root, num_train=3, num_val=1, seed=2) == root
    assert calls == [] and _tree_hash(root) == first  # cached
    monkeypatch.undo()
    S.ensure_shapes(root, num_train=3, num_val=1, seed=4)  # other seed: rebuilt in place
    assert json.loads((root / "meta.json").read_text())["seed"] == 4 and _tree_hash(root) != first
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a Shapes dataset"):
        S.ensure_shapes(other, num_train=3, num_val=1)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_prepare_shapes(tmp_path, capsys):
    from layout2img.cli import main

    out = tmp_path / "cli"
    assert main(["prepare", "shapes", "--out", str(out), "--num-train", "3", "--num-val", "2", "--seed", "9"]) == 0
    assert len(list((out / "images" / "val").glob("*.png"))) == 2
    assert main(["prepare", "shapes", "--out", str(out), "--num-train", "3", "--num-val", "2"]) == 2
    assert "already exists" in capsys.readouterr().err


# -- reading back through the COCO loader ------------------------------------------------------------
def test_reads_back_through_the_coco_loader(small):
    torch = pytest.importorskip("torch")
    from layout2img.data.batch import collate

    vocab = Vocab.shapes()
    inst = json.loads((small / "annotations" / "instances_val.json").read_text())
    stuff = json.loads((small / "annotations" / "stuff_val.json").read_text())
    ds = S.ShapesDataset(small, split="val", mask_size=16)
    assert len(ds) == 8  # every image kept
    for item in (ds[i] for i in range(len(ds))):
        iid = item["image_id"]
        things = [a for a in inst["annotations"] if a["image_id"] == iid]
        regions = [a for a in stuff["annotations"] if a["image_id"] == iid]
        objs = item["objs"].tolist()
        assert len(objs) == len(things) + len(regions) + 1 and objs[-1] == vocab.object_index("__image__")
        assert Counter(vocab.object_names[o] for o in objs[:-1]) == Counter(
            vocab.object_names[a["category_id"]] for a in things + regions)
        assert item["image"].shape == (3, 64, 64) and item["masks"].shape == (len(objs), 16, 16)
        assert item["boxes"].min() >= 0 and item["boxes"].max() <= 1
        assert item["caption"] in item["captions"] and len(item["captions"]) == 3
        descs = item["descriptions"]
        assert descs[-1] is None and all(isinstance(d, str) for d in descs[:-1])
        for o, d in zip(objs[:-1], descs[:-1]):
            assert vocab.object_names[o] in d or (vocab.object_names[o] == "wall" and "wall" in d)
    batch = collate([ds[0], ds[1]])
    assert batch.images.shape == (2, 3, 64, 64) and len(batch.descriptions) == batch.objs.numel()
    # the picture the loader returns is the PNG on disk
    png = np.asarray(Image.open(small / "images" / "val" / "000001.png"), np.float32)
    assert torch.allclose(ds[0]["image"], torch.from_numpy(png).permute(2, 0, 1) / 127.5 - 1, atol=1e-5)


def test_shapes_dataset_errors(tmp_path, small):
    with pytest.raises(Layout2ImgError, match="not a Shapes dataset"):
        S.ShapesDataset(tmp_path)
    with pytest.raises(DataError, match="split"):
        S.ShapesDataset(small, split="test")


def test_sample_grid_with_boxes_and_labels(small, tmp_path):
    """Save the picture a person looks at: samples beside their annotated layouts."""
    from layout2img.visualize import draw_layout, save_grid

    ds = S.ShapesDataset(small, split="train")
    rows = []
    for r in range(4):
        row = []
        for i in range(4 * r, 4 * r + 4):
            item = ds[i]
            things = [j for j, o in enumerate(item["objs"].tolist()) if 1 <= o <= len(SHAPES_THINGS)]
            labels = [item["descriptions"][j][item["descriptions"][j].index(" ") + 1:] for j in things]
            row += [item["image"], draw_layout(item["image"], item["boxes"][things], labels)]
        rows.append(row)
    path = save_grid(tmp_path / "shapes_grid.png", rows)
    grid = Image.open(path)
    assert grid.size[0] > 8 * 256 and grid.size[1] > 4 * 256
    assert len(np.unique(np.asarray(grid).reshape(-1, 3), axis=0)) > 1000
    artifacts = os.environ.get("LAYOUT2IMG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / "shapes_grid.png")
