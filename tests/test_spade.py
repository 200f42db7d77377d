"""SPADE / ISLA modulation: the layout modulates the decoder; each object's code acts near that object."""
from __future__ import annotations

import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.generator import Generator
from layout2img.models.normalization import SPADE


def two_object_layout(style: int = 8) -> torch.Tensor:
    """(1, 18 + style, 64, 64): two squares of different classes with their own style codes."""
    torch.manual_seed(1)
    x = torch.zeros(1, 18 + style, 64, 64)
    x[0, 0, 8:24, 8:24] = 1
    x[0, 1, 40:56, 40:56] = 1
    x[0, 18:, 8:24, 8:24] = torch.randn(style)[:, None, None]
    x[0, 18:, 40:56, 40:56] = torch.randn(style)[:, None, None]
    return x


def trained_spade_generator(n_local_enhancers: int = 0) -> Generator:
    torch.manual_seed(0)
    g = Generator(26, 3, ngf=8, n_downsample=3, n_blocks=2, n_local_enhancers=n_local_enhancers,
                  conditioning="spade", style_channels=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        g.train()
        g(torch.randn(4, 26, 64, 64))
        for m in g.modules():  # non-zero style modulation, as after training
            if isinstance(m, SPADE) and m.style is not None:
                torch.nn.init.normal_(m.style.weight, 0.0, 0.5)
    return g.eval()


def test_spade_is_the_plain_norm_when_the_modulation_is_zero():
    spade = SPADE(4, layout_channels=3, hidden=8, norm="instance")
    for conv in (spade.gamma, spade.beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 16, 16)
    expected = torch.nn.functional.instance_norm(x)
    torch.testing.assert_close(spade(x, torch.rand(2, 3, 32, 32)), expected, atol=1e-5, rtol=1e-5)


def test_spade_style_term_is_a_per_object_affine_inside_its_mask():
    spade = SPADE(2, layout_channels=3, hidden=4, norm="batch", style_channels=1).eval()
    for conv in (spade.gamma, spade.beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    layout = torch.zeros(1, 3, 8, 8)
    layout[0, 0, :4] = 1.0      # class map of the top object
    layout[0, 2, :4] = 0.5      # its code, spread inside its mask
    x = torch.ones(1, 2, 8, 8)
    y = spade(x, layout)
    assert torch.equal(y[0, :, 4:], spade.norm(x)[0, :, 4:])   # outside: untouched
    assert not torch.equal(y[0, :, :4], spade.norm(x)[0, :, :4])


def test_spade_rejects_style_channels_that_do_not_fit():
    with pytest.raises(ConfigError, match="style_channels"):
        SPADE(4, layout_channels=3, style_channels=3)


def test_generator_rejects_unknown_conditioning():
    with pytest.raises(ConfigError, match="conditioning 'film'"):
        Generator(10, 3, ngf=4, n_downsample=2, n_blocks=1, conditioning="film")


@pytest.mark.parametrize("n_local_enhancers, reach", [(0, 8), (1, 20)])
def test_changing_one_objects_code_changes_only_pixels_near_it(n_local_enhancers, reach):
    g = trained_spade_generator(n_local_enhancers)
    x = two_object_layout()
    with torch.no_grad():
        before = g(x)
        x[0, 18:, 40:56, 40:56] = torch.randn(8)[:, None, None]
        diff = (g(x) - before).abs().amax(dim=1)[0]
    near = torch.zeros(64, 64, dtype=torch.bool)
    near[max(0, 40 - reach):56 + reach, max(0, 40 - reach):56 + reach] = True
    assert float(diff[near].max()) > 1e-3           # the object itself changed
    assert float(diff[~near].max()) == 0.0          # nothing far from it did
    assert float(diff[8:24, 8:24].max()) == 0.0     # in particular not the other object


def test_input_conditioning_spreads_a_code_change_everywhere():
    """The contrast: pix2pixHD's input conditioning lets one code reach the whole image."""
    torch.manual_seed(0)
    g = Generator(26, 3, ngf=8, n_downsample=3, n_blocks=2).eval()
    x = two_object_layout()
    with torch.no_grad():
        before = g(x)
        x[0, 18:, 40:56, 40:56] = torch.randn(8)[:, None, None]
        diff = (g(x) - before).abs().amax(dim=1)[0]
    assert float(diff[8:24, 8:24].max()) > 0


def test_generate_with_one_changed_code_changes_only_that_objects_surroundings():
    """Through the pipeline: fixed codes, one object's code changed, pixels far from its box equal."""
    from conftest import TINY_MODEL

    from layout2img import SceneGraphToImage

    torch.manual_seed(0)
    config = {**TINY_MODEL, "image_size": 64,
              "generator": {**TINY_MODEL["generator"], "n_downsample": 3, "conditioning": "spade"}}
    model = SceneGraphToImage(**config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SPADE) and m.style is not None:
                torch.nn.init.normal_(m.style.weight, 0.0, 0.5)
    model.eval()
    graph = {"objects": ["circle", "square", "sky"], "relationships": [],
             "boxes": [[0.05, 0.05, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9], [0, 0, 1, 1]]}
    codes = torch.randn(3, model.style_dim)
    before = model.generate(graph, seed=0, style_codes=[codes])
    changed = codes.clone()
    changed[1] = torch.randn(model.style_dim) * 2
    after = model.generate(graph, seed=0, style_codes=[changed])
    diff = (after - before).abs().amax(dim=1)[0]
    near = torch.zeros(64, 64, dtype=torch.bool)
    x0, y0, x1, y1 = (round(v * 64) for v in graph["boxes"][1])
    near[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = True
    assert float(diff[near].max()) > 1e-4
    assert float(diff[~near].max()) == 0.0


@pytest.mark.parametrize("enhancers", [0, 1])
def test_a_reused_trunk_gives_the_same_image_for_new_codes_and_input_conditioning_refuses_it(enhancers):
    g = trained_spade_generator(enhancers).eval()
    torch.manual_seed(1)
    layout = torch.randn(2, g.in_channels, 32, 32)
    trunk = g.trunk(layout)
    restyled = layout.clone()
    restyled[:, -8:] = torch.randn(2, 8, 32, 32)  # new style channels: the trunk does not read them
    for x in (layout, restyled):
        assert torch.allclose(g(x, trunk=trunk), g(x), atol=1e-6)
    assert not torch.allclose(g(restyled), g(layout), atol=1e-3)
    with pytest.raises(ConfigError, match=r"trunk must be \(2, "):
        g(layout, trunk=trunk[:1])
    plain = Generator(g.in_channels, ngf=8, n_downsample=2, n_blocks=1, style_channels=8)
    assert plain.trunk_sees_style and not g.trunk_sees_style
    with pytest.raises(ConfigError, match="a reused trunk needs conditioning='spade'"):
        plain(layout, trunk=plain.trunk(layout))


def test_an_edit_on_a_spade_model_reuses_the_trunk_and_renders_what_render_does():
    """The pipeline's trunk (computed once per edit) gives the images a full render gives."""
    from conftest import TINY_MODEL

    from layout2img import SceneGraphToImage

    torch.manual_seed(0)
    model = SceneGraphToImage(**{**TINY_MODEL, "generator": {**TINY_MODEL["generator"], "conditioning": "spade"}})
    model.eval()
    out = model.generate({"objects": ["circle", "sky"], "relationships": [[0, "above", 1]]}, seed=1,
                         return_output=True)
    trunk = model.render_trunk(out.layout)
    assert trunk is not None
    codes = torch.randn_like(out.style_codes)
    with torch.no_grad():
        full = model.render(out.layout, style_codes=codes)
        reused = model.render(out.layout, style_codes=codes, trunk=trunk)
    assert torch.allclose(reused, full, atol=1e-6) and not torch.allclose(full, out.images, atol=1e-3)
    plain = SceneGraphToImage(**TINY_MODEL)  # input conditioning: the encoder reads the codes
    assert plain.render_trunk(plain.generate({"objects": ["sky"], "relationships": []},
                                             return_output=True).layout) is None
