import pytest
import torch
from safetensors.torch import load_file, save_file

from layout2img.errors import ConfigError
from layout2img.models.losses import kl_loss
from layout2img.models.encoder import AppearanceEncoder, StyleClusters

torch.set_num_threads(1)


def _masks():
    # image 0: two objects (left/right halves) + an empty one; image 1: one object (top half)
    m = torch.zeros(4, 32, 32)
    m[0, :, :16] = 1
    m[1, :, 16:] = 1
    m[3, :16] = 1
    return m, torch.tensor([0, 0, 0, 1])


def test_shapes_empty_mask_prior_and_gradients_through_pooled_codes():
    torch.manual_seed(0)
    enc = AppearanceEncoder(style_dim=5, nef=8, n_downsample=2)
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    masks, obj_to_img = _masks()
    mu, logvar = enc(images, masks, obj_to_img)
    assert mu.shape == (4, 5) and logvar.shape == (4, 5)
    assert torch.equal(mu[2], torch.zeros(5)) and torch.equal(logvar[2], torch.zeros(5))
    assert not torch.allclose(mu[0], mu[1])
    z = AppearanceEncoder.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    (z.square().sum() + kl_loss(mu, logvar)).backward()
    assert images.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        # conv biases right before an instance norm cancel out; every weight must learn
        if name.endswith("weight"):
            assert p.grad.abs().sum() > 0, name


def test_code_depends_only_on_own_image_and_mask():
    torch.manual_seed(0)
    enc = AppearanceEncoder(style_dim=4, nef=8, n_downsample=2).eval()
    images = torch.randn(2, 3, 32, 32)
    masks, obj_to_img = _masks()
    mu, _ = enc(images, masks, obj_to_img)
    changed = images.clone()
    changed[0] = torch.randn(3, 32, 32)  # only image 0 changes
    mu2, _ = enc(changed, masks, obj_to_img)
    assert torch.equal(mu2[3], mu[3]) and not torch.allclose(mu2[0], mu[0])
    # masks at another resolution are resized to the image
    mu_small, _ = enc(images, masks[:, ::2, ::2], obj_to_img)
    assert mu_small.shape == (4, 4) and torch.equal(mu_small[2], torch.zeros(4))
    with pytest.raises(ConfigError, match="instance_masks must be"):
        enc(images, masks[:3], obj_to_img)


def _clustered(generator):
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [0.0, -6.0]])
    pts = centres.repeat_interleave(40, dim=0) + 0.1 * torch.randn(120, 2, generator=generator)
    return centres, pts


def test_style_clusters_recover_centres_and_sample_deterministically(tmp_path):
    g = torch.Generator().manual_seed(0)
    centres, pts = _clustered(g)
    # class 1 holds the clustered codes; class 2 has 2 points only; class 0 and 3 none
    codes = torch.cat([pts, torch.tensor([[1.0, 1.0], [2.0, 2.0]])])
    classes = torch.cat([torch.ones(120, dtype=torch.long), torch.full((2,), 2)])
    sc = StyleClusters(num_classes=4, style_dim=2, k=3)
    assert not sc.fitted
    sc.fit(codes, classes, iters=30, generator=torch.Generator().manual_seed(1))
    assert sc.fitted
    assert sc.counts.tolist() == [0, 3, 2, 0]
    found = sc.centres[1]
    # each true centre has a found centre within 0.05
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.05
    # a restyle picks a specific centre
    assert torch.equal(sc.centre(1, 0), found[0])
    with pytest.raises(ConfigError, match="no cluster 2"):
        sc.centre(2, 2)

    req = torch.tensor([1, 1, 1, 1, 1, 1, 0, 2])
    a = sc.sample(req, torch.Generator().manual_seed(7))
    b = sc.sample(req, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (8, 2)
    # class 1 samples are centres of class 1; class 0 (never seen) falls back to N(0, I)
    assert torch.cdist(a[:6], found).min(dim=1).values.max() == 0
    assert torch.cdist(a[6:7], found).min() > 0
    assert torch.cdist(a[7:], sc.centres[2, :2]).min() == 0

    # all state is in buffers: a safetensors round trip restores it
    save_file(sc.state_dict(), tmp_path / "sc.safetensors")
    sc2 = StyleClusters(num_classes=4, style_dim=2, k=3)
    sc2.load_state_dict(load_file(tmp_path / "sc.safetensors"))
    assert sc2.fitted and torch.equal(sc2.sample(req, torch.Generator().manual_seed(7)), a)


def test_sampled_centres_follow_each_cluster_share_of_the_data():
    # class 0: 90 codes near (0, 0) and 10 near (5, 5); a uniform draw over the two centres would
    # give the rare appearance half the objects instead of a tenth
    g = torch.Generator().manual_seed(0)
    codes = torch.cat([torch.randn(90, 2, generator=g) * 0.1, 5 + torch.randn(10, 2, generator=g) * 0.1])
    sc = StyleClusters(num_classes=1, style_dim=2, k=2).fit(codes, torch.zeros(100, dtype=torch.long),
                                                            generator=torch.Generator().manual_seed(1))
    assert sorted(sc.shares[0].tolist()) == pytest.approx([0.1, 0.9])
    drawn = sc.sample(torch.zeros(4000, dtype=torch.long), torch.Generator().manual_seed(2))
    rare = float((drawn[:, 0] > 2.5).float().mean())
    assert 0.08 < rare < 0.12
    # without shares (checkpoints from before them) the centres are drawn uniformly
    sc.shares.zero_()
    rare = float((sc.sample(torch.zeros(4000, dtype=torch.long), torch.Generator().manual_seed(2))[:, 0] > 2.5)
                 .float().mean())
    assert 0.45 < rare < 0.55


def test_style_clusters_fit_is_deterministic_for_a_generator_and_validates():
    _, pts = _clustered(torch.Generator().manual_seed(3))
    classes = torch.zeros(120, dtype=torch.long)
    a = StyleClusters(1, 2, k=5).fit(pts, classes, generator=torch.Generator().manual_seed(4)).centres
    b = StyleClusters(1, 2, k=5).fit(pts, classes, generator=torch.Generator().manual_seed(4)).centres
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="class indices"):
        StyleClusters(1, 2).fit(pts, classes + 1)
