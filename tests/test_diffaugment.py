"""DiffAugment: differentiable, the same transform for the real and fake copy of a scene."""
from __future__ import annotations

import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.training.diffaugment import diff_augment, parse_policy


def test_parse_policy():
    assert parse_policy("color, translation") == ("color", "translation")
    assert parse_policy("") == () and parse_policy(None) == ()
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        parse_policy("color,flip")


def test_off_is_the_identity():
    x = torch.randn(2, 4, 8, 8)
    y, labels = diff_augment(x, ())
    assert y is x and labels is None


def test_groups_get_the_same_transform_and_labels_move_with_the_image():
    torch.manual_seed(0)
    scene = torch.rand(2, 3, 16, 16) + 0.5          # strictly positive: zeros mark what moved out
    labels = torch.randint(1, 5, (2, 16, 16))
    pair = torch.cat([scene, scene])
    out, out_labels = diff_augment(pair, ("translation", "cutout"), labels=labels.repeat(2, 1, 1),
                                   generator=torch.Generator().manual_seed(3), groups=2)
    assert torch.equal(out[:2], out[2:])
    assert torch.equal(out_labels[:2], out_labels[2:])
    assert not torch.equal(out[:2], scene)
    # where a pixel was cut out or shifted in from outside, its label is 0 (ignored)
    assert torch.equal(out[:2].abs().sum(1) == 0, out_labels[:2] == 0)


def test_colour_touches_only_the_image_channels_and_is_differentiable():
    x = torch.rand(2, 5, 8, 8, requires_grad=True)
    y, _ = diff_augment(x, ("color",), image_channels=slice(2, None), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :2], x[:, :2])
    assert not torch.equal(y[:, 2:], x[:, 2:])
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_groups_must_divide_the_batch():
    with pytest.raises(ConfigError, match="3 equal groups"):
        diff_augment(torch.zeros(4, 3, 8, 8), ("color",), groups=3)
