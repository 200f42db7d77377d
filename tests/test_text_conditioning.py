"""Text conditioning: captions -> FiLM, descriptions -> graph encoder and style prior, text dropout,
the text encoder's spec in checkpoints, and training with text (resume stays exact)."""
import copy
import json
import math

import pytest
import torch

from conftest import REPO, TINY_CLIP, TINY_MODEL, tiny_overrides
from layout2img import SceneGraphToImage
from layout2img.config import load_config
from layout2img.data.batch import collate
from layout2img.errors import CheckpointError, ConfigError
from layout2img.graph import SceneGraph
from layout2img.models.normalization import FiLM
from layout2img.models.text import TextEncoder
from layout2img.training import checkpoint as ckpt
from layout2img.training.trainer import Trainer

TEXT_CONFIG = REPO / "configs" / "shapes_text_64.yaml"
TINY = dict(TINY_MODEL, text_dim=24)
GRAPH = {"objects": ["circle", "square", "sky", "grass"],
         "relationships": [[0, "left of", 1], [2, "above", 3], [1, "above", 3]],
         "boxes": [[0.1, 0.5, 0.4, 0.8], [0.55, 0.5, 0.9, 0.85], [0, 0, 1, 0.5], [0, 0.5, 1, 1]]}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    return TextEncoder.from_config(TINY_CLIP).save_pretrained(tmp_path_factory.mktemp("clip") / "clip_tiny")


def _wake_text_layers(model, seed=1):
    """Trained-looking text layers: FiLM and the prior's last layer are zero (identity) at init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FiLM):
                m.proj.weight.copy_(torch.randn(m.proj.weight.shape, generator=g) * 0.5)
                m.proj.bias.copy_(torch.randn(m.proj.bias.shape, generator=g) * 0.5)
        last = model.style_prior.net[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=g))
    return model


@pytest.fixture
def model(clip_dir):
    torch.manual_seed(0)
    return _wake_text_layers(SceneGraphToImage(**TINY, text_encoder=str(clip_dir))).eval()


def _batch(model, captions, descriptions=None):
    graphs = []
    for i, cap in enumerate(captions):
        d = dict(GRAPH, caption=cap)
        if descriptions is not None:
            d["descriptions"] = descriptions[i]
        graphs.append(SceneGraph.from_dict(d, model.vocab).to_item(model.vocab))
    return collate(graphs)


def test_film_is_the_identity_for_images_without_a_caption(model):
    batch = _batch(model, ["a red circle left of a blue square", None])
    codes = torch.randn(batch.objs.shape[0], 4, generator=torch.Generator().manual_seed(0))
    texts = model.encode_texts(batch, ground_captions=False)  # the caption only, FiLM's input
    assert texts.text_mask.tolist() == [True, False] and not texts.obj_text_mask.any()
    assert texts.text_emb[1].abs().sum() == 0 and torch.allclose(texts.text_emb[0].norm(), torch.tensor(1.0))
    with torch.no_grad():
        mixed = model(batch, layout_source="gt", style_codes=codes, **texts.as_kwargs()).images
        plain = model(batch, layout_source="gt", style_codes=codes).images
        all_text = model(batch, layout_source="gt", style_codes=codes, text_emb=texts.text_emb).images
    # row 1 has no caption: exactly the text-free output, although its FiLM input row is zero
    assert torch.allclose(mixed[1], plain[1], atol=1e-6)
    assert (mixed[0] - plain[0]).abs().max() > 1e-2
    assert torch.allclose(mixed[0], all_text[0], atol=1e-6)
    # a zero caption vector is *not* the identity (FiLM's bias): the mask is what makes it one
    assert (all_text[1] - plain[1]).abs().max() > 1e-2


def test_render_applies_the_caption_only_where_the_mask_says(model):
    batch = _batch(model, ["a red circle left of a blue square", None])
    codes = torch.randn(batch.objs.shape[0], 4, generator=torch.Generator().manual_seed(0))
    texts = model.encode_texts(batch, ground_captions=False)
    with torch.no_grad():
        out = model(batch, layout_source="gt", style_codes=codes, **texts.as_kwargs())
        plain = model(batch, layout_source="gt", style_codes=codes)
        assert torch.equal(model.render(out.layout, codes, texts.text_emb, texts.text_mask), out.images)
        assert torch.equal(model.render(out.layout, codes), plain.images)
        # caption_mask None: every image gets FiLM (editing's caption offset on a caption-free image)
        film_all = model.render(out.layout, codes, texts.text_emb)
    assert torch.allclose(film_all[0], out.images[0], atol=1e-6)
    assert (film_all[1] - plain.images[1]).abs().max() > 1e-2


def test_captions_change_the_output_and_override_graph_captions(model):
    red = model.generate(GRAPH, seed=0, text="a red circle left of a blue square")
    blue = model.generate(GRAPH, seed=0, text="a blue circle left of a red square")
    none = model.generate(GRAPH, seed=0)
    assert (red - blue).abs().max() > 1e-2 and (red - none).abs().max() > 1e-2
    assert torch.equal(red, model.generate(GRAPH, seed=0, text="a red circle left of a blue square"))
    # a graph's own caption is used, and text= replaces it
    captioned = dict(GRAPH, caption="a red circle left of a blue square")
    assert torch.equal(model.generate(captioned, seed=0), red)
    assert torch.equal(model.generate(captioned, seed=0, text="a blue circle left of a red square"), blue)
    # one caption per graph, None for none
    text = "a red circle left of a blue square"
    both = model.generate([GRAPH, GRAPH], seed=0, text=[text, None])
    assert torch.allclose(both[0], model.generate([GRAPH, GRAPH], seed=0, text=text)[0], atol=1e-6)
    assert torch.allclose(both[1], model.generate([GRAPH, GRAPH], seed=0)[1], atol=1e-6)
    with pytest.raises(ConfigError, match="one caption per graph"):
        model.generate([GRAPH, GRAPH], text=["a", "b", "c"])


def test_descriptions_steer_their_object_through_the_text_prior(model):
    desc = ["a green circle", None, None, None]
    out_d = model.generate(dict(GRAPH, descriptions=desc), seed=0, return_output=True)
    out_n = model.generate(GRAPH, seed=0, return_output=True)
    # only the described object's code follows the prior; the others are the same N(0, I) draws
    assert out_d.prior_mask.tolist() == [True, False, False, False, False]
    assert not torch.allclose(out_d.style_codes[0], out_n.style_codes[0])
    assert torch.equal(out_d.style_codes[1:], out_n.style_codes[1:])
    assert (out_d.images - out_n.images).abs().max() > 1e-3
    other = model.generate(dict(GRAPH, descriptions=["a purple circle", None, None, None]), seed=0,
                           return_output=True)
    assert not torch.allclose(other.style_codes[0], out_d.style_codes[0])
    # a caption puts every real object of its image under the prior (not __image__)
    out_c = model.generate(GRAPH, seed=0, text="a red circle", return_output=True)
    assert out_c.prior_mask.tolist() == [True, True, True, True, False]


def test_captions_are_grounded_on_the_objects_they_name(model):
    from layout2img.pipeline import caption_phrase

    caption = "a large black star to the left of a white square, on grass in front of a wall"
    assert [caption_phrase(caption, n) for n in ("star", "square", "grass", "wall", "circle", "__image__")] == [
        "a large black star", "a white square", "grass", "a wall", None, None]
    batch = _batch(model, ["a small red circle above a blue square, on grass under the sky", None],
                   [[None, "a green square", None, None], [None] * 4])
    grounded = model.encode_texts(batch)
    plain = model.encode_texts(batch, ground_captions=False)
    # image 0: circle, sky and grass get their caption phrases; the square keeps its own description
    assert grounded.obj_text_mask.tolist() == [True, True, True, True, False] + [False] * 5
    assert plain.obj_text_mask.tolist() == [False, True, False, False, False] + [False] * 5
    enc = model.text_encoder
    assert torch.allclose(grounded.obj_text_emb[0], enc.encode_text(["a small red circle"])[0])
    assert torch.allclose(grounded.obj_text_emb[1], enc.encode_text(["a green square"])[0])
    assert torch.allclose(grounded.obj_text_emb[2], enc.encode_text(["the sky"])[0])
    assert torch.allclose(grounded.obj_text_emb[3], enc.encode_text(["grass"])[0])


def test_text_dropout_is_deterministic_per_generator(model):
    batch = _batch(model, [f"caption {i}" for i in range(6)],
                   [[f"thing {i} {j}" for j in range(4)] for i in range(6)])
    n = batch.num_images + batch.objs.shape[0]

    def masks(seed, p):
        g = torch.Generator().manual_seed(seed)
        t = model.encode_texts(batch, drop_prob=p, generator=g)
        return torch.cat([t.text_mask, t.obj_text_mask]).tolist(), g

    a, ga = masks(3, 0.5)
    b, _ = masks(3, 0.5)
    c, _ = masks(4, 0.5)
    assert a == b and a != c
    present = [True] * 6 + [o != 0 for o in batch.objs.tolist()]  # __image__ has no description
    assert masks(3, 0.0)[0] == present and not any(masks(3, 1.0)[0])
    assert sum(a) not in (0, sum(present))
    # exactly one draw of B + O numbers, whatever the batch holds
    ref = torch.Generator().manual_seed(3)
    torch.rand(n, generator=ref)
    assert torch.equal(ga.get_state(), ref.get_state())
    g = torch.Generator().manual_seed(3)
    model.encode_texts(_batch(model, [None] * 6), drop_prob=0.5, generator=g)
    assert torch.equal(g.get_state(), ref.get_state())


def test_text_encoder_is_frozen_shared_and_outside_the_parameters(model):
    enc_params = {id(p) for p in model.text_encoder.parameters()}
    assert enc_params and not enc_params & {id(p) for p in model.parameters()}  # the optimiser never sees it
    assert not any(k.startswith("text_encoder") for k in model.state_dict())
    assert all(not p.requires_grad for p in model.text_encoder.parameters())
    ema = copy.deepcopy(model)
    assert ema.text_encoder is model.text_encoder  # the EMA copy shares the one encoder
    assert ema.generator is not model.generator
    model.train()
    assert not model.text_encoder.model.training  # not a submodule: .train() leaves it in eval mode
    model.eval()
    with pytest.raises(ConfigError, match="embeds in 24 dimensions, the model's text_dim is 16"):
        SceneGraphToImage(**{**TINY, "text_dim": 16}).set_text_encoder(model.text_encoder)
    model.set_text_encoder(None)
    assert model.text_encoder is None and "text_encoder" not in model.config


def test_checkpoint_carries_its_text_encoder(model, tmp_path):
    """A text checkpoint works after the CLIP folder it was trained with is moved or deleted."""
    import shutil

    clip = TextEncoder.load(model.config["text_encoder"]).save_pretrained(tmp_path / "clip_moving")
    m = SceneGraphToImage(**TINY, text_encoder=str(clip))
    m.load_state_dict(model.state_dict())
    m.eval()
    text = "a red circle left of a blue square"
    before = m.generate(GRAPH, seed=2, text=text)
    folder = m.save_pretrained(tmp_path / "run" / "checkpoints" / "step_1")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["text_encoder"] == str(clip) and cfg["text_encoder_folder"] == "text_encoder"
    assert cfg["format_version"] == 2 and cfg["text_encoder_fingerprint"] == m.text_encoder.fingerprint()
    assert sorted(p.name for p in (folder / "text_encoder").iterdir()) == ["config.json", "model.safetensors"]
    from safetensors.torch import load_file

    assert set(load_file(str(folder / "model.safetensors"))) == set(m.state_dict())  # no CLIP tensors there
    shutil.rmtree(clip)
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.text_encoder is not None and loaded.config["text_encoder"] == str(clip)
    assert torch.equal(loaded.generate(GRAPH, seed=2, text=text), before)
    # saved again (e.g. by a run that started from it): still self-contained
    again = SceneGraphToImage.from_pretrained(loaded.save_pretrained(tmp_path / "copy"))
    assert torch.equal(again.generate(GRAPH, seed=2, text=text), before)
    # the bundled weights are checked against the fingerprint too
    cfg["text_encoder_fingerprint"] = "sha256:0000000000000000"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"text_encoder: the bundled text encoder's weights .* are not"):
        SceneGraphToImage.from_pretrained(folder)


def _as_spec_checkpoint(folder):
    """A checkpoint as layout2img 0.1 wrote it: the text encoder named by its spec, not bundled."""
    import shutil

    shutil.rmtree(folder / "text_encoder")
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["text_encoder_folder"], cfg["format_version"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return cfg


def test_spec_path_checkpoints_load_as_before(model, clip_dir, tmp_path, monkeypatch):
    folder = model.save_pretrained(tmp_path / "run" / "checkpoints" / "step_1")
    cfg = _as_spec_checkpoint(folder)
    assert cfg["text_encoder"] == str(clip_dir) and cfg["text_dim"] == 24
    loaded = SceneGraphToImage.from_pretrained(folder)
    assert loaded.text_encoder is not None and loaded.text_encoder.embed_dim == 24
    text = "a red circle left of a blue square"
    assert torch.equal(loaded.generate(GRAPH, seed=2, text=text), model.generate(GRAPH, seed=2, text=text))
    # a relative spec is found beside the run (from any working directory) and saved as written
    (tmp_path / "run" / "clip").symlink_to(clip_dir, target_is_directory=True)
    cfg["text_encoder"] = "clip"
    (folder / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    again = SceneGraphToImage.from_pretrained(folder)
    assert again.text_encoder is not None and again.config["text_encoder"] == "clip"
    cfg["text_encoder"] = "runs/clip_missing"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"runs/clip_missing: no such CLIP folder.*layout2img train-clip"):
        SceneGraphToImage.from_pretrained(folder)
    # a different CLIP at the named path (retrained, say) is refused, not silently used
    assert cfg["text_encoder_fingerprint"] == model.text_encoder.fingerprint()
    torch.manual_seed(1)
    other = TextEncoder.from_config(TINY_CLIP).save_pretrained(tmp_path / "other_clip")
    cfg["text_encoder"] = str(other)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"is not the CLIP this model was trained with.*expected sha256:"):
        SceneGraphToImage.from_pretrained(folder)


def test_is_path_spec_tells_folders_and_files_from_open_clip_names():
    from layout2img.pipeline import is_path_spec

    for spec in ("runs/clip_shapes", "clip", "./clip", "~/clip", "ViT-B-32=/models/clip.bin", "C:\\clip"):
        assert is_path_spec(spec), spec
    for spec in ("ViT-B-32/openai", "RN50/openai", "hf-hub:org/model", "local-dir:/x"):
        assert not is_path_spec(spec), spec


def test_text_config_errors(clip_dir):
    with pytest.raises(ConfigError, match=r"text_dim is 16, but the text encoder .* embeds in 24.*text_dim: 24"):
        SceneGraphToImage(**{**TINY, "text_dim": 16}, text_encoder=str(clip_dir))
    with pytest.raises(ConfigError, match=r"runs/nothing_here: no such CLIP folder.*train-clip"):
        SceneGraphToImage(**TINY, text_encoder="runs/nothing_here")
    # text without an encoder: the clear error, for text-free and text-dim models alike
    for text_dim in (0, 24):
        m = SceneGraphToImage(**{**TINY, "text_dim": text_dim})
        with pytest.raises(ConfigError, match="no text encoder"):
            m.generate(GRAPH, text="a red circle")
        assert m.generate(dict(GRAPH, caption="ignored"), seed=0).shape == (1, 3, 32, 32)


def _text_overrides(shapes, out, clip_dir, **extra):
    return tiny_overrides(shapes, out, **{"model.text_encoder": str(clip_dir), "model.text_dim": 24,
                                          "train.text_dropout": 0.5, "loss.lambda_clip": 0.1, **extra})


def _fit(overrides):
    trainer = Trainer(load_config(TEXT_CONFIG, overrides))
    try:
        return trainer, trainer.fit()
    finally:
        trainer.close()


def test_training_with_text_resumes_exactly(tiny_shapes, tmp_path, clip_dir, monkeypatch):
    from safetensors.torch import load_file

    import layout2img.training.trainer as trainer_module

    seen = []
    real_step = trainer_module.Trainer.train_step

    def recording(self, batch):
        values = real_step(self, batch)
        seen.append(values)
        return values

    monkeypatch.setattr(trainer_module.Trainer, "train_step", recording)
    trainer, straight = _fit(_text_overrides(tiny_shapes, tmp_path / "a", clip_dir, max_steps=4, checkpoint_every=2))
    assert trainer.d_image.text_dim == 24 and trainer.d_image.text_proj is not None
    assert seen and all({"prior", "clip"} <= set(v) and all(map(math.isfinite, v.values())) for v in seen)
    _fit(_text_overrides(tiny_shapes, tmp_path / "b", clip_dir, max_steps=2, checkpoint_every=2))
    _, resumed = _fit(_text_overrides(tiny_shapes, tmp_path / "b", clip_dir, max_steps=4, checkpoint_every=2))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = ckpt.load_training_state(straight), ckpt.load_training_state(resumed)
    assert torch.equal(sa["rng"]["noise"], sb["rng"]["noise"])
    loaded = SceneGraphToImage.from_pretrained(straight)
    assert loaded.text_encoder is not None
    assert loaded.generate(GRAPH, seed=0, text="a red circle").shape == (1, 3, 32, 32)


def test_init_from_copies_weights_and_keeps_text_layers(tiny_shapes, tiny_checkpoint, tmp_path, clip_dir):
    trainer = Trainer(load_config(TEXT_CONFIG, _text_overrides(
        tiny_shapes, tmp_path / "c", clip_dir, **{"train.init_from": str(tiny_checkpoint)})))
    try:
        base = SceneGraphToImage.from_pretrained(tiny_checkpoint).state_dict()
        own = trainer.model.state_dict()
        assert all(torch.equal(own[k], v) for k, v in base.items())
        new_layers = [k for k in own if k not in base]  # what the text-free checkpoint lacks
        assert new_layers and all(k.startswith(("style_prior", "gcn.text_proj")) or ".film." in k for k in new_layers)
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="no model.safetensors"):
        Trainer(load_config(TEXT_CONFIG, _text_overrides(
            tiny_shapes, tmp_path / "d", clip_dir, **{"train.init_from": str(tmp_path)})))


def test_text_config_without_the_clip_folder_says_how_to_make_it(tiny_shapes, tmp_path):
    with pytest.raises(ConfigError, match="train-clip"):
        Trainer(load_config(TEXT_CONFIG, tiny_overrides(
            tiny_shapes, tmp_path / "e", **{"model.text_encoder": str(tmp_path / "no_clip"), "model.text_dim": 24})))
