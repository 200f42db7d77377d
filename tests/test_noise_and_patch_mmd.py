"""Issue 20's two picture-quality switches: OASIS's 3D noise (``model.generator.noise_channels``) and
a perceptual distance without pretrained weights (``loss.perceptual: patch_mmd``, Amir & Weiss 2021)."""
from __future__ import annotations

import copy
import json
import math
import urllib.request

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, tiny_overrides
from layout2img import SceneGraphToImage
from layout2img.config import load_config
from layout2img.data.batch import collate
from layout2img.errors import ConfigError
from layout2img.models.layout_input import build_layout, layout_channels
from layout2img.models.losses import PERCEPTUAL_BACKBONES, PerceptualLoss
from layout2img.models.patch_mmd import LocalPatchMMD
from layout2img.training.trainer import Trainer

GRAPH = {"objects": ["circle", "square", "sky"], "relationships": [],
         "boxes": [[0.05, 0.05, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0, 0, 1, 1]]}


def tiny(noise_channels: int = 0, **generator) -> SceneGraphToImage:
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["generator"].update(noise_channels=noise_channels, **generator)
    torch.manual_seed(0)
    return SceneGraphToImage(**cfg).eval()


def codes_for(model: SceneGraphToImage) -> torch.Tensor:
    return torch.randn(3, model.style_dim, generator=torch.Generator().manual_seed(5))


# -- 3D noise ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditioning", ["input", "spade"])
def test_noise_changes_pixels_with_the_seed_only(conditioning):
    """Fixed boxes and fixed style codes: with noise the seed alone changes the image, the same seed
    repeats it, and re-rendering the returned layout (as text editing does) reproduces it."""
    model = tiny(2, conditioning=conditioning)
    codes = codes_for(model)
    out = model.generate(GRAPH, seed=0, style_codes=[codes], return_output=True)
    a, layout = out.images, out.layout
    b = model.generate(GRAPH, seed=1, style_codes=[codes])
    assert (a - b).abs().amax() > 1e-3
    assert torch.equal(a, model.generate(GRAPH, seed=0, style_codes=[codes]))
    assert layout.noise.shape == (1, 2, 32, 32)
    assert layout.tensor().shape[1] == model.layout_channels == model.generator.in_channels
    assert model.layout_channels == layout_channels(model.vocab.num_objects, 0, model.style_dim, 2)
    assert layout.for_discriminator().shape[1] == model.discriminator_layout_channels  # D never sees noise
    with torch.no_grad():
        assert torch.equal(model.render(layout).clamp(-1, 1), a)
        assert torch.equal(model.render(layout, style_codes=out.style_codes).clamp(-1, 1), a)  # an edit step's
    # the control: without noise the same two seeds give the same pixels, so above only noise differed
    plain = tiny(0, conditioning=conditioning)
    assert torch.equal(plain.generate(GRAPH, seed=0, style_codes=[codes]),
                       plain.generate(GRAPH, seed=1, style_codes=[codes]))


def test_no_noise_draws_nothing_and_adds_no_channel():
    boxes, masks = torch.tensor([[0.0, 0, 1, 1], [0.2, 0.2, 0.6, 0.6]]), torch.ones(2, 4, 4)
    objs, obj_to_img = torch.tensor([5, 1]), torch.tensor([0, 0])
    rng = torch.Generator().manual_seed(3)
    before = rng.get_state()
    layout = build_layout(objs, boxes, masks, obj_to_img, 1, 8, num_classes=9, generator=rng)
    assert torch.equal(rng.get_state(), before) and layout.noise is None
    assert layout.tensor().shape[1] == layout_channels(9) == layout.num_channels == 9
    noisy = build_layout(objs, boxes, masks, obj_to_img, 1, 8, num_classes=9, noise_channels=3, generator=rng)
    assert not torch.equal(rng.get_state(), before)
    assert noisy.tensor().shape[1] == layout_channels(9, noise_channels=3) == noisy.num_channels == 12
    assert torch.equal(noisy.tensor()[:, 9:12], noisy.noise)  # after the edge channel, before the style
    assert torch.equal(noisy.for_discriminator(), layout.for_discriminator())


def test_noise_model_saves_and_loads_with_the_same_output(tmp_path):
    model = tiny(2, conditioning="spade")
    codes = codes_for(model)
    folder = model.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["generator"]["noise_channels"] == 2
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.generator.noise_channels == 2
    same = [m.generate(GRAPH, seed=4, style_codes=[codes]) for m in (loaded, model)]
    assert torch.equal(*same)


def test_config_without_noise_channels_loads_with_none(tmp_path):
    """A checkpoint written before the key existed builds the model it saved: no noise."""
    model = tiny(0)
    folder = model.save_pretrained(tmp_path / "old")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["generator"]["noise_channels"]
    (folder / "config.json").write_text(json.dumps(cfg))
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.generator.noise_channels == 0 and loaded.layout_channels == model.layout_channels
    assert torch.equal(loaded.generate(GRAPH, seed=2), model.generate(GRAPH, seed=2))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_noise_channels_is_a_one_line_config_error(bad, tiny_shapes, tmp_path):
    cfg = copy.deepcopy(TINY_MODEL)
    cfg["generator"]["noise_channels"] = bad
    with pytest.raises(ConfigError, match=r"^model\.generator\.noise_channels: expected a non-negative integer") as err:
        SceneGraphToImage(**cfg)
    assert "\n" not in str(err.value)
    if bad == -1:  # the same from a run config
        run = load_config(None, tiny_overrides(tiny_shapes, tmp_path, **{"model.generator.noise_channels": -1}))
        with pytest.raises(ConfigError, match=r"model\.generator\.noise_channels"):
            SceneGraphToImage.from_config(run)


# -- the local patch MMD -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_images(tiny_shapes):
    """Eight real 32 px Shapes images in [-1, 1]."""
    from layout2img.data.build import build_dataset

    data = build_dataset({"dataset": "shapes", "root": str(tiny_shapes), "image_size": 32, "hflip": 0.0,
                          "prepare": None}, "train", seed=0)
    return collate([data[i] for i in range(8)]).images.float()


def blurred(x: torch.Tensor) -> torch.Tensor:
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_patch_mmd_is_zero_for_identical_images_and_has_a_gradient_otherwise(shapes_images):
    loss = LocalPatchMMD()
    real = shapes_images
    assert loss(real, real.clone()).item() == 0.0
    fake = blurred(real).requires_grad_(True)
    real_in = real.clone().requires_grad_(True)
    value = loss(fake, real_in)
    value.backward()
    assert value.item() > 0 and torch.isfinite(value)
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    assert real_in.grad is None  # the real side runs without gradients


def test_patch_mmd_ranks_a_blur_above_a_small_perturbation(shapes_images):
    loss, real = LocalPatchMMD(), shapes_images
    tiny_noise = 0.01 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    other = real.roll(1, dims=0)  # each image against a different real one
    small, blur, different = loss(real + tiny_noise, real), loss(blurred(real), real), loss(other, real)
    assert 0 < small < blur / 10
    assert blur < different


def test_patch_mmd_properties_that_hold_exactly(shapes_images):
    loss, a, b = LocalPatchMMD(), shapes_images, blurred(shapes_images)
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-5)  # symmetric
    per_image = torch.stack([loss(a[i:i + 1], b[i:i + 1]) for i in range(len(a))])
    assert loss(a, b).item() == pytest.approx(per_image.mean().item(), rel=1e-5)  # the batch's mean
    order = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
    assert loss(a[order], b[order]).item() == pytest.approx(loss(a, b).item(), rel=1e-5)
    full = loss(a, b).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 inside autocast too
        inside = loss(a.bfloat16(), b)
    assert inside.dtype == torch.float32
    assert inside.item() == pytest.approx(loss(a.bfloat16().float(), b).item(), rel=1e-6)
    assert inside.item() == pytest.approx(full, rel=0.05)


def test_patch_mmd_is_the_gaussian_kernel_mmd_of_patches():
    """With one window holding one patch, the loss is MMD^2 of two points: 2 - 2 k(p, q), k Gaussian."""
    bandwidth = 0.3
    loss = LocalPatchMMD(scales=1, patch=5, bandwidths=(bandwidth,), features=20000, window=1)
    p = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sigma = bandwidth * math.sqrt(3 * 25)
    for scale in (0.1, 0.3, 0.6):
        q = p + scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
        expected = 2 - 2 * math.exp(-float((p - q).pow(2).sum()) / (2 * sigma ** 2))
        assert loss(q, p).item() == pytest.approx(expected, abs=0.03)


def test_patch_mmd_is_deterministic_saves_nothing_and_needs_no_network(monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("network access")

    import kornia.geometry.transform  # noqa: F401  (imported before the network goes)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    a, b = LocalPatchMMD(), LocalPatchMMD()
    other = LocalPatchMMD(seed=1)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, other.weight)
    assert a.weight.shape == (2 * 96, 3, 5, 5) and a.state_dict() == {}
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert a(x, y).item() == b(x, y).item() > 0
    perceptual = PerceptualLoss("patch_mmd")
    assert perceptual(x, y).item() == a(x, y).item() and perceptual.state_dict() == {}


def test_unknown_perceptual_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"^loss\.perceptual: unknown perceptual backbone 'lpips'") as err:
        PerceptualLoss("lpips")
    assert all(name in str(err.value) for name in PERCEPTUAL_BACKBONES) and "patch_mmd" in str(err.value)


# -- both switches through the trainer ---------------------------------------------------------------
def _fit_logging(cfg) -> tuple[Trainer, list[dict[str, float]]]:
    trainer = Trainer(cfg)
    logged: list[dict[str, float]] = []
    original = trainer.logger.scalars
    trainer.logger.scalars = lambda step, values: (logged.append(dict(values)), original(step, values))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer, logged


def test_training_with_patch_mmd_logs_a_perceptual_term(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path, max_steps=2, **{
        "loss.perceptual": "patch_mmd", "loss.lambda_perceptual": 1.0}))
    trainer, logged = _fit_logging(cfg)
    assert isinstance(trainer.objective.perceptual.backbone, LocalPatchMMD)
    values = [v["loss/g_perceptual"] for v in logged if "loss/g_perceptual" in v]
    assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)


def test_training_with_noise_channels(tiny_shapes, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_shapes, tmp_path, max_steps=2, **{
        "model.generator.noise_channels": 2}))
    trainer, logged = _fit_logging(cfg)
    assert trainer.model.generator.noise_channels == 2
    assert trainer.last_output.layout.noise.shape[1] == 2
    assert logged and all(math.isfinite(v) for step in logged for v in step.values())
    loaded = SceneGraphToImage.from_pretrained(tmp_path / "checkpoints" / "latest")
    assert loaded.generator.noise_channels == 2
    images = loaded.generate(GRAPH, seed=0)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
