"""Visual Genome: ``layout2img prepare vg`` (layout2img/data/prepare_vg.py: official VG JSON -> HDF5 +
vocab.json; datasets/prepare_vg.py runs the same command) and VisualGenomeDataset.

The fixture is a tiny VG in the official file formats. Expected outputs below are worked out by hand
from it (thresholds: 3 object / 2 attribute / 2 predicate instances, objects >= 8 px, images >= 50 px):

train images 1-6 (5 is too small), val 7, test 8 and 9.
object counts over train images 1-4, 6:  man 7 (with aliases 'men', 'guy'), tree 6, shirt 4, fence 3,
    dog 2 (4 if the small image 5 were counted), cat 1 (3 with image 5), bench 0 (3 in val)
    -> objects: __image__, man, tree, shirt, fence
predicate counts (both ends kept): wearing 3, behind 3 (one in image 4, later dropped), on 2 (one is
    'On Top Of' -> alias), near 1 (2 with test), next to 1, holding 1
    -> predicates: __in_image__, behind, wearing, on
attribute counts: tall 3, white 3, green 2, wooden 2, smiling 1, striped 1, blue 1 (3 with images 5, 7)
    -> attributes: tall, white, green, wooden
"""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from layout2img.cli import main as cli_main
from layout2img.commands.prepare import VG_DEFAULTS
from layout2img.data import prepare_vg
from layout2img.data.batch import collate
from layout2img.data.vg import VisualGenomeDataset
from layout2img.errors import DataError
from layout2img.vocab import Vocab


THRESHOLDS = dict(min_object_instances=3, min_attribute_instances=2, min_relationship_instances=2,
                  min_object_size=8, min_objects=3, max_objects=6, max_relationships=4,
                  max_attributes_per_object=3, image_size_min=50, progress=False)
SPLITS = {"train": [1, 2, 3, 4, 5, 6], "val": [7], "test": [8, 9]}

# image id -> (width, height)
IMAGES = {1: (100, 80), 2: (90, 90), 3: (120, 100), 4: (80, 80), 5: (40, 100), 6: (100, 100),
          7: (100, 100), 8: (100, 100), 9: (100, 100)}
# image id -> [(object id, names, x, y, w, h)]
OBJECTS = {
    1: [(101, ["man"], 10, 10, 30, 50), (102, ["shirt"], 12, 20, 20, 15), (103, ["tree"], 60, 0, 35, 70),
        (104, ["dog"], 40, 40, 20, 20), (105, ["guy"], 70, 30, 10, 40),
        (106, ["man"], 0, 0, 5, 30)],  # too narrow
    2: [(201, ["men"], 5, 5, 30, 60), (202, ["shirt"], 10, 20, 20, 20), (203, ["tree"], 50, 10, 30, 70),
        (204, ["fence"], 0, 70, 90, 20), (205, ["tree"], 0, 0, 40, 6)],  # 205 too low
    3: [(301, ["shirt"], 10, 10, 20, 20), (302, ["tree"], 40, 0, 30, 80), (303, ["fence"], 0, 60, 120, 40),
        (304, ["fence"], 60, 60, 60, 40), (305, ["dog", "man"], 80, 10, 30, 40)],  # first name in vocab: man
    4: [(401, ["man"], 0, 0, 40, 40), (402, ["tree"], 40, 0, 40, 80), (403, ["cat"], 10, 10, 20, 20)],
    5: [(501, ["dog"], 0, 0, 20, 20), (502, ["dog"], 10, 10, 20, 20), (503, ["cat"], 0, 50, 20, 20),
        (504, ["cat"], 10, 60, 20, 20)],
    6: [(601, ["man"], 0, 0, 30, 30), (602, ["tree"], 40, 0, 30, 30), (603, ["shirt"], 0, 40, 30, 30)],
    7: [(701, ["man"], 10, 10, 30, 60), (702, ["shirt"], 15, 25, 20, 20), (703, ["tree"], 60, 5, 30, 80),
        (704, ["bench"], 0, 80, 30, 15), (705, ["bench"], 30, 80, 30, 15), (706, ["bench"], 60, 80, 30, 15)],
    8: [(801, ["man"], 0, 0, 30, 30), (802, ["tree"], 40, 0, 30, 30), (803, ["fence"], 0, 40, 30, 30)],
    9: [(901, ["man"], 0, 0, 30, 30), (902, ["tree"], 40, 0, 30, 30), (903, ["shirt"], 0, 40, 30, 30)],
}
# image id -> [(relationship id, subject id, predicate as written, object id)]
RELATIONSHIPS = {
    1: [(1001, 101, "WEARING ", 102), (1002, 103, "behind", 104), (1003, 105, "On Top Of", 103),
        (1004, 106, "near", 101)],
    2: [(2001, 201, "wearing", 202), (2002, 203, "behind", 204), (2003, 201, "on", 204), (2004, 202, "near", 203)],
    3: [(3001, 302, "behind", 303), (3002, 305, "wearing", 301), (3003, 303, "next to", 304)],
    4: [(4001, 401, "behind", 402)],
    5: [(5001, 501, "chasing", 502)],
    6: [(6001, 601, "holding", 603)],
    7: [(7001, 701, "WEARING", 702)],
    8: [(8001, 801, "Behind", 802)],
    9: [(9001, 901, "near", 902)],
}
# image id -> {object id: attributes (None: the entry has no 'attributes' key)}
ATTRIBUTES = {
    1: {101: ["tall", "smiling"], 102: ["white"], 103: ["green", "tall"], 104: ["white"]},
    2: {201: ["tall"], 202: ["white", "striped"], 203: ["green"]},
    3: {301: ["blue"], 302: None, 303: ["wooden"], 304: ["wooden"]},
    5: {501: ["blue"]},
    7: {702: ["blue"]},
}

OBJECT_NAMES = ["__image__", "man", "tree", "shirt", "fence"]
PREDICATE_NAMES = ["__in_image__", "behind", "wearing", "on"]
ATTRIBUTE_NAMES = ["tall", "white", "green", "wooden"]


def write_vg(root: Path) -> Path:
    """The fixture, in the official formats, plus an images folder like VG's (VG_100K/<id>.jpg)."""
    root.mkdir(parents=True, exist_ok=True)
    url = "https://cs.stanford.edu/people/rak248/VG_100K/{}.jpg"
    image_data = [{"width": w, "height": h, "url": url.format(i), "image_id": i, "coco_id": None,
                   "flickr_id": None} for i, (w, h) in IMAGES.items()]
    objects = [{"image_id": i, "image_url": url.format(i), "objects": [
        {"object_id": oid, "names": names, "x": x, "y": y, "w": w, "h": h, "synsets": []}
        for oid, names, x, y, w, h in objs]} for i, objs in OBJECTS.items()]
    box_of = {o[0]: o for objs in OBJECTS.values() for o in objs}

    def ref(oid):
        _, names, x, y, w, h = box_of[oid]
        return {"object_id": oid, "name": names[0], "x": x, "y": y, "w": w, "h": h, "synsets": []}

    relationships = [{"image_id": i, "relationships": [
        {"relationship_id": rid, "predicate": p, "subject": ref(s), "object": ref(o), "synsets": []}
        for rid, s, p, o in rels]} for i, rels in RELATIONSHIPS.items()]
    attributes = []
    for i in IMAGES:
        entries = []
        for oid, attrs in ATTRIBUTES.get(i, {}).items():
            entry = dict(ref(oid), names=box_of[oid][1])
            if attrs is not None:
                entry["attributes"] = attrs
            entries.append(entry)
        attributes.append({"image_id": i, "attributes": entries})
    for name, data in (("image_data", image_data), ("objects", objects), ("relationships", relationships),
                       ("attributes", attributes)):
        (root / f"{name}.json").write_text(json.dumps(data))
    (root / "object_alias.txt").write_text("man,men,guy\ntree,trees\n")
    (root / "relationship_alias.txt").write_text("on,on top of,on top\n")
    (root / "vg_splits.json").write_text(json.dumps(SPLITS))
    images = root / "images" / "VG_100K"
    images.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in IMAGES.items():
        ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
        Image.fromarray(ramp).save(images / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def vg(tmp_path_factory):
    root = write_vg(tmp_path_factory.mktemp("vg"))
    out = root / "out"
    summary = prepare_vg.prepare_visual_genome(root, out, splits_json=root / "vg_splits.json", **THRESHOLDS)
    return root, out, summary


def _h5(path):
    with h5py.File(path, "r") as f:
        data = {k: np.asarray(v) for k, v in f.items() if k != "image_paths"}
        data["image_paths"] = [p.decode() for p in f["image_paths"][()]]
        data["attrs"] = dict(f.attrs)
    return data


# -- preprocessing -----------------------------------------------------------------------------
def test_vocab_merges_aliases_drops_rare_names_and_counts_only_train_images(vg):
    _, out, summary = vg
    raw = json.loads((out / "vocab.json").read_text())
    assert raw["object_idx_to_name"] == OBJECT_NAMES
    assert raw["pred_idx_to_name"] == PREDICATE_NAMES
    assert raw["attribute_idx_to_name"] == ATTRIBUTE_NAMES
    assert raw["object_name_to_idx"]["fence"] == 4 and raw["pred_name_to_idx"]["on"] == 3
    vocab = Vocab.from_file(out / "vocab.json")
    assert vocab.object_names == tuple(OBJECT_NAMES) and vocab.attribute_names == tuple(ATTRIBUTE_NAMES)
    assert summary["vocab"] == {"objects": 5, "predicates": 4, "attributes": 4}


def test_train_h5_holds_the_filtered_objects_relationships_and_attributes(vg):
    _, out, summary = vg
    d = _h5(out / "train.h5")
    # image 4: 2 objects left; 5: 40 px wide; 6: its only relationship ('holding') is rare
    assert d["image_ids"].tolist() == [1, 2, 3]
    assert summary["splits"]["train"] == {"images": 3, "skipped": {
        "image_too_small": 1, "too_few_objects": 1, "too_few_relationships": 1}}
    assert d["image_paths"] == ["VG_100K/1.jpg", "VG_100K/2.jpg", "VG_100K/3.jpg"]
    assert d["image_widths"].tolist() == [100, 90, 120] and d["image_heights"].tolist() == [80, 90, 100]
    assert d["objects_per_image"].tolist() == [4, 4, 5]
    # 104 (dog: rare), 106 (5 px wide) and 205 (6 px high) are gone; 'guy' and 'men' became man (1)
    assert d["object_ids"].tolist() == [[101, 102, 103, 105, -1, -1], [201, 202, 203, 204, -1, -1],
                                        [301, 302, 303, 304, 305, -1]]
    assert d["object_names"].tolist() == [[1, 3, 2, 1, -1, -1], [1, 3, 2, 4, -1, -1], [3, 2, 4, 4, 1, -1]]
    assert d["object_boxes"].shape == (3, 6, 4)
    assert d["object_boxes"][0, :4].tolist() == [[10, 10, 30, 50], [12, 20, 20, 15], [60, 0, 35, 70],
                                                 [70, 30, 10, 40]]
    assert d["object_boxes"][0, 4].tolist() == [-1, -1, -1, -1]
    # 'WEARING ' -> wearing (2); 'On Top Of' -> alias on (3); the dog's and the small man's are gone
    assert d["relationships_per_image"].tolist() == [2, 3, 2]
    assert d["relationship_ids"].tolist() == [[1001, 1003, -1, -1], [2001, 2002, 2003, -1], [3001, 3002, -1, -1]]
    triples = np.stack([d["relationship_subjects"], d["relationship_predicates"], d["relationship_objects"]], -1)
    assert triples[0, :2].tolist() == [[0, 2, 1], [3, 3, 2]]
    assert triples[1, :3].tolist() == [[0, 2, 1], [2, 1, 3], [0, 3, 3]]
    assert triples[2, :2].tolist() == [[1, 1, 2], [4, 2, 0]]
    assert (triples[0, 2:] == -1).all()
    # attributes per object: tall 0, white 1, green 2, wooden 3; rare ones (smiling, striped, blue) gone
    assert d["object_attributes"].shape == (3, 6, 3)
    assert d["object_attributes"][0, :4].tolist() == [[0, -1, -1], [1, -1, -1], [2, 0, -1], [-1, -1, -1]]
    assert d["attributes_per_object"].tolist() == [[1, 1, 2, 0, -1, -1], [1, 1, 1, 0, -1, -1],
                                                   [0, 0, 1, 1, 0, -1]]
    assert d["attrs"]["min_object_size"] == 8 and d["attrs"]["split"] == "train"


def test_val_and_test_splits_normalise_predicates_and_drop_graphs_without_relationships(vg):
    _, out, summary = vg
    val, test = _h5(out / "val.h5"), _h5(out / "test.h5")
    assert val["image_ids"].tolist() == [7]
    assert val["object_names"][0, :3].tolist() == [1, 3, 2]  # the benches: not in the vocabulary
    assert val["relationship_predicates"][0, :1].tolist() == [2]  # 'WEARING' in val is wearing too
    assert test["image_ids"].tolist() == [8]  # 9: 'near' is not in the vocabulary, so no relationship
    assert test["relationship_predicates"][0, 0] == 1
    assert summary["splits"]["test"]["skipped"]["too_few_relationships"] == 1


def test_too_many_objects_or_relationships_drop_an_image(vg):
    root, _, _ = vg
    out = root / "tight"
    opts = dict(THRESHOLDS, max_objects=4, max_relationships=2)
    summary = prepare_vg.prepare_visual_genome(root, out, splits_json=root / "vg_splits.json", **opts)
    d = _h5(out / "train.h5")
    assert d["image_ids"].tolist() == [1]  # 2 has 3 relationships, 3 has 5 objects
    assert summary["splits"]["train"]["skipped"]["too_many_objects"] == 1
    assert summary["splits"]["train"]["skipped"]["too_many_relationships"] == 1
    assert d["object_names"].shape == (1, 4) and d["relationship_ids"].shape == (1, 2)


def test_seeded_split_without_a_splits_file(vg, tmp_path):
    root, _, _ = vg
    ids = list(IMAGES)
    a = prepare_vg.seeded_splits(ids, (0.5, 0.25, 0.25), seed=3)
    assert a == prepare_vg.seeded_splits(reversed(ids), (0.5, 0.25, 0.25), seed=3)
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ids)
    assert [len(a[s]) for s in ("train", "val", "test")] == [4, 2, 3]
    assert any(prepare_vg.seeded_splits(ids, (0.5, 0.25, 0.25), seed=s) != a for s in range(4, 8))
    loose = dict(THRESHOLDS, min_object_instances=1, min_attribute_instances=1, min_relationship_instances=1)
    prepare_vg.prepare_visual_genome(root, tmp_path / "o", split_fractions=(0.5, 0.25, 0.25), split_seed=3,
                                     **loose)
    for split in ("train", "val", "test"):
        kept = _h5(tmp_path / "o" / f"{split}.h5")["image_ids"].tolist()
        assert set(kept) <= set(a[split])
    assert _h5(tmp_path / "o" / "train.h5")["attrs"]["split_source"].startswith("seeded")


def test_cli_writes_outputs_and_reports_errors_in_one_line(vg, tmp_path, capsys):
    root, _, _ = vg
    argv = ["--vg-dir", str(root), "--out", str(tmp_path / "cli"), "--splits-json", str(root / "vg_splits.json"),
            "--min-object-instances", "3", "--min-attribute-instances", "2", "--min-relationship-instances", "2",
            "--min-object-size", "8", "--max-objects", "6", "--max-relationships", "4", "--image-size-min", "50",
            "--no-progress"]
    assert cli_main(["prepare", "vg", *argv]) == 0
    assert "train: 3 images" in capsys.readouterr().out
    assert _h5(tmp_path / "cli" / "train.h5")["image_ids"].tolist() == [1, 2, 3]
    assert cli_main(["prepare", "vg", "--vg-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "not found" in err


def test_cli_defaults_are_the_functions():
    """The parser keeps literal defaults (it must not import h5py): they must not drift from the library's."""
    import inspect

    params = inspect.signature(prepare_vg.prepare_visual_genome).parameters
    assert {k: params[k].default for k in VG_DEFAULTS} == {**VG_DEFAULTS, "split_fractions": (0.9, 0.05, 0.05)}


@pytest.mark.parametrize("file, edit, words", [
    ("objects.json", lambda d: d[1]["objects"][0].pop("x"), ["objects.json", "image 2", "'x'"]),
    ("relationships.json", lambda d: d[2]["relationships"][1].pop("predicate"),
     ["relationships.json", "image 3", "'predicate'"]),
    ("image_data.json", lambda d: d[3].pop("width"), ["image_data.json", "image 4", "'width'"]),
    ("attributes.json", lambda d: d[0]["attributes"][0].pop("object_id"),
     ["attributes.json", "image 1", "'object_id'"]),
])
def test_a_malformed_entry_names_file_image_and_key_and_writes_nothing(tmp_path, file, edit, words):
    root = write_vg(tmp_path / "vg")
    data = json.loads((root / file).read_text())
    edit(data)
    (root / file).write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        prepare_vg.prepare_visual_genome(root, tmp_path / "out", splits_json=root / "vg_splits.json", **THRESHOLDS)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_input_files_are_named(tmp_path):
    root = write_vg(tmp_path / "vg")
    (root / "relationship_alias.txt").unlink()
    with pytest.raises(DataError, match="relationship_alias.txt"):
        prepare_vg.prepare_visual_genome(root, tmp_path / "out", **THRESHOLDS)
    with pytest.raises(DataError, match="missing.json"):
        prepare_vg.load_splits(tmp_path / "missing.json", {})


# -- the dataset -------------------------------------------------------------------------------
def _dataset(vg, **kw):
    root, out, _ = vg
    return VisualGenomeDataset(out / "train.h5", out / "vocab.json", root / "images", **kw)


def test_item_layout_boxes_triples_caption_and_descriptions(vg):
    ds = _dataset(vg, image_size=32)
    assert len(ds) == 3 and ds.image_ids == [1, 2, 3]
    item = ds[0]  # image 1 (100 x 80): man, shirt, tree, guy->man; all of them in relationships
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() < -0.8 and 0.8 < item["image"].max() <= 1  # the ramp spans black..white
    assert item["objs"].tolist() == [1, 3, 2, 1, 0]
    assert torch.allclose(item["boxes"][0], torch.tensor([0.1, 0.125, 0.4, 0.75]))
    assert item["boxes"][-1].tolist() == [0, 0, 1, 1]
    assert item["triples"].tolist() == [[0, 2, 1], [3, 3, 2], [0, 0, 4], [1, 0, 4], [2, 0, 4], [3, 0, 4]]
    assert item["masks"].shape == (5, 16, 16) and bool((item["masks"] == 1).all()) and item["masks_are_boxes"]
    assert item["caption"] == "man wearing shirt, man on tree"
    assert item["descriptions"] == ["tall man", "white shirt", "green tall tree", None, None]
    assert item["attributes"] == [["tall"], ["white"], ["green", "tall"], [], []]
    assert item["image_id"] == 1
    assert _dataset(vg, max_samples=2).__len__() == 2


def test_related_objects_come_first_and_at_most_max_objects(vg):
    # image 3: objects 0, 1, 2, 4 take part in relationships; object 3 (fence 304) does not
    full = _dataset(vg)[2]
    assert full["objs"].tolist() == [3, 2, 4, 1, 4, 0]  # related ones, then the orphan, then __image__
    assert _dataset(vg, use_orphaned_objects=False)[2]["objs"].tolist() == [3, 2, 4, 1, 0]
    ds = _dataset(vg, max_objects=3)
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        chosen = ds.sample_objects(2)
        assert len(chosen) == 3 and 3 not in chosen and len(ds[2]["objs"]) == 4
        seen.add(tuple(chosen))
    assert len(seen) > 1  # each epoch draws its own subset
    ds = _dataset(vg, max_objects=4)
    assert all(ds.sample_objects(2) == [0, 1, 2, 4] for _ in range(3))  # all related ones fit: no orphan


def test_triples_only_join_sampled_objects_and_end_with_in_image(vg):
    ds = _dataset(vg, max_objects=2)
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[1]
        n = len(item["objs"])
        t = item["triples"]
        assert n == 3 and item["objs"][-1] == 0
        assert (t[:, [0, 2]] < n).all()
        assert t[-2:].tolist() == [[0, 0, 2], [1, 0, 2]]
        assert (t[:-2, 1] != 0).all()
    no_rels = _dataset(vg, include_relationships=False)[0]
    assert no_rels["triples"].tolist() == [[k, 0, 4] for k in range(4)]
    assert no_rels["caption"] == "man, shirt, tree"


def test_sampling_is_deterministic_per_seed_index_and_epoch(vg):
    a, b = _dataset(vg, max_objects=2, seed=7), _dataset(vg, max_objects=2, seed=7)
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x["objs"].tolist() == y["objs"].tolist() and torch.equal(x["boxes"], y["boxes"])
            assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
    draws = {tuple(_dataset(vg, max_objects=2, seed=s).sample_objects(2)) for s in range(8)}
    assert len(draws) > 1


def test_dataset_items_collate(vg):
    ds = _dataset(vg, image_size=32)
    batch = collate([ds[0], ds[2]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.masks.shape == (11, 16, 16)
    assert batch.obj_to_img.tolist() == [0] * 5 + [1] * 6
    assert batch.captions[0] == "man wearing shirt, man on tree" and len(batch.descriptions) == 11


def test_dataset_errors_name_the_path(vg, tmp_path):
    root, out, _ = vg
    with pytest.raises(DataError, match="nope.h5"):
        VisualGenomeDataset(tmp_path / "nope.h5", out / "vocab.json", root / "images")
    with pytest.raises(DataError, match="no_vocab.json"):
        VisualGenomeDataset(out / "train.h5", tmp_path / "no_vocab.json", root / "images")
    with pytest.raises(DataError, match="no_images"):
        VisualGenomeDataset(out / "train.h5", out / "vocab.json", tmp_path / "no_images")
    empty = tmp_path / "images"
    empty.mkdir()
    with pytest.raises(DataError, match=r"VG_100K/1\.jpg"):
        VisualGenomeDataset(out / "train.h5", out / "vocab.json", empty)[0]
    small = Vocab(["__image__", "man"], ["__in_image__", "behind"], name="small")
    with pytest.raises(DataError, match="another vocabulary: 5 objects"):
        VisualGenomeDataset(out / "train.h5", small, root / "images")


def test_prepare_with_sg2im_vocab_uses_its_indices_and_the_dataset_checks_the_vocab(vg, tmp_path):
    root, out, _ = vg
    sg2im = Vocab.visual_genome()
    prepare_vg.prepare_visual_genome(root, tmp_path / "o", splits_json=root / "vg_splits.json", vocab="vg",
                                     **THRESHOLDS)
    d = _h5(tmp_path / "o" / "train.h5")
    # nothing is counted: dog and cat are sg2im objects, 'near' and 'holding' sg2im predicates
    assert d["image_ids"].tolist() == [1, 2, 3, 4, 6]  # 4: man, tree, cat; 6: man holding shirt
    man, shirt, tree, dog = (sg2im.object_index(n) for n in ("man", "shirt", "tree", "dog"))
    assert d["object_names"][0, :5].tolist() == [man, shirt, tree, dog, man]
    assert d["relationship_predicates"][0, :3].tolist() == [sg2im.predicate_index(p)
                                                            for p in ("wearing", "behind", "on")]
    assert Vocab.from_file(tmp_path / "o" / "vocab.json").predicate_names == sg2im.predicate_names
    ds = VisualGenomeDataset(tmp_path / "o" / "train.h5", "vg", root / "images")
    assert ds[0]["caption"].startswith("man wearing shirt, tree behind dog")
    with pytest.raises(DataError, match="another vocabulary: its object 1 is 'window'"):
        VisualGenomeDataset(tmp_path / "o" / "train.h5", out / "vocab.json", root / "images")
    with pytest.raises(DataError, match="another vocabulary: its object 1 is 'man', vocabulary 'vg' has 'window'"):
        VisualGenomeDataset(out / "train.h5", sg2im, root / "images")


def test_reads_h5_files_written_by_sg2ims_script(vg, tmp_path):
    root, out, _ = vg
    mine = _h5(out / "train.h5")
    with h5py.File(tmp_path / "sg2im.h5", "w") as f:  # sg2im's layout: no attrs, flat object_attributes
        for key in ("image_ids", "object_ids", "object_names", "object_boxes", "objects_per_image",
                    "relationship_ids", "relationship_subjects", "relationship_predicates",
                    "relationship_objects", "relationships_per_image"):
            f.create_dataset(key, data=mine[key])
        f.create_dataset("object_attributes", data=mine["object_attributes"].reshape(-1, 3)[:13])
        f.create_dataset("image_paths", data=np.array(mine["image_paths"], dtype=object), dtype=h5py.string_dtype())
    item = VisualGenomeDataset(tmp_path / "sg2im.h5", out / "vocab.json", root / "images")[0]
    assert item["objs"].tolist() == [1, 3, 2, 1, 0] and item["caption"] == "man wearing shirt, man on tree"
    assert item["descriptions"] == [None] * 5 and item["attributes"] == [[]] * 5


# -- sg2im's real vocabulary -----------------------------------------------------------------------
def test_sg2im_visual_genome_vocab_builds_graphs_that_collate():
    vocab = Vocab.visual_genome()
    assert vocab.num_objects == 179 and vocab.num_predicates == 46 and len(vocab.attribute_names) == 80

    def item(graph):  # {"objects": [...], "relationships": [[s, p, o], ...]}, as a dataset item
        objs = [vocab.object_index(o) for o in graph["objects"]] + [0]
        n = len(objs)
        triples = [[s, vocab.predicate_index(p), o] for s, p, o in graph["relationships"]]
        triples += [[k, 0, n - 1] for k in range(n - 1)]
        return {"objs": torch.tensor(objs), "triples": torch.tensor(triples), "caption": None}

    a = item({"objects": ["man", "shirt", "tree", "fence"],
              "relationships": [[0, "wearing", 1], [2, "behind", 3]]})
    b = item({"objects": ["cloud", "sky"], "relationships": [[0, "in", 1]]})
    batch = collate([a, b])
    assert batch.objs.tolist() == [3, 4, 2, 36, 0, 21, 11, 0]
    assert batch.triples[:2].tolist() == [[0, vocab.predicate_index("wearing"), 1], [2, 19, 3]]
    assert batch.triples[6].tolist() == [5, vocab.predicate_index("in"), 6]
    assert batch.triples[-1].tolist() == [6, 0, 7]
    assert batch.obj_to_img.tolist() == [0] * 5 + [1] * 3 and not batch.boxes_known.any()
