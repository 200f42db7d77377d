"""Object accuracy: crops, the classifier, its folder format and `layout2img train-classifier`."""
import json

import pytest
import torch

from conftest import tiny_overrides
from layout2img.cli import main
from layout2img.errors import CheckpointError
from layout2img.metrics.accuracy import (AccuracyCounter, ObjectClassifier, load_classifier,
                                         save_classifier)
from layout2img.vocab import Vocab


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
