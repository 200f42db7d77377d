import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.blocks import ResnetBlock
from layout2img.models.generator import Generator
from layout2img.models.normalization import FiLM

torch.set_num_threads(1)
C = 13  # e.g. 4 classes + 1 edge + 8 style channels


def small(**kw):
    args = dict(ngf=8, n_downsample=2, n_blocks=2)
    args.update(kw)
    return Generator(C, **args)


def test_global_generator_shape_and_range():
    torch.manual_seed(0)
    g = small()
    y = g(torch.randn(2, C, 32, 32))
    assert y.shape == (2, 3, 32, 32)
    assert y.abs().max() <= 1 and y.std() > 0


def test_local_enhancer_full_and_global_stage_resolutions():
    torch.manual_seed(0)
    g = small(n_local_enhancers=1, n_blocks_local=1)
    x = torch.randn(2, C, 32, 32)
    assert g(x, stage="full").shape == (2, 3, 32, 32)
    assert g(x, stage="global").shape == (2, 3, 16, 16)
    g2 = small(n_local_enhancers=2, n_blocks_local=1)
    assert g2(torch.randn(1, C, 64, 64)).shape == (1, 3, 64, 64)
    assert g2(torch.randn(1, C, 64, 64), stage="global").shape == (1, 3, 16, 16)
    # the global net runs ngf * 2**n_local wide; parameter groups partition the model
    assert g.global_net.stem[0].out_channels == 16
    n_all = sum(p.numel() for p in g.parameters())
    assert sum(p.numel() for p in g.global_net.parameters()) + sum(p.numel() for p in g.enhancers.parameters()) == n_all
    assert sum(p.numel() for p in small().enhancers.parameters()) == 0


def test_global_stage_gives_no_gradient_to_enhancer():
    g = small(n_local_enhancers=1, n_blocks_local=1)
    g(torch.randn(1, C, 32, 32), stage="global").mean().backward()
    assert all(p.grad is None for p in g.enhancers.parameters())
    assert all(p.grad is not None for p in g.global_net.to_rgb.parameters())


def test_gradients_reach_layout_and_text():
    torch.manual_seed(0)
    g = small(text_dim=6, n_local_enhancers=1, n_blocks_local=1)
    layout = torch.randn(2, C, 32, 32, requires_grad=True)
    text = torch.randn(2, 6, requires_grad=True)
    g(layout, text).square().mean().backward()
    assert layout.grad.abs().sum() > 0
    # FiLM starts at the identity, so the text itself gets zero gradient but every FiLM weight learns
    films = [m for m in g.modules() if isinstance(m, FiLM)]
    assert len(films) == 2 + 1  # one per residual block (global 2, enhancer 1)
    assert all(f.proj.weight.grad.abs().sum() > 0 for f in films)
    # once FiLM is non-zero, the gradient reaches the text embedding
    for f in films:
        torch.nn.init.normal_(f.proj.weight, std=0.1)
    text.grad = None
    g(layout, text).square().mean().backward()
    assert text.grad.abs().sum() > 0


def test_film_without_text_is_exact_identity_and_zero_init_is_identity():
    film = FiLM(5, 4)
    x = torch.randn(2, 5, 3, 3)
    assert film(x, None) is x
    assert torch.equal(film(x, torch.randn(2, 4)), x)
    torch.nn.init.normal_(film.proj.weight)
    y = film(x, torch.randn(2, 4))
    assert not torch.allclose(y, x)
    # a block with FiLM and no text equals the same block without FiLM
    torch.manual_seed(1)
    with_film = ResnetBlock(5, text_dim=4)
    torch.nn.init.normal_(with_film.film.proj.weight)
    plain = ResnetBlock(5)
    plain.load_state_dict({k: v for k, v in with_film.state_dict().items() if not k.startswith("film")})
    assert torch.equal(with_film(x, None), plain(x))


def test_generator_with_text_channel_but_no_text_equals_textless_generator():
    torch.manual_seed(0)
    g_text = small(text_dim=6)
    for m in g_text.modules():
        if isinstance(m, FiLM):
            torch.nn.init.normal_(m.proj.weight)
    g_plain = small()
    g_plain.load_state_dict({k: v for k, v in g_text.state_dict().items() if ".film." not in k})
    x = torch.randn(2, C, 32, 32)
    assert torch.equal(g_text(x), g_plain(x))
    assert not torch.allclose(g_text(x, torch.randn(2, 6)), g_plain(x))


@pytest.mark.parametrize("with_text", [False, True])
def test_compiles_fullgraph_without_graph_breaks(with_text):
    torch.manual_seed(0)
    g = small(text_dim=6 if with_text else 0, n_local_enhancers=1, n_blocks_local=1)
    text = torch.randn(2, 6) if with_text else None
    x = torch.randn(2, C, 32, 32)
    compiled = torch.compile(g, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, text), g(x, text), atol=1e-6)
    assert compiled(x, text, stage="global").shape == (2, 3, 16, 16)


def test_channels_last_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    g = small(text_dim=6, n_local_enhancers=1, n_blocks_local=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, C, 32, 32).to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = g(x, torch.randn(2, 6))
    assert y.shape == (2, 3, 32, 32) and y.dtype == torch.bfloat16
    assert torch.isfinite(y.float()).all()
    y.float().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_transpose_upsampling_option_and_bad_inputs():
    assert small(upsample="transpose")(torch.randn(1, C, 16, 16)).shape == (1, 3, 16, 16)
    g = small()
    with pytest.raises(ConfigError, match="multiple of 4"):
        g(torch.randn(1, C, 18, 18))
    with pytest.raises(ConfigError, match=f"layout must be \\(B, {C}, H, W\\)"):
        g(torch.randn(1, C + 1, 16, 16))
    with pytest.raises(ConfigError, match="text_dim=0"):
        g(torch.randn(1, C, 16, 16), torch.randn(1, 4))
    with pytest.raises(ConfigError, match="stage"):
        g(torch.randn(1, C, 16, 16), stage="local")
    with pytest.raises(ConfigError, match="norm"):
        small(norm="layer")


def test_layout_skips_feed_the_layout_at_every_decoder_scale():
    torch.manual_seed(0)
    g = Generator(5, ngf=4, n_downsample=2, n_blocks=1, layout_skips=True)
    assert [up.conv.in_channels for up in g.global_net.up] == [16 + 5, 8 + 5]
    layout = torch.rand(1, 5, 16, 16, requires_grad=True)
    out = g(layout)
    assert out.shape == (1, 3, 16, 16)
    # a change of one layout pixel reaches the output through the skip path at full resolution
    out[0, :, 3, 3].sum().backward()
    assert layout.grad[0, :, 3, 3].abs().sum() > 0
    compiled = torch.compile(g, fullgraph=True, backend="eager")
    x = torch.randn(2, 5, 16, 16)
    assert torch.allclose(compiled(x), g(x), atol=1e-6)


def _old_site(g, point):
    """Where editing hooked the generator before the modulation points existed (a forward pre-hook)."""
    head = g.enhancers[-1].to_rgb if g.n_local_enhancers else g.global_net.to_rgb
    if point == "output":  # the head's input, which is its conv's (the head itself is no longer called whole)
        return head[0]
    if point == "rgb":
        return head[-1]
    up = g.global_net.up
    return up[0] if len(up) else g.global_net.to_rgb


@pytest.mark.parametrize("point", Generator.MODULATION_POINTS)
@pytest.mark.parametrize("kw", [{}, {"n_local_enhancers": 1, "n_blocks_local": 1}, {"layout_skips": True}],
                         ids=["global", "enhancer", "skips"])
def test_modulation_points_replace_the_features_where_a_hook_used_to(point, kw):
    torch.manual_seed(0)
    g = small(**kw).eval()
    x = torch.randn(2, C, 32, 32)
    plain = g(x)
    seen = []

    def shift(h):
        seen.append(h.shape[1])
        return h * 1.5 + 0.25

    out = g(x, modulate={point: shift})
    assert seen == [g.modulation_channels(point)]
    assert out.shape == plain.shape and not torch.allclose(out, plain)
    assert torch.equal(g(x, modulate={point: lambda h: h}), plain)  # an identity modulation changes nothing
    hook = _old_site(g, point).register_forward_pre_hook(lambda _m, inputs: (inputs[0] * 1.5 + 0.25, *inputs[1:]))
    try:
        assert torch.allclose(g(x), out, atol=1e-6)
    finally:
        hook.remove()


def test_modulation_reaches_the_image_with_gradients_and_rejects_unknown_points():
    torch.manual_seed(0)
    g = small(n_local_enhancers=1, n_blocks_local=1)
    x = torch.randn(1, C, 32, 32)
    # 'rgb' is before the tanh: a large shift saturates every pixel
    assert torch.allclose(g(x, modulate={"rgb": lambda h: h + 50.0}), torch.ones(1, 3, 32, 32))
    # at stage='global' the output point is the global net's own head
    assert g.modulation_channels("output", stage="global") == 16 and g.modulation_channels("output") == 8
    gamma = torch.zeros(g.modulation_channels("decoder"), requires_grad=True)
    g(x, modulate={"decoder": lambda h: h * (1 + gamma[None, :, None, None])}).mean().backward()
    assert gamma.grad is not None and gamma.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="unknown modulation point 'decoderr'.*decoder, output, rgb"):
        g(x, modulate={"decoderr": lambda h: h})
    with pytest.raises(ConfigError, match="unknown modulation point 'input'"):
        g.modulation_channels("input")
    with pytest.raises(ConfigError, match="modulate must be a mapping"):
        g(x, modulate=[lambda h: h])


def test_compiles_fullgraph_with_a_modulation():
    torch.manual_seed(0)
    g = small(n_local_enhancers=1, n_blocks_local=1)
    x = torch.randn(2, C, 32, 32)
    scale = torch.full((8,), 0.5)
    modulate = {"output": lambda h: h * scale[None, :, None, None]}
    compiled = torch.compile(g, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, modulate=modulate), g(x, modulate=modulate), atol=1e-6)
