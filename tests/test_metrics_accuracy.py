"""Object accuracy: crops, the classifier, its folder format and `layout2img train-classifier`."""
import json

import pytest
import torch

from conftest import tiny_overrides
from layout2img.cli import main
from layout2img.errors import CheckpointError
from layout2img.metrics.accuracy import (AccuracyCounter, ObjectClassifier, crop_objects, load_classifier,
                                         save_classifier)
from layout2img.vocab import Vocab


def test_crops_come_from_the_right_image_and_box():
    images = -torch.ones(2, 3, 32, 32)
    images[0, 0, 8:16, 16:32] = 1.0   # image 0: a red block in the top right
    images[1, 2, 0:16, 0:16] = 1.0    # image 1: a blue block in the top left
    boxes = torch.tensor([[0.5, 0.25, 1.0, 0.5], [0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 0.5]])
    crops = crop_objects(images, boxes, torch.tensor([0, 1, 1]), 8)
    assert crops.shape == (3, 3, 8, 8)
    inner = (slice(1, -1), slice(1, -1))  # bilinear sampling softens the outermost ring
    assert torch.allclose(crops[0, 0][inner], torch.ones(6, 6)) and (crops[0, 0] >= 0.5).all()
    assert torch.allclose(crops[0, 1:], -torch.ones(2, 8, 8))
    assert torch.allclose(crops[1, 2][inner], torch.ones(6, 6)) and (crops[1, 2] >= 0.5).all()
    assert torch.allclose(crops[1, :2], -torch.ones(2, 8, 8))
    assert torch.allclose(crops[2], -torch.ones(3, 8, 8))  # image 1 has nothing there


def test_classifier_never_predicts_image_object_and_counts_accuracy():
    torch.manual_seed(0)
    model = ObjectClassifier(num_classes=6, crop_size=16, width=4).eval()
    logits = model(torch.randn(5, 3, 16, 16))
    assert logits.shape == (5, 6) and torch.isinf(logits[:, 0]).all() and (logits.argmax(1) != 0).all()
    counter = AccuracyCounter()
    counter.update(torch.tensor([[0.0, 1, 0], [0, 0, 1], [0, 1, 0]]), torch.tensor([1, 2, 2]))
    counter.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert counter.result() == {"top1": pytest.approx(2 / 3), "num_objects": 3}


def test_classifier_folder_round_trip(tmp_path):
    model = ObjectClassifier(num_classes=Vocab.shapes().num_objects, crop_size=16, width=4).eval()
    save_classifier(tmp_path / "clf", model, Vocab.shapes(), {"val_accuracy": 0.5})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded, vocab, cfg = load_classifier(tmp_path / "clf")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x))
    assert vocab.object_names == Vocab.shapes().object_names and cfg["metadata"]["val_accuracy"] == 0.5
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_classifier(tmp_path)


def test_train_classifier_command_writes_a_folder_with_its_accuracy(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "clf"
    args = ["train-classifier", "--out", str(out), "--steps", "3", "--batch-size", "4", "--width", "4",
            "--crop-size", "16", "--device", "cpu", *tiny_overrides(tiny_shapes, tmp_path / "run")]
    assert main(args) == 0
    assert "val accuracy" in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    meta = cfg["metadata"]
    assert cfg["model_class"] == "ObjectClassifier" and cfg["crop_size"] == 16
    assert meta["steps"] == 3 and meta["dataset"] == "shapes" and 0 <= meta["val_accuracy"] <= 1
    assert meta["val_objects"] > 8  # every object of the 8 val images, __image__ excluded
    model, vocab, _ = load_classifier(out)
    assert vocab.name == "shapes" and model.fc.out_features == vocab.num_objects


def test_train_classifier_rejects_a_bad_override(tmp_path, capsys):
    assert main(["train-classifier", "--out", str(tmp_path / "x"), "bach_size=3"]) == 2
    assert "unknown key 'bach_size'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
