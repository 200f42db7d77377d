import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.discriminator import MultiscaleDiscriminator, ObjectDiscriminator, real_objects

torch.set_num_threads(1)


@pytest.mark.parametrize("norm", ["instance", "spectral"])
def test_multiscale_returns_num_d_scales_of_n_layers_plus_2_features(norm):
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(5 + 3, ndf=8, n_layers=3, num_D=3, norm=norm)
    out = d(torch.randn(2, 5, 64, 64), torch.randn(2, 3, 64, 64))
    assert len(out) == 3
    assert all(len(scale) == 3 + 2 for scale in out)
    assert [f.shape[1] for f in out[0]] == [8, 16, 32, 64, 1]
    # finest first; each scale sees the input halved
    assert out[0][-1].shape[-1] > out[1][-1].shape[-1] > out[2][-1].shape[-1]
    assert out[0][0].shape == (2, 8, 33, 33)


def test_multiscale_logits_only_and_gradients_to_inputs():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(4 + 3, ndf=8, n_layers=2, num_D=2, get_features=False)
    layout = torch.randn(2, 4, 32, 32, requires_grad=True)
    image = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = d(layout, image)
    assert len(out) == 2 and all(len(s) == 1 and s[0].shape[1] == 1 for s in out)
    sum(s[-1].sum() for s in out).backward()
    assert layout.grad.abs().sum() > 0 and image.grad.abs().sum() > 0
    # the concatenation alone is accepted too, with the same result
    joined = d(torch.cat([layout, image], 1))
    assert all(torch.equal(a[-1], b[-1]) for a, b in zip(joined, out))


def test_text_projection_changes_logits_and_gets_gradient():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(2 + 3, ndf=8, n_layers=2, num_D=2, text_dim=6)
    layout, image = torch.randn(2, 2, 32, 32), torch.randn(2, 3, 32, 32)
    text = torch.randn(2, 6, requires_grad=True)
    plain = d(layout, image)
    with_text = d(layout, image, text)
    for p_scale, t_scale in zip(plain, with_text):
        assert all(torch.equal(a, b) for a, b in zip(p_scale[:-1], t_scale[:-1]))  # features untouched
        delta = t_scale[-1] - p_scale[-1]
        # one projection value per image, added to every patch logit
        assert delta.abs().amax() > 0
        assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta), atol=1e-5)
    sum(s[-1].sum() for s in with_text).backward()
    assert text.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="text_dim=6"):
        d(layout, image, torch.randn(2, 5))


def test_channel_mismatch_is_one_line_error():
    d = MultiscaleDiscriminator(7, ndf=8, n_layers=2, num_D=1)
    with pytest.raises(ConfigError, match="8 channels, built for 7"):
        d(torch.randn(1, 5, 32, 32), torch.randn(1, 3, 32, 32))


def test_object_discriminator_crops_follow_boxes():
    d = ObjectDiscriminator(num_classes=4, ndf=8, crop_size=8)
    images = torch.zeros(2, 3, 32, 32)
    images[1, :, 16:, :16] = 1.0  # bottom-left quadrant of image 1 is white
    boxes = torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0], [0.5, 0.0, 1.0, 0.5]])
    crops = d.crops(images, boxes, torch.tensor([1, 0, 1]))
    assert crops.shape == (3, 3, 8, 8)
    assert torch.allclose(crops[0], torch.ones(3, 8, 8))  # that quadrant of image 1
    assert torch.equal(crops[1], torch.zeros(3, 8, 8))  # same box, image 0
    assert torch.equal(crops[2], torch.zeros(3, 8, 8))  # other quadrant of image 1


def test_object_discriminator_learns_to_classify_crops():
    # Two classes: bright crops and dark crops. A few steps of the auxiliary classifier separate them.
    torch.manual_seed(0)
    d = ObjectDiscriminator(num_classes=3, ndf=8, crop_size=16, text_dim=4)
    images = -torch.ones(2, 3, 32, 32)
    images[:, :, :, 16:] = 1.0  # right half bright
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]] * 2)
    obj_to_img = torch.tensor([0, 0, 1, 1])
    labels = torch.tensor([1, 2, 1, 2])
    realness, logits = d(images, boxes, obj_to_img, torch.randn(4, 4))
    assert realness.shape == (4,) and logits.shape == (4, 3)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(30):
        _, logits = d(images, boxes, obj_to_img)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(d(images, boxes, obj_to_img)[1].argmax(1), labels)


def test_object_discriminator_gradients_reach_images_and_real_objects_drops_image():
    d = ObjectDiscriminator(num_classes=3, ndf=8, crop_size=8)
    images = torch.randn(1, 3, 16, 16, requires_grad=True)
    realness, logits = d(images, torch.tensor([[0.1, 0.1, 0.6, 0.7]]), torch.tensor([0]))
    (realness.sum() + logits.sum()).backward()
    assert images.grad.abs().sum() > 0
    assert torch.equal(real_objects(torch.tensor([3, 1, 0, 2, 0])), torch.tensor([True, True, False, True, False]))
    with pytest.raises(ConfigError, match="power of two"):
        ObjectDiscriminator(3, crop_size=24)
