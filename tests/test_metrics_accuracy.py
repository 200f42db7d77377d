"""Object accuracy: crops, the classifier, its folder format and `layout2img train-classifier`."""
import json

import pytest
import torch

from conftest import tiny_overrides
from layout2img.cli import main
from layout2img.errors import CheckpointError, ConfigError
from layout2img.metrics.accuracy import ObjectAccuracy, TopKAccuracy
from layout2img.models.classifier import ObjectClassifier
from layout2img.vocab import Vocab


def test_classifier_never_predicts_image_object_and_counts_accuracy():
    torch.manual_seed(0)
    model = ObjectClassifier(num_classes=6, crop_size=16, width=4).eval()
    logits = model(torch.randn(5, 3, 16, 16))
    assert logits.shape == (5, 6) and torch.isinf(logits[:, 0]).all() and (logits.argmax(1) != 0).all()
    counter = TopKAccuracy()
    counter.update(torch.tensor([[0.0, 1, 0], [0, 0, 1], [0, 1, 0]]), torch.tensor([1, 2, 2]))
    counter.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert counter.compute() == {"top1": pytest.approx(2 / 3), "num_objects": 3}


def test_object_accuracy_crops_every_object_but_the_image_at_its_box():
    class ColourOfCrop(torch.nn.Module):
        """Class 1 for a red crop, 2 for a blue one (top-1 only: three classes)."""

        crop_size = 4

        def forward(self, crops):
            red, blue = crops[:, 0].mean((1, 2)), crops[:, 2].mean((1, 2))
            return torch.stack([torch.full_like(red, float("-inf")), red, blue], 1)

    images = -torch.ones(1, 3, 8, 8)
    images[0, 0, :, :4] = 1  # left half red
    images[0, 2, :, 4:] = 1  # right half blue
    boxes = torch.tensor([[0.0, 0, 0.5, 1], [0.5, 0, 1, 1], [0, 0, 1, 1]])
    metric = ObjectAccuracy(ColourOfCrop())
    metric.update(images, boxes, torch.zeros(3, dtype=torch.long), torch.tensor([1, 1, 0]))
    assert metric.compute() == {"top1": 0.5, "num_objects": 2}  # the blue half called red is wrong


def test_classifier_folder_round_trip(tmp_path):
    model = ObjectClassifier(num_classes=Vocab.shapes().num_objects, crop_size=16, width=4, vocab=Vocab.shapes()).eval()
    model.save_pretrained(tmp_path / "clf", {"val_accuracy": 0.5})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = ObjectClassifier.from_pretrained(tmp_path / "clf")
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x), model(x)) and not loaded.training
    assert loaded.vocab.object_names == Vocab.shapes().object_names and loaded.metadata["val_accuracy"] == 0.5
    with pytest.raises(CheckpointError, match="missing config.json"):
        ObjectClassifier.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="needs the vocabulary"):
        ObjectClassifier(num_classes=6, crop_size=16, width=4).save_pretrained(tmp_path / "no_vocab")
    with pytest.raises(ConfigError, match="6 classes but vocabulary 'shapes' has 15 objects"):
        ObjectClassifier(num_classes=6, vocab=Vocab.shapes())


def test_a_classifier_folder_of_layout2img_0_1_still_loads(tmp_path):
    """0.1 wrote config.json without format_version: it is version 1; a newer version is refused."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = ObjectClassifier(num_classes=Vocab.shapes().num_objects, crop_size=16, width=4).eval()
    folder = tmp_path / "old"
    folder.mkdir()
    config = {"model_class": "ObjectClassifier", "num_classes": 15, "crop_size": 16, "width": 4,
              "metadata": {"val_accuracy": 0.25}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.json").write_text(json.dumps(Vocab.shapes().to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    loaded = ObjectClassifier.from_pretrained(folder)
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(loaded(x), model(x)) and loaded.metadata == {"val_accuracy": 0.25}
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 9}))
    with pytest.raises(CheckpointError, match="format_version 9 is newer"):
        ObjectClassifier.from_pretrained(folder)


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
    model = ObjectClassifier.from_pretrained(out)
    assert model.vocab.name == "shapes" and model.fc.out_features == model.vocab.num_objects


def test_train_classifier_rejects_a_bad_override(tmp_path, capsys):
    assert main(["train-classifier", "--out", str(tmp_path / "x"), "bach_size=3"]) == 2
    assert "unknown key 'bach_size'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
