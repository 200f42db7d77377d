"""OASIS-style segmentation discriminator, its losses and LabelMix."""
from __future__ import annotations

import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.discriminator import SegmentationDiscriminator
from layout2img.models.losses import (label_map, labelmix_inputs, labelmix_loss, segmentation_fake_loss,
                                      segmentation_real_loss)


def test_shapes_and_bad_input():
    d = SegmentationDiscriminator(num_classes=5, ndf=4, n_down=2)
    assert d(torch.randn(2, 3, 16, 16)).shape == (2, 5, 16, 16)
    with pytest.raises(ConfigError, match="multiples of 4"):
        d(torch.randn(1, 3, 18, 18))
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationDiscriminator(num_classes=1)


def test_label_map_follows_instances():
    objs = torch.tensor([3, 5, 0])
    instances = torch.tensor([[[0, 1], [2, 3]]])
    assert label_map(instances, objs).tolist() == [[[0, 3], [5, 0]]]


def test_segmentation_losses_values():
    labels = torch.tensor([[[1, 1], [2, 0]]])
    perfect = torch.full((1, 3, 2, 2), -20.0)
    perfect[0, 1, 0, :] = 20
    perfect[0, 2, 1, 0] = 20
    assert float(segmentation_real_loss(perfect, labels)) < 1e-6
    assert float(segmentation_fake_loss(perfect, labels)) > 10   # called "real class", not fake
    fake_called = torch.full((1, 3, 2, 2), -20.0)
    fake_called[0, 0] = 20
    assert float(segmentation_fake_loss(fake_called, labels)) < 1e-6
    # unlabelled pixels (class 0) do not count: changing their logits changes nothing
    other = perfect.clone()
    other[0, :, 1, 1] = torch.tensor([5.0, -3.0, 7.0])
    assert float(segmentation_real_loss(other, labels)) == pytest.approx(float(segmentation_real_loss(perfect, labels)))


def test_class_balance_weights_rare_classes_up():
    labels = torch.tensor([[[1, 1, 1, 2]]])
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 1, 0, 3] = 5.0  # the one class-2 pixel is misclassified as class 1
    balanced = float(segmentation_real_loss(logits, labels))
    plain = float(torch.nn.functional.cross_entropy(logits, labels))
    assert balanced > plain


def test_labelmix_is_zero_for_a_pixelwise_discriminator_and_positive_otherwise():
    torch.manual_seed(0)
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    labels = torch.randint(1, 4, (2, 8, 8))
    mixed, mask = labelmix_inputs(real, fake, labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mixed, mask * real + (1 - mask) * fake)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    pixelwise, spatial = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        assert float(labelmix_loss(pixelwise(mixed), pixelwise(real), pixelwise(fake), mask)) < 1e-10
        assert float(labelmix_loss(spatial(mixed), spatial(real), spatial(fake), mask)) > 1e-4
