"""benchmarks/fid_by_region.py: the regions it pastes are the annotated ones, and bad input is one line."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import fid_by_region  # noqa: E402  (benchmarks/fid_by_region.py)


def test_region_masks_are_the_annotated_pixels(tiny_shapes):
    from layout2img.data.coco_annotations import decode_segmentation
    from layout2img.data.shapes import ShapesDataset, shapes_paths

    masks = fid_by_region.region_masks(str(tiny_shapes), "val", 3, 32, ["things", "sky", "wall"])
    ids = ShapesDataset(str(tiny_shapes), "val").image_ids[:3]
    stuff = json.loads(shapes_paths(tiny_shapes, "val")["stuff_json"].read_text())
    things = json.loads(shapes_paths(tiny_shapes, "val")["instances_json"].read_text())
    for k, image_id in enumerate(ids):
        anns = [a for a in things["annotations"] if a["image_id"] == image_id]
        union = np.zeros((32, 32), bool)
        for a in anns:
            union |= decode_segmentation(a["segmentation"], 32, 32).astype(bool)
        assert np.array_equal(masks["things"][k], union) and union.any()
    # every pixel is a thing or some stuff; sky and wall never share a pixel
    everything = fid_by_region.region_masks(str(tiny_shapes), "val", 3, 32,
                                            ["things", "sky", "sea", "grass", "sand", "snow", "wall"])
    assert np.logical_or.reduce(list(everything.values())).mean() > 0.99
    assert not (masks["sky"] & masks["wall"]).any()
    assert len(stuff["annotations"]) > 0


def test_a_folder_without_fake_and_real_is_a_one_line_error(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fid_by_region.py"), "--images", str(tmp_path),
                          "--allow-busy"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "expected fake/ and real/ inside" in run.stderr
