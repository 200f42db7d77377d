"""SceneGraphToImage: forward, generate, determinism, save/load, configs, compile / bf16 / channels_last."""
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLIP, TINY_MODEL

from layout2img import SceneGraphToImage
from layout2img.config import load_model_section
from layout2img.data.batch import collate
from layout2img.errors import CheckpointError, ConfigError, DataError, GraphError, Layout2ImgError
from layout2img.graph import SceneGraph
from layout2img.models.text import TextEncoder
from layout2img.pipeline import ModelOutput

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
TINY = TINY_MODEL
GRAPH = {"objects": ["circle", "square", "sky", "grass"],
         "relationships": [[0, "left of", 1], [2, "above", 3], [1, "above", 3]]}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SceneGraphToImage(**TINY)


def _item(objs, triples, boxes, size=32, mask_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(objs) + 1
    triples = list(triples) + [[i, 0, n - 1] for i in range(n - 1)]
    masks = (torch.rand(n, mask_size, mask_size, generator=g) > 0.3).float()
    masks[-1] = 1
    return {"objs": torch.tensor(list(objs) + [0]), "triples": torch.tensor(triples),
            "boxes": torch.tensor(list(boxes) + [[0, 0, 1, 1]], dtype=torch.float32), "masks": masks,
            "image": torch.rand(3, size, size, generator=g) * 2 - 1}


def _batch():
    return collate([
        _item([1, 2, 9], [[0, 1, 1], [2, 3, 0]], [[0.1, 0.5, 0.4, 0.9], [0.5, 0.4, 0.9, 0.9], [0, 0, 1, 0.5]]),
        _item([3, 10], [[0, 3, 1]], [[0.2, 0.1, 0.6, 0.5], [0, 0.5, 1, 1]], seed=1),
    ])


# -- forward -------------------------------------------------------------------------------------
def test_forward_shapes(model):
    batch = _batch()
    out = model(batch, layout_source="gt", style_source="encode")
    assert isinstance(out, ModelOutput)
    o = batch.objs.shape[0]
    assert out.images.shape == (2, 3, 32, 32) and out.images.abs().max() <= 1
    assert out.boxes_pred.shape == (o, 4) and out.mask_logits.shape == (o, 8, 8)
    assert out.style_mu.shape == out.style_logvar.shape == out.style_codes.shape == (o, 4)
    assert out.obj_vecs.shape == (o, 16)
    assert out.layout.tensor().shape == (2, model.layout_channels, 32, 32)
    assert out.layout.for_discriminator().shape[1] == model.discriminator_layout_channels == 15
    assert torch.equal(out.boxes, batch.boxes) and torch.equal(out.masks, batch.masks)
    # __image__ objects pool over nothing: their codes are the prior's mean
    assert out.style_mu[batch.objs == 0].abs().sum() == 0
    assert model(batch, stage="global").images.shape == (2, 3, 32, 32)  # no enhancer: global == full


def test_image_size_renders_the_same_layout_smaller(model):
    batch = _batch()
    full = model(batch, layout_source="gt", style_source="sample", generator=torch.Generator().manual_seed(0))
    batch.images = torch.nn.functional.avg_pool2d(batch.images, 2)
    half = model(batch, layout_source="gt", style_source="encode", image_size=16)
    assert half.images.shape == (2, 3, 16, 16) and half.layout.tensor().shape[-2:] == (16, 16)
    # the same boxes composed on the coarser grid: each class covers about the same share of the image
    share = lambda out: out.layout.semantic.mean(dim=(2, 3))  # noqa: E731
    assert share(full).max() > 0.2 and torch.allclose(share(half), share(full), atol=0.05)
    for bad in (10, 0):
        with pytest.raises(ConfigError, match=f"image_size {bad} is not a positive multiple of 4"):
            model(batch, image_size=bad)
    with pytest.raises(DataError, match=r"batch.images are \(16, 16\), the model makes 32x32"):
        model(batch, style_source="encode")


def test_gradients_reach_every_part(model):
    batch = _batch()
    out = model(batch, layout_source="pred", style_source="encode", keep_known_boxes=False)
    assert torch.equal(out.boxes, out.boxes_pred)
    (out.images.square().mean() + out.boxes_pred.sum() + out.mask_logits.sum()
     + out.style_mu.square().sum()).backward()
    for name in ("gcn.obj_embeddings.weight", "gcn.pred_embeddings.weight", "layout_predictor.box_net.2.weight",
                 "layout_predictor.mask_net.1.weight",
                 "generator.global_net.stem.0.weight", "encoder.to_mu.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the image alone depends on predicted boxes and masks through the layout
    model.zero_grad()
    model(batch, layout_source="pred", style_source="sample", keep_known_boxes=False).images.square().mean().backward()
    assert model.layout_predictor.box_net[2].weight.grad.abs().sum() > 0
    assert model.layout_predictor.mask_net[-1].weight.grad.abs().sum() > 0


def test_layout_sources(model):
    batch = _batch()
    batch.boxes_known[:] = False
    batch.boxes_known[0] = True  # a user box for object 0 only
    out = model(batch, layout_source="pred", style_source="sample")
    assert torch.equal(out.boxes[0], batch.boxes[0])
    assert torch.equal(out.boxes[1:], out.boxes_pred[1:])
    assert torch.equal(out.masks, torch.sigmoid(out.mask_logits))
    with pytest.raises(DataError, match="needs every box"):
        model(batch, layout_source="gt")
    with pytest.raises(ConfigError, match="layout_source"):
        model(_batch(), layout_source="predicted")
    no_images = _batch()
    no_images.images = None
    with pytest.raises(DataError, match="batch.images"):
        model(no_images, style_source="encode")


def test_vg_style_weak_masks_use_predictions():
    cfg = {**TINY, "layout": {**TINY["layout"], "use_gt_masks": False}}
    m = SceneGraphToImage(**cfg)
    batch = _batch()
    out = m(batch, layout_source="gt", style_source="sample")
    assert torch.equal(out.boxes, batch.boxes) and torch.equal(out.masks, torch.sigmoid(out.mask_logits))


# -- generate ------------------------------------------------------------------------------------
def test_generate_is_deterministic_per_seed_and_leaves_global_rng(model):
    state = torch.get_rng_state()
    a = model.generate([GRAPH], seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (1, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, model.generate(SceneGraph.from_dict(GRAPH), seed=3))
    assert not torch.equal(a, model.generate([GRAPH], seed=4))
    assert model.training  # restored after generate


def test_generate_samples_and_layout(model):
    imgs, layout = model.generate([GRAPH, {"objects": ["star", "sea"], "relationships": [[0, "above", 1]]}],
                                  seed=0, num_samples=2, return_layout=True)
    assert imgs.shape == (4, 3, 32, 32)
    assert not torch.equal(imgs[0], imgs[1])  # two style samples of one graph
    assert layout.semantic.shape == (4, 14, 32, 32) and layout.instances.shape == (4, 32, 32)


def test_generate_keeps_user_boxes(model):
    graph = {**GRAPH, "boxes": [[0, 0, 0.25, 0.25], [0.5, 0.5, 1, 1], [0, 0, 1, 0.5], [0, 0.5, 1, 1]]}
    _, layout = model.generate(graph, return_layout=True)
    circle = layout.semantic[0, 0]  # 'circle' is class 1 -> channel 0
    assert circle[8:].sum() == 0 and circle[:, 8:].sum() == 0  # nothing outside its box


def test_generate_errors(model):
    with pytest.raises(ConfigError, match="no text encoder"):
        model.generate(GRAPH, text="a red circle")
    with pytest.raises(Layout2ImgError, match="unknown object 'circel'.*did you mean 'circle'"):
        model.generate({"objects": ["circel"], "relationships": []})
    with pytest.raises(GraphError, match="graph 1"):
        model.generate([GRAPH, {"objects": ["circle"], "relationships": [[0, "above", 5]]}])
    with pytest.raises(ConfigError, match="not fitted"):
        model.generate(GRAPH, style_source="cluster")


def test_style_clusters_drive_generation(model):
    codes = torch.randn(40, 4)
    classes = torch.arange(40) % model.vocab.num_objects
    model.style_clusters.fit(codes, classes, generator=torch.Generator().manual_seed(0))
    a = model.generate(GRAPH, seed=0)  # auto: clusters once fitted
    assert torch.equal(a, model.generate(GRAPH, seed=0, style_source="cluster"))
    assert not torch.equal(a, model.generate(GRAPH, seed=0, style_source="sample"))


# -- save / load -----------------------------------------------------------------------------------
def test_save_load_round_trip(model, tmp_path, monkeypatch):
    model.style_clusters.fit(torch.randn(30, 4), torch.arange(30) % 5)
    folder = model.save_pretrained(tmp_path / "ckpt", metadata={"training_step": 7})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["metadata"] == {"training_step": 7} and "layout2img_version" in cfg and "vocab" not in cfg

    def no_pickle(*a, **k):
        raise AssertionError("from_pretrained must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.config == model.config and loaded.metadata == {"training_step": 7}
    assert loaded.vocab == model.vocab and not loaded.training
    model.eval()
    assert torch.equal(model.generate(GRAPH, seed=5), loaded.generate(GRAPH, seed=5))
    assert torch.equal(model.generate(GRAPH, seed=5, style_source="cluster"),
                       loaded.generate(GRAPH, seed=5, style_source="cluster"))
    # saving again over the folder replaces it whole
    loaded.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["metadata"] == {}


def test_keys_an_old_folder_lacks_keep_the_meaning_they_had_when_it_was_written(model, tmp_path):
    """A saved config.json without ``generator.conditioning`` or ``encoder.norm`` was written when the
    defaults were v0.1's (input, instance): it loads as that model, not as today's default."""
    folder = model.save_pretrained(tmp_path / "ckpt")  # TINY: v0.1's generator and encoder, stated
    cfg = json.loads((folder / "config.json").read_text())
    for name, key in (("generator", "conditioning"), ("encoder", "norm")):
        del cfg[name][key]
    for version in (None, 2):  # format 1 (no key) and 2: both written under v0.1's defaults
        if version is None:
            cfg.pop("format_version")
        else:
            cfg["format_version"] = version
        (folder / "config.json").write_text(json.dumps(cfg))
        loaded = SceneGraphToImage.from_pretrained(folder)
        assert loaded.config == model.config
        assert (loaded.config["generator"]["conditioning"], loaded.config["encoder"]["norm"]) == ("input", "instance")
    assert SceneGraphToImage().config["generator"]["conditioning"] == "spade"  # today's default differs


def test_load_errors(model, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        SceneGraphToImage.from_pretrained(tmp_path / "nope")
    folder = model.save_pretrained(tmp_path / "ckpt")
    (folder / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="missing vocab.json"):
        SceneGraphToImage.from_pretrained(folder)
    folder = model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["generator"]["ngf"] = 8
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch: generator"):
        SceneGraphToImage.from_pretrained(folder)
    cfg["generator"]["ngf"], cfg["gcn"]["layers"] = 4, 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing .* tensor"):
        SceneGraphToImage.from_pretrained(folder)
    cfg["gcn"]["layers"], cfg["gcn"]["widht"] = 2, 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unknown key 'widht'; did you mean 'width'"):
        SceneGraphToImage.from_pretrained(folder)
    cfg["gcn"].pop("widht")
    for version, message in ((3, "format_version 3 is newer than this layout2img reads .*up to version 2.*upgrade"),
                             ("2", "format_version must be a positive integer, got '2'")):
        (folder / "config.json").write_text(json.dumps({**cfg, "format_version": version}))
        with pytest.raises(CheckpointError, match=message):
            SceneGraphToImage.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "model_class": "TextEncoder"}))
    with pytest.raises(CheckpointError, match="not a checkpoint folder: config.json's model_class is 'TextEncoder'"):
        SceneGraphToImage.from_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        SceneGraphToImage.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read"):
        SceneGraphToImage.from_pretrained(folder)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'ngff'; did you mean 'ngf'"):
        SceneGraphToImage(**{**TINY, "generator": {"ngff": 4}})
    with pytest.raises(ConfigError, match="not a multiple of 4"):
        SceneGraphToImage(**{**TINY, "image_size": 30})
    with pytest.raises(ConfigError, match="unknown key 'imagesize'"):
        SceneGraphToImage.from_config({"model": {"imagesize": 32}})


# -- configs ---------------------------------------------------------------------------------------
def _graph_of(vocab):
    names = [n for n in vocab.object_names[1:]]
    preds = vocab.predicate_names[1:]
    return {"objects": [names[0], names[len(names) // 2], names[-1]],
            "relationships": [[0, preds[0], 1], [2, preds[-1], 1]]}


def test_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"shapes_64", "coco_64", "coco_128", "coco_256", "vg_64", "vg_128"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_and_generates(path, tmp_path):
    text = {}
    section = load_model_section(path)  # the file's model section, its base files merged
    if section.get("text_encoder"):
        # a config that names a trained CLIP folder gets a tiny stand-in of the same embed_dim
        text_dim = section["text_dim"]
        clip = dict(TINY_CLIP, embed_dim=text_dim)
        text = {"text_encoder": str(TextEncoder.from_config(clip).save_pretrained(tmp_path / "clip"))}
    full = SceneGraphToImage.from_config(path, **text)  # the real size: built, not run
    size = full.image_size
    assert size == int(re.search(r"_(\d+)", path.stem).group(1))
    assert sum(p.numel() for p in full.generator.parameters()) > 1_000_000
    g = full.config["generator"]
    tiny = SceneGraphToImage.from_config(
        path, gcn={**full.config["gcn"], "width": 8, "embed_dim": 8, "hidden": 8, "layers": 1},
        layout={**full.config["layout"], "box_hidden": 8, "mask_channels": 4},
        generator={**g, "ngf": 2, "n_blocks": 1, "n_blocks_local": 1}, encoder={**full.config["encoder"], "nef": 2}, **text)
    images = tiny.generate(_graph_of(tiny.vocab), seed=0)
    assert images.shape == (1, 3, size, size) and torch.isfinite(images).all()


def test_from_config_accepts_a_model_section():
    m = SceneGraphToImage.from_config({**TINY})
    assert m.config["generator"]["ngf"] == 4 and m.config["vocab"]["name"] == "shapes"


# -- the rendering hook ------------------------------------------------------------------------------
def test_render_is_the_forward_pass_renderer_and_restyles_from_given_codes(model):
    model.eval()
    batch = _batch()
    out = model(batch, layout_source="gt", style_source="sample", generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.render(out.layout), out.images)  # the layout's own style channels
        assert torch.equal(model.render(out.layout, out.style_codes), out.images)
        other = out.style_codes.clone()
        other[0] += 2.0  # object 0 lies in image 0: image 1 must not change
        restyled = model.render(out.layout, other)
    assert not torch.allclose(restyled[0], out.images[0]) and torch.equal(restyled[1], out.images[1])
    codes = out.style_codes.detach().clone().requires_grad_()
    model.render(out.layout, codes).mean().backward()  # editing optimises the codes through it
    assert codes.grad is not None and codes.grad[0].abs().sum() > 0
    with pytest.raises(DataError, match=r"style_codes: expected a tensor of shape \(7, 4\)"):
        model.render(out.layout, out.style_codes[:3])
    with pytest.raises(ConfigError, match="unknown modulation point 'middle'"):
        model.render(out.layout, modulate={"middle": lambda h: h})


def test_render_modulates_at_a_named_point_and_follows_channels_last(model):
    model.eval()
    out = model(_batch(), layout_source="gt", style_source="sample")
    assert not model.uses_channels_last
    seen = []
    with torch.no_grad():
        dark = model.render(out.layout, modulate={"rgb": lambda h: seen.append(h.shape) or h - 50.0})
    assert seen == [(2, 3, 32, 32)] and torch.allclose(dark, -torch.ones_like(dark))
    model.to(memory_format=torch.channels_last)
    assert model.uses_channels_last
    fmt = []
    hook = model.generator.register_forward_pre_hook(
        lambda _m, inputs: fmt.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        with torch.no_grad():
            model.render(out.layout)
    finally:
        hook.remove()
    assert fmt == [True]  # the generator gets its input in its own memory format


# -- speed paths -----------------------------------------------------------------------------------
def test_channels_last_and_bf16_autocast(model):
    batch = _batch()
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, layout_source="pred", style_source="encode")
    assert out.images.shape == (2, 3, 32, 32) and torch.isfinite(out.images.float()).all()
    assert out.layout.semantic.dtype == torch.float32  # geometry stays float32 under autocast
    imgs = model.generate(GRAPH)
    assert imgs.dtype == torch.float32 and imgs.shape == (1, 3, 32, 32)


def test_generator_has_no_graph_breaks_on_the_pipeline_layout(model):
    import torch._dynamo

    out = model(_batch(), layout_source="pred", style_source="sample")
    layout_in = out.layout.tensor().detach()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.generator)(layout_in)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    # the same in channels_last under bf16 autocast, as the pipeline feeds it there
    model = model.to(memory_format=torch.channels_last)
    assert model.uses_channels_last
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explanation = torch._dynamo.explain(model.generator)(layout_in.contiguous(memory_format=torch.channels_last))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
