"""`layout2img check-data`: every bad file of a run's dataset, one line each, from small broken datasets."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, tiny_overrides
from layout2img.cli import main
from layout2img.data.check import box_problem, rle_counts, segmentation_problem
from layout2img.errors import CHECK_HINT
from strategies import any_json

SHARED_COCO = REPO.parent / "shared" / "data" / "coco-tiny"


def _check(capsys, *args):
    rc = main(["check-data", "--no-progress", *args])
    out, err = capsys.readouterr()
    return rc, out.strip().splitlines(), err.strip().splitlines()


def _shapes_args(root: Path) -> list[str]:
    return ["--config", "shapes_64", f"data.root={root}", "data.prepare=null", "data.image_size=32"]


@pytest.fixture
def shapes_copy(tiny_shapes, tmp_path) -> Path:
    root = tmp_path / "shapes"
    shutil.copytree(tiny_shapes, root)
    return root


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_clean_dataset_is_one_summary_line_and_exit_0(tiny_shapes, capsys):
    rc, out, err = _check(capsys, *_shapes_args(tiny_shapes))
    assert rc == 0 and err == []
    assert len(out) == 1 and out[0].startswith("check-data: train 24 images, ") and "; val 8 images, " in out[0]
    assert out[0].endswith(".yaml)") and ": no problems (" in out[0] and "shapes_64" in out[0]


def test_every_bad_file_and_annotation_is_one_line_naming_it(shapes_copy, capsys):
    images, ann = shapes_copy / "images", shapes_copy / "annotations"
    truncated = images / "train" / "000002.png"
    truncated.write_bytes(truncated.read_bytes()[:120])
    (images / "train" / "000005.png").unlink()
    (images / "val" / "000001.png").write_bytes(b"not a png at all")

    def break_instances(d):
        d["annotations"][0]["bbox"] = [20.0, 4.0, 30.0, 8.0]  # x + w = 50 > 32
        d["annotations"][1]["category_id"] = 999
        d["annotations"][2]["image_id"] = 12345

    def break_stuff(d):
        d["annotations"][0]["segmentation"]["counts"] = "0"  # one run of 0 pixels, not 32 x 32
        d["annotations"][1]["segmentation"] = {"size": [32, 32], "counts": "~~~~"}

    _edit_json(ann / "instances_train.json", break_instances)
    _edit_json(ann / "stuff_train.json", break_stuff)
    with open(ann / "instances_train.json") as f:
        image_of = {a["id"]: a["image_id"] for a in json.load(f)["annotations"]}

    rc, out, err = _check(capsys, *_shapes_args(shapes_copy))
    assert rc == 2 and out == []
    inst, stuff = ann / "instances_train.json", ann / "stuff_train.json"
    expected = [
        f"{inst}: annotations[0] (image_id {image_of[1]}): bbox [20.0, 4.0, 30.0, 8.0] is outside the 32x32 image",
        f"{inst}: annotations[1] (image_id {image_of[2]}): unknown category_id 999 (not in 'categories')",
        f"{inst}: annotations[2]: image_id 12345 is not in 'images'",
    ]
    assert err[:3] == expected
    stuff_lines = [e for e in err if e.startswith(str(stuff))]
    assert len(stuff_lines) == 2
    assert stuff_lines[0].endswith("RLE counts cover 0 pixels, the image has 1024")
    assert stuff_lines[1].endswith("RLE counts are malformed")
    assert f"{truncated}: cannot read image (" in "\n".join(err)
    assert f"{images / 'train' / '000005.png'}: image file not found (image_id 5 of instances_train.json)" in err
    assert any(e.startswith(f"{images / 'val' / '000001.png'}: cannot read image (UnidentifiedImageError") for e in err)
    assert err[-1].startswith("check-data: train 24 images, ")
    assert "(7 problems); val 8 images, " in err[-1] and "(1 problem): 8 problems (" in err[-1]
    assert len(err) == 9  # 8 problems and the summary, nothing else


def test_missing_dataset_and_annotation_files_are_named(shapes_copy, tmp_path, capsys):
    rc, _, err = _check(capsys, *_shapes_args(tmp_path / "nowhere"))
    assert rc == 2 and err[0] == (f"{tmp_path / 'nowhere'}: no Shapes dataset here (no valid meta.json); "
                                  f"write one with `layout2img prepare shapes --out {tmp_path / 'nowhere'}`")
    (shapes_copy / "annotations" / "stuff_val.json").unlink()
    (shapes_copy / "annotations" / "captions_val.json").write_text("{not json")
    rc, _, err = _check(capsys, *_shapes_args(shapes_copy))
    val = shapes_copy / "annotations"
    assert rc == 2 and err[:2] == [f"{val / 'stuff_val.json'}: annotation JSON not found",
                                   f"{val / 'captions_val.json'}:1:2: malformed JSON in captions JSON: "
                                   "Expecting property name enclosed in double quotes"]


def test_training_stops_at_a_bad_image_and_points_at_check_data(shapes_copy, tmp_path, capsys):
    bad = shapes_copy / "images" / "train" / "000007.png"
    bad.write_bytes(bad.read_bytes()[:100])
    rc = main(["train", *tiny_overrides(shapes_copy, tmp_path / "run", max_steps=6, checkpoint_every=6,
                                        **{"data.prepare": "null"})])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"error: {bad}: cannot read image (") and lines[0].endswith(CHECK_HINT)


def test_coco_rle_counts_decode_like_pycocotools():
    from pycocotools import mask as mask_utils

    mask = np.zeros((7, 5), dtype=np.uint8, order="F")
    mask[1:5, 2:4] = 1
    rle = mask_utils.encode(mask)
    counts = rle["counts"].decode("ascii")
    runs = rle_counts(counts)
    pixels = np.repeat([i % 2 for i in range(len(runs))], runs)  # runs alternate 0s and 1s, column by column
    assert np.array_equal(pixels.reshape(5, 7).T, mask)
    big = np.zeros((300, 200), dtype=np.uint8, order="F")
    big[37:250, 11:190] = 1  # runs past 31 need several characters, and deltas from the run two back
    assert sum(rle_counts(mask_utils.encode(big)["counts"].decode("ascii"))) == 60000
    cut = counts[:-1] + chr(48 + ((ord(counts[-1]) - 48) | 0x20))  # the last run says "more follows"
    assert rle_counts(cut) is None and rle_counts(counts + " ") is None
    assert segmentation_problem({"size": [7, 5], "counts": counts}, 5, 7) is None
    assert segmentation_problem({"size": [5, 7], "counts": counts}, 5, 7) == "RLE size [5, 7] is not the image's [7, 5]"
    odd = "segmentation polygon 0 has an odd number of coordinates (5)"
    assert segmentation_problem([[1, 2, 3, 4, 5]], 5, 7) == odd
    assert segmentation_problem([[1, 2, float("nan"), 4, 5, 6]], 5, 7) == ("segmentation polygon 0 is not a list "
                                                                           "of numbers")


@settings(max_examples=80, deadline=None, database=None, derandomize=True)
@given(value=any_json | st.fixed_dictionaries({"size": st.just([4, 3]), "counts": st.text(max_size=12) | any_json}),
       text=st.text(max_size=30))
def test_any_annotation_value_is_a_problem_line_or_none_never_an_exception(value, text):
    for why in (segmentation_problem(value, 3, 4), box_problem(value, 3, 4)):
        assert why is None or (isinstance(why, str) and "\n" not in why)
    runs = rle_counts(text)
    assert runs is None or (runs.ndim == 1 and runs.dtype == np.int64)


@pytest.mark.skipif(not SHARED_COCO.exists(), reason="../shared/data/coco-tiny is absent (real COCO fixture)")
def test_real_coco_annotations_and_images_have_no_problems(capsys):
    rc, out, err = _check(capsys, "--config", "coco_64", f"data.root={SHARED_COCO}", "data.val=null",
                          "data.train.image_dir=${data.root}/train2017", "data.train.stuff_json=null",
                          "data.train.instances_json=${data.root}/annotations/instances_train2017.json",
                          "data.train.captions_json=${data.root}/annotations/captions_train2017.json")
    assert rc == 0 and err == []
    assert out[0].startswith("check-data: train 50 images, 720 annotations: no problems (")


def test_visual_genome_missing_image_box_outside_and_bad_relation(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("1.jpg", "2.jpg"):
        Image.new("RGB", (40, 30), "white").save(images / name)
    (images / "2.jpg").unlink()
    h5 = tmp_path / "train.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("image_ids", data=np.array([1, 2]))
        f.create_dataset("image_paths", data=np.array(["1.jpg", "2.jpg"], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("objects_per_image", data=np.array([2, 1]))
        f.create_dataset("object_names", data=np.array([[1, 2], [3, -1]]))
        # image 1: object 1 starts right of the 40 px wide image
        f.create_dataset("object_boxes", data=np.array([[[0, 0, 10, 10], [45, 5, 5, 5]], [[1, 1, 5, 5], [0, 0, 0, 0]]]))
        f.create_dataset("relationships_per_image", data=np.array([1, 0]))
        f.create_dataset("relationship_subjects", data=np.array([[0], [-1]]))
        f.create_dataset("relationship_predicates", data=np.array([[1], [-1]]))
        f.create_dataset("relationship_objects", data=np.array([[5], [-1]]))  # object 5 of a 2-object image
    rc, _, err = _check(capsys, "--config", "vg_64", "data.vocab=vg", f"data.image_dir={images}",
                        f"data.train.h5_path={h5}", "data.val=null")
    assert rc == 2
    assert err[:-1] == [
        f"{h5}: image 1 (index 0): object 1 box [45.0, 5.0, 5.0, 5.0] is outside the 40x30 image",
        f"{h5}: image 1 (index 0): relationship 0 joins objects 0 and 5; the image has 2",
        f"{images / '2.jpg'}: image file not found (image 2 of train.h5)",
    ]
    assert err[-1].startswith("check-data: train 2 images, 4 annotations (3 problems): 3 problems (")
    assert err[-1].endswith("vg_64.yaml)")  # the config it read
