"""Diversity (pairwise distances, LPIPS availability) and the CLIP score with a stand-in encoder."""
import importlib.util

import numpy as np
import pytest
import torch

from layout2img.metrics import diversity
from layout2img.metrics.clip_score import (NO_ENCODER, CLIPScore, batch_texts, clip_scores, clip_unavailable_reason,
                                          graph_text)


def test_mean_pairwise_distance_of_known_points():
    triangle = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # pairwise distances 3, 4, 5
    pair = np.array([[1.0, 1.0], [1.0, 3.0]])                   # distance 2
    assert diversity.mean_pairwise_distance([triangle]) == pytest.approx(4.0)
    assert diversity.mean_pairwise_distance([triangle, pair]) == pytest.approx(3.0)
    assert diversity.mean_pairwise_distance([np.ones((3, 5))]) == 0.0
    assert np.isnan(diversity.mean_pairwise_distance([np.ones((1, 5))]))  # one sample: no pair


def test_lpips_is_used_only_when_package_and_weights_are_on_disk(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "lpips" else real_find_spec(name))
    assert diversity.lpips_unavailable_reason() == "the lpips package is not installed"

    pkg = tmp_path / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    spec = type("Spec", (), {"origin": str(pkg / "__init__.py")})()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "lpips" else real_find_spec(name))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert "lpips weights not found" in diversity.lpips_unavailable_reason()
    (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"x")
    assert "AlexNet weights" in diversity.lpips_unavailable_reason()  # never downloaded
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / diversity.ALEXNET_FILE).write_bytes(b"x")
    assert diversity.lpips_unavailable_reason() is None


class ColourClip:
    """A stand-in CLIP: an image embeds as its mean colour, a text as the colour it names."""

    COLOURS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}

    def encode_image(self, images):
        v = (images + 1).mean((2, 3))
        return v / v.norm(dim=1, keepdim=True)

    def encode_text(self, texts):
        return torch.tensor([self.COLOURS[t.split()[0]] for t in texts])


def test_clip_score_with_a_stand_in_encoder():
    red = -torch.ones(1, 3, 8, 8)
    red[:, 0] = 1
    purple = -torch.ones(1, 3, 8, 8)
    purple[:, 0] = purple[:, 2] = 1
    images = torch.cat([red, red, purple])
    scores = clip_scores(ColourClip(), images, ["red square", "blue sky", "blue circle"])
    assert scores.tolist() == pytest.approx([100.0, 0.0, 100 / 2**0.5])
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        clip_scores(ColourClip(), images[:2], ["red"])


def test_clip_score_metric_is_the_mean_over_every_update():
    red = -torch.ones(2, 3, 8, 8)
    red[:, 0] = 1
    metric = CLIPScore(ColourClip())
    assert np.isnan(metric.compute())
    metric.update(red, ["red square", "blue sky"])
    metric.update(red[:1], ["red circle"])
    assert metric.compute() == pytest.approx(200 / 3)


def test_batch_texts_are_captions_else_the_graph_as_text():
    from layout2img.data.batch import collate
    from layout2img.vocab import Vocab

    vocab = Vocab.shapes()
    circle, square, image = (vocab.object_index(n) for n in ("circle", "square", "__image__"))
    left, inside = vocab.predicate_index("left of"), vocab.predicate_index("__in_image__")

    def item(caption):
        return {"objs": torch.tensor([circle, square, image]), "boxes": torch.rand(3, 4),
                "triples": torch.tensor([[0, left, 1], [0, inside, 2], [1, inside, 2]]), "caption": caption}

    assert batch_texts(collate([item("a red circle"), item(None)]), vocab) == ["a red circle",
                                                                               "circle left of square"]


def test_clip_availability_and_graph_text():
    assert clip_unavailable_reason(None) == NO_ENCODER == "model has no text encoder"
    assert clip_unavailable_reason(object()) == "the text encoder has no encode_text / encode_image"
    assert clip_unavailable_reason(ColourClip()) is None
    names = ["circle", "square", "sky", "__image__"]
    triples = [(0, "left of", 1), (0, "__in_image__", 3), (1, "__in_image__", 3)]
    assert graph_text(names, triples) == "circle left of square, sky"
