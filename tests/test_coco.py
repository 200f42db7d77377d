"""CocoSceneGraphDataset: the sg2im / LostGAN protocol on real COCO annotations and on small
fixtures in the official COCO-Stuff stuff format. Expected values are computed here, from the
JSON, with plain python."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from layout2img.data import CocoSceneGraphDataset, collate
from layout2img.errors import ConfigError, DataError
from layout2img.relations import relation_holds
from layout2img.vocab import Vocab

TINY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-tiny"
COCO = Vocab.coco_stuff()
GEOMETRIC = {"left of", "right of", "above", "below", "inside", "surrounding"}


def make(*args, **kwargs) -> CocoSceneGraphDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the things-only notice; tested on its own
        return CocoSceneGraphDataset(*args, **kwargs)


# =============================================================================================
# Real annotations: ../shared/data/coco-tiny (50 train2017 images; no stuff JSON there)
# =============================================================================================
@pytest.fixture(scope="module")
def tiny():
    if not (TINY / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"real COCO data not found at {TINY} (CI has it; see shared/data/README.md)")
    instances = json.loads((TINY / "annotations" / "instances_train2017.json").read_text())
    captions = json.loads((TINY / "annotations" / "captions_train2017.json").read_text())
    return instances, captions


def tiny_dataset(**kwargs) -> CocoSceneGraphDataset:
    kwargs.setdefault("stuff_only", False)
    return make(TINY / "train2017", TINY / "annotations" / "instances_train2017.json", None,
                TINY / "annotations" / "captions_train2017.json", 32, **kwargs)


def expected_objects(instances, min_size=0.02, drop_crowd=False):
    """image id -> its annotations that pass the object filters, in file order."""
    sizes = {im["id"]: im["width"] * im["height"] for im in instances["images"]}
    per_image = {im["id"]: [] for im in instances["images"]}
    for a in instances["annotations"]:
        if drop_crowd and a["iscrowd"]:
            continue
        if a["bbox"][2] * a["bbox"][3] / sizes[a["image_id"]] > min_size:
            per_image[a["image_id"]].append(a)
    return per_image


def test_real_kept_images_and_object_counts(tiny):
    instances, _ = tiny
    per_image = expected_objects(instances)
    expected = [im["id"] for im in instances["images"] if 3 <= len(per_image[im["id"]]) <= 8]
    ds = tiny_dataset()
    assert len(expected) > 10  # the fixture is meaningful
    assert ds.image_ids == expected
    assert len(ds) == len(expected)
    for i in range(len(ds)):
        item = ds[i]
        anns = per_image[item["image_id"]]
        assert item["objs"].shape == (len(anns) + 1,)
        names = [ds.vocab.object_names[k] for k in item["objs"].tolist()]
        cat_names = {c["id"]: c["name"] for c in instances["categories"]}
        assert names == [cat_names[a["category_id"]] for a in anns] + ["__image__"]
    s = ds.stats()
    counts = [len(per_image[im["id"]]) for im in instances["images"]]
    assert s["images"] == 50
    assert s["dropped_too_few_objects"] == sum(c < 3 for c in counts)
    assert s["dropped_too_many_objects"] == sum(c > 8 for c in counts)
    assert s["kept"] == len(expected)
    assert s["annotations"] == len(instances["annotations"])
    assert s["objects_dropped_small"] == len(instances["annotations"]) - sum(counts)
    assert s["objects_kept"] == sum(len(per_image[i]) for i in expected)
    assert f"dropped too few objects: {s['dropped_too_few_objects']}" in repr(ds)


def test_real_item_tensors(tiny):
    instances, _ = tiny
    per_image = expected_objects(instances)
    images = {im["id"]: im for im in instances["images"]}
    ds = tiny_dataset(mask_size=16)
    for i in range(len(ds)):
        item = ds[i]
        n = item["objs"].numel()
        img = item["image"]
        assert img.shape == (3, 32, 32) and img.dtype == torch.float32
        assert img.min() >= -1 and img.max() <= 1 and img.std() > 0.05
        assert item["boxes"].shape == (n, 4) and item["masks"].shape == (n, 16, 16)
        assert set(item["masks"].unique().tolist()) <= {0.0, 1.0}
        # __image__ last: whole-image box, full mask
        assert item["objs"][-1] == 0 and (item["objs"][:-1] > 0).all()
        assert item["boxes"][-1].tolist() == [0, 0, 1, 1] and item["masks"][-1].all()
        im = images[item["image_id"]]
        for k, a in enumerate(per_image[item["image_id"]]):
            x, y, w, h = a["bbox"]
            want = [x / im["width"], y / im["height"], (x + w) / im["width"], (y + h) / im["height"]]
            assert item["boxes"][k].tolist() == pytest.approx(want, abs=1e-5)
            mask = item["masks"][k]
            assert mask.sum() > 0, f"empty mask for annotation {a['id']}"
            # the box-cropped mask covers about as much of its box as the annotation's area says
            assert float(mask.mean()) == pytest.approx(a["area"] / (w * h), abs=0.1)
        assert item["descriptions"] == [None] * n


def test_real_triples_are_valid_sg2im_graphs(tiny):
    ds = tiny_dataset()
    preds = ds.vocab.predicate_names
    for i in range(len(ds)):
        item = ds[i]
        n = item["objs"].numel()
        real = n - 1
        t = item["triples"]
        assert t.dtype == torch.long and t.shape == (2 * real, 3)  # one relation + one __in_image__ each
        relations, in_image = t[:real], t[real:]
        assert in_image.tolist() == [[k, 0, real] for k in range(real)]
        for s, p, o in relations.tolist():
            assert 0 <= s < real and 0 <= o < real and s != o
            assert preds[p] in GEOMETRIC
            # the predicate matches the geometry (centroids computed here from the masks)
            centers = []
            for k in (s, o):
                m, (x0, y0, x1, y1) = item["masks"][k], item["boxes"][k].tolist()
                ys, xs = torch.nonzero(m, as_tuple=True)
                c = ((xs.float().mean() + 0.5) / 16, (ys.float().mean() + 0.5) / 16)
                centers.append((x0 + float(c[0]) * (x1 - x0), y0 + float(c[1]) * (y1 - y0)))
            assert relation_holds(preds[p], item["boxes"][s].tolist(), item["boxes"][o].tolist(), *centers)
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape == (4, 3, 32, 32)
    assert batch.masks.shape[0] == batch.objs.numel() == batch.boxes.shape[0]


def test_real_captions_come_from_the_captions_file(tiny):
    _, captions = tiny
    by_image = {}
    for a in captions["annotations"]:
        by_image.setdefault(a["image_id"], []).append(" ".join(a["caption"].split()))
    ds = tiny_dataset()
    for i in range(len(ds)):
        item = ds[i]
        assert item["captions"] == by_image[item["image_id"]]
        assert item["caption"] in by_image[item["image_id"]]


def test_real_sampling_is_deterministic_and_varies_with_epoch(tiny):
    a, b = tiny_dataset(seed=3), tiny_dataset(seed=3)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["triples"], y["triples"]) and x["caption"] == y["caption"]
        assert torch.equal(x["image"], a[i]["image"])
    def draw(ds, epoch):
        ds.set_epoch(epoch)
        return [(ds[i]["triples"].tolist(), ds[i]["caption"]) for i in range(len(ds))]
    e0, e1 = draw(a, 0), draw(a, 1)
    assert e0 != e1
    assert draw(a, 0) == e0  # back to epoch 0: the same graphs again
    assert draw(tiny_dataset(seed=4), 0) != e0


def test_real_drop_crowd_lostgan_mode(tiny):
    instances, _ = tiny
    per_image = expected_objects(instances, drop_crowd=True)
    expected = [im["id"] for im in instances["images"] if 3 <= len(per_image[im["id"]]) <= 8]
    ds = tiny_dataset(drop_crowd=True)
    assert ds.image_ids == expected
    assert ds.image_ids != tiny_dataset().image_ids  # crowd regions matter on this data
    assert ds.stats()["objects_dropped_crowd"] == sum(a["iscrowd"] for a in instances["annotations"])
    for i in range(len(ds)):
        assert ds[i]["objs"].numel() == len(per_image[ds.image_ids[i]]) + 1


def test_real_crowd_rle_masks_decode(tiny):
    instances, _ = tiny
    crowd = [a for a in instances["annotations"] if a["iscrowd"]]
    ds = tiny_dataset()
    found = 0
    for a in crowd:
        if a["image_id"] not in ds.image_ids:
            continue
        item = ds[ds.image_ids.index(a["image_id"])]
        k = expected_objects(instances)[a["image_id"]].index(a)
        x, y, w, h = a["bbox"]
        assert float(item["masks"][k].mean()) == pytest.approx(a["area"] / (w * h), abs=0.1)
        found += 1
    assert found >= 2


def test_real_split_and_id_list(tiny, tmp_path):
    full = tiny_dataset()
    ids = sorted(full.image_ids)
    val, test = tiny_dataset(split="val", val_size=5), tiny_dataset(split="test", val_size=5)
    assert sorted(val.image_ids) == ids[:5]
    assert sorted(test.image_ids) == ids[5:]
    assert val.stats()["dropped_by_split"] == len(ids) - 5
    id_file = tmp_path / "ids.txt"
    id_file.write_text(f"# challenge ids\n{ids[0]}\n{ids[3]:012d}\n\n{ids[4]:012d}.jpg\n")
    sub = tiny_dataset(image_ids_file=id_file)
    assert sorted(sub.image_ids) == [ids[0], ids[3], ids[4]]
    assert sub.stats()["dropped_not_in_id_list"] == 50 - 3
    assert len(tiny_dataset(max_samples=4)) == 4


# =============================================================================================
# Fixtures in the official COCO-Stuff format (written here, in tmp_path)
# =============================================================================================
W, H = 64, 48  # every fixture image; 2% of it is 61.44 px²


def rect(x, y, w, h):
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 1
    return m


def polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as in stuff_*2017.json


def uncompressed_rle(mask):
    """Crowd-style RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def stuff_id(name):
    return COCO.object_index(name)  # COCO-Stuff category id == index in labels.txt


# image 101: things person, dog, a small car (dropped) and a crowd region; stuff sky, grass, other
# image 102: three things, no stuff annotation at all
# image 103: nine objects (too many for max_objects=8), one of them "other"
THINGS = [  # (id, image, category, x, y, w, h, crowd)
    (1, 101, 1, 4, 20, 10, 20, False),    # person 200 px²
    (2, 101, 18, 30, 22, 16, 12, False),  # dog 192
    (3, 101, 3, 50, 40, 6, 6, False),     # car 36 -> small
    (4, 101, 1, 16, 18, 12, 10, True),    # crowd of people 120
    (5, 102, 1, 0, 0, 20, 20, False),
    (6, 102, 18, 20, 0, 20, 20, False),
    (7, 102, 3, 40, 0, 20, 20, False),
    (8, 103, 1, 0, 0, 16, 16, False),
    (9, 103, 18, 16, 0, 16, 16, False),
    (10, 103, 3, 32, 0, 16, 16, False),
    (11, 103, 1, 48, 0, 16, 16, False),
]
STUFF = [  # (id, image, name, mask)
    (21, 101, "sky-other", rect(0, 0, 64, 16)),
    (22, 101, "grass", rect(0, 36, 64, 12)),
    (23, 101, "other", rect(40, 16, 20, 10)),
    (31, 103, "sky-other", rect(0, 16, 64, 8)),
    (32, 103, "grass", rect(0, 24, 64, 8)),
    (33, 103, "sea", rect(0, 32, 32, 16)),
    (34, 103, "sand", rect(32, 32, 32, 8)),
    (35, 103, "wall-concrete", rect(32, 40, 8, 8) | rect(56, 40, 8, 8)),  # two blocks, one box
    (36, 103, "other", rect(40, 40, 16, 8)),
]
COLORS = {101: (255, 0, 0), 102: (0, 255, 0), 103: (0, 0, 255)}


def write_fixture(root: Path, captions: bool = True) -> dict:
    """Write images, instances, stuff and captions JSON under ``root``; return their paths."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in (103, 101, 102):  # not sorted: the dataset keeps file order, splits sort
        name = f"{image_id:012d}.png"
        Image.new("RGB", (W, H), COLORS[image_id]).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
    thing_cats = [{"id": 1, "name": "person", "supercategory": "person"},
                  {"id": 3, "name": "car", "supercategory": "vehicle"},
                  {"id": 18, "name": "dog", "supercategory": "animal"}]
    anns = []
    for ann_id, image_id, cat, x, y, w, h, crowd in THINGS:
        seg = uncompressed_rle(rect(x, y, w, h)) if crowd else polygon(x, y, w, h)
        anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                     "area": w * h, "iscrowd": int(crowd), "segmentation": seg})
    instances = {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": thing_cats}
    stuff_cats = [{"id": i, "name": COCO.object_names[i], "supercategory": "stuff"} for i in range(92, 183)]
    stuff_cats.append({"id": 183, "name": "other", "supercategory": "other"})
    stuff_anns = []
    for ann_id, image_id, name, mask in STUFF:
        cid = 183 if name == "other" else stuff_id(name)
        rle = compressed_rle(mask)
        x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).tolist()
        stuff_anns.append({"id": ann_id, "image_id": image_id, "category_id": cid, "bbox": [x, y, w, h],
                           "area": float(mask.sum()), "iscrowd": 0, "segmentation": rle})
    stuff = {"info": {}, "licenses": [], "images": images, "annotations": stuff_anns, "categories": stuff_cats}
    paths = {"image_dir": root / "images", "instances_json": root / "instances.json",
             "stuff_json": root / "stuff.json", "captions_json": None}
    paths["instances_json"].write_text(json.dumps(instances))
    paths["stuff_json"].write_text(json.dumps(stuff))
    if captions:
        caps = {"images": images, "annotations": [
            {"id": 1, "image_id": 101, "caption": "A person and a dog under a blue sky. "},
            {"id": 2, "image_id": 101, "caption": "A dog\nplays in the grass."},
            {"id": 3, "image_id": 102, "caption": "Three things."},
        ]}
        paths["captions_json"] = root / "captions.json"
        paths["captions_json"].write_text(json.dumps(caps))
    return paths


@pytest.fixture
def fx(tmp_path):
    return write_fixture(tmp_path)


def stuff_dataset(fx, **kwargs):
    kwargs.setdefault("image_size", 32)
    return CocoSceneGraphDataset(**fx, **kwargs)


def names_of(ds, item):
    return [ds.vocab.object_names[k] for k in item["objs"].tolist()]


def test_stuff_default_protocol(fx):
    ds = stuff_dataset(fx)
    assert ds.vocab is Vocab.coco_stuff()
    assert ds.image_ids == [101]  # 102 has no stuff; 103 keeps 9 objects (its "other" goes)
    s = ds.stats()
    assert (s["images"], s["dropped_no_stuff"], s["dropped_too_many_objects"], s["kept"]) == (3, 1, 1, 1)
    assert s["objects_dropped_small"] == 1 and s["objects_dropped_other"] == 2
    assert "dropped no stuff: 1" in repr(ds)
    item = ds[0]
    assert names_of(ds, item) == ["person", "dog", "person", "sky-other", "grass", "__image__"]
    assert item["objs"][:-1].tolist() == [1, 18, 1, stuff_id("sky-other"), stuff_id("grass")]
    assert item["boxes"][3].tolist() == pytest.approx([0, 0, 1, 16 / 48])
    assert item["boxes"][4].tolist() == pytest.approx([0, 36 / 48, 1, 1])
    assert item["masks"][:-1].sum(dim=(1, 2)).tolist() == [256] * 5  # rectangles fill their boxes
    red = item["image"]  # solid red, resized to a square
    assert red.shape == (3, 32, 32)
    assert torch.allclose(red[0], torch.ones(32, 32)) and torch.allclose(red[1:], -torch.ones(2, 32, 32))
    assert item["caption"] in ("A person and a dog under a blue sky.", "A dog plays in the grass.")
    assert len(item["triples"]) == 10


def test_things_only_notice(fx):
    with pytest.warns(UserWarning, match="stuff_json=None, so things only"):
        ds = CocoSceneGraphDataset(fx["image_dir"], fx["instances_json"], image_size=16)
    assert ds.image_ids == [103, 101, 102]  # stuff_only does not apply without a stuff JSON
    assert [ds[i]["objs"].numel() - 1 for i in range(3)] == [4, 3, 3]
    assert "(things only)" in repr(ds)


def test_stuff_only_off_keeps_images_without_stuff(fx):
    ds = stuff_dataset(fx, stuff_only=False)
    assert ds.image_ids == [101, 102]  # file order
    item = ds[1]
    assert names_of(ds, item) == ["person", "dog", "car", "__image__"]
    assert item["caption"] == "Three things."


def test_include_other_and_max_objects(fx):
    ds = stuff_dataset(fx, include_other=True)
    assert ds.vocab.object_names[183] == "other"
    assert ds.image_ids == [101]
    assert names_of(ds, ds[0])[-2:] == ["other", "__image__"]
    assert ds.stats()["dropped_too_many_objects"] == 1  # 103 now has 10 objects
    ds = stuff_dataset(fx, max_objects=9)
    assert ds.image_ids == [103, 101]
    item = ds[0]
    assert item["objs"].numel() == 10  # max_objects counts real objects; __image__ comes on top
    assert item["caption"] is None and item["captions"] == []
    wall = names_of(ds, item).index("wall-concrete")
    m = item["masks"][wall]  # two 8 px blocks at the ends of a 32 px box: a gap in the middle
    assert m[:, :4].all() and m[:, -4:].all() and not m[:, 5:11].any()
    assert stuff_dataset(fx, max_objects=9, include_other=True).image_ids == [101]


def test_min_object_size_and_min_objects(fx):
    # boxes > 10% (307 px²): 101 keeps sky and grass; 103 keeps sky, grass and sea (256 px² things go)
    ds = stuff_dataset(fx, min_object_size=0.1, min_objects=2)
    assert ds.image_ids == [103, 101]
    assert names_of(ds, ds[0]) == ["sky-other", "grass", "sea", "__image__"]
    assert names_of(ds, ds[1]) == ["sky-other", "grass", "__image__"]
    assert ds.stats()["objects_dropped_small"] == 4 + 6  # 101: all 4 things; 103: 4 things, sand, wall
    assert stuff_dataset(fx, min_object_size=0.1).image_ids == [103]
    assert stuff_dataset(fx, min_object_size=0.0).stats()["objects_dropped_small"] == 0


def test_drop_crowd(fx):
    ds = stuff_dataset(fx, drop_crowd=True)
    assert names_of(ds, ds[0]) == ["person", "dog", "sky-other", "grass", "__image__"]
    assert ds.stats()["objects_dropped_crowd"] == 1


def test_whitelists(fx):
    ds = stuff_dataset(fx, instance_whitelist=["dog"], stuff_whitelist=["sky-other", "grass"])
    assert ds.image_ids == [103, 101]
    assert names_of(ds, ds[0]) == names_of(ds, ds[1]) == ["dog", "sky-other", "grass", "__image__"]
    assert ds.stats()["objects_dropped_not_whitelisted"] == 8 + 3  # persons and cars; sea, sand, wall
    with pytest.raises(ConfigError, match=r"instance_whitelist: 'dgo' .*did you mean 'dog'"):
        stuff_dataset(fx, instance_whitelist=["dgo"])


def test_image_id_list_and_split(fx, tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text("[103, 102]")
    ds = stuff_dataset(fx, stuff_only=False, max_objects=9, image_ids_file=ids)
    assert ds.image_ids == [103, 102]
    assert ds.stats()["dropped_not_in_id_list"] == 1
    kw = dict(stuff_only=False, max_objects=9, val_size=2)
    assert stuff_dataset(fx, **kw, split="val").image_ids == [101, 102]  # lowest ids, file order
    assert stuff_dataset(fx, **kw, split="test").image_ids == [103]
    assert len(stuff_dataset(fx, **kw, max_samples=1)) == 1
    with pytest.raises(ConfigError, match="split"):
        stuff_dataset(fx, split="train")
    (tmp_path / "bad.txt").write_text("101\nbanana\n")
    with pytest.raises(DataError, match=r"bad.txt:2: 'banana'"):
        stuff_dataset(fx, image_ids_file=tmp_path / "bad.txt")


def test_items_collate(fx):
    ds = stuff_dataset(fx, stuff_only=False, max_objects=9, include_relationships=False)
    items = [ds[i] for i in range(len(ds))]
    assert all(len(it["triples"]) == it["objs"].numel() - 1 for it in items)  # only __in_image__
    batch = collate(items)
    assert batch.images.shape == (3, 3, 32, 32)
    assert batch.obj_to_img.tolist() == [0] * 10 + [1] * 6 + [2] * 4


# -- datasets with their own categories ------------------------------------------------------
def write_shapes_json(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (W, H), (10, 20, 30)).save(root / "img" / "1.png")
    cats = [{"id": 7, "name": "sky"}, {"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    anns = [{"id": k, "image_id": 1, "category_id": c, "bbox": [x, 0, 20, 20], "iscrowd": 0,
             "segmentation": polygon(x, 0, 20, 20)} for k, (c, x) in enumerate([(1, 0), (2, 20), (7, 40)])]
    path = root / "shapes.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.png", "width": W, "height": H}],
                                "annotations": anns, "categories": cats}))
    return path


def test_own_categories_build_a_vocab(tmp_path):
    path = write_shapes_json(tmp_path)
    ds = make(tmp_path / "img", path, image_size=16)
    assert ds.vocab.object_names == ("__image__", "circle", "square", "sky")  # sorted by category id
    assert ds[0]["objs"].tolist() == [1, 2, 3, 0]
    shapes = Vocab.shapes()
    ds = make(tmp_path / "img", path, image_size=16, vocab=shapes)  # mapped by name
    assert ds.vocab is shapes
    assert ds[0]["objs"].tolist() == [shapes.object_index(n) for n in ("circle", "square", "sky", "__image__")]


# -- errors ----------------------------------------------------------------------------------
def test_unknown_category_with_custom_vocab(fx):
    with pytest.raises(DataError, match=r"instances.json: category 1 'person' is not in vocabulary 'shapes'"):
        stuff_dataset(fx, vocab=Vocab.shapes())


def test_missing_files_and_folders(fx, tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: instances JSON not found"):
        stuff_dataset({**fx, "instances_json": tmp_path / "nope.json"})
    with pytest.raises(DataError, match=r"stuff JSON not found"):
        stuff_dataset({**fx, "stuff_json": tmp_path / "nope.json"})
    with pytest.raises(DataError, match=r"captions JSON not found"):
        stuff_dataset({**fx, "captions_json": tmp_path / "nope.json"})
    with pytest.raises(DataError, match=r"missing_dir: image folder not found"):
        stuff_dataset({**fx, "image_dir": tmp_path / "missing_dir"})
    with pytest.raises(DataError, match=r"ids.txt: image id list not found"):
        stuff_dataset(fx, image_ids_file=tmp_path / "ids.txt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"000000000101.png: image file not found .*image_dir"):
        stuff_dataset({**fx, "image_dir": tmp_path / "empty_dir"})


def test_malformed_json(fx, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(DataError, match=r"bad.json:1:\d+: malformed JSON"):
        stuff_dataset({**fx, "instances_json": bad})
    data = json.loads(fx["instances_json"].read_text())
    del data["annotations"]
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json: the top level has no 'annotations'"):
        stuff_dataset({**fx, "instances_json": bad})
    data = json.loads(fx["stuff_json"].read_text())
    del data["annotations"][1]["bbox"]
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad.json: annotations\[1\] has no 'bbox'"):
        stuff_dataset({**fx, "stuff_json": bad})
    data["annotations"][1]["bbox"], data["annotations"][1]["image_id"] = [0, 0, 1, 1], 999
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\[1\] refers to image_id 999"):
        stuff_dataset({**fx, "stuff_json": bad})


def test_unreadable_image(fx):
    ds = stuff_dataset(fx)
    (fx["image_dir"] / "000000000101.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"000000000101.png: cannot read image"):
        ds[0]
    (fx["image_dir"] / "000000000101.png").unlink()
    with pytest.raises(DataError, match=r"000000000101.png: image file not found"):
        ds[0]
    with pytest.raises(IndexError):
        ds[1]


def test_bad_knobs(fx):
    with pytest.raises(ConfigError, match="min_objects"):
        stuff_dataset(fx, min_objects=5, max_objects=3)
    with pytest.raises(ConfigError, match="image_size"):
        stuff_dataset(fx, image_size=0)
    with pytest.raises(ConfigError, match="min_object_size"):
        stuff_dataset(fx, min_object_size=1.5)
