"""The CLIP text encoder wrapper: caching, differentiable images, the three ways to load one."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_CLIP

from layout2img.errors import CheckpointError, ConfigError
from layout2img.models.text import TextEncoder



@pytest.fixture
def encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder.from_config(TINY_CLIP)


def _count_text_calls(enc: TextEncoder) -> list[int]:
    """Rows each run of the text tower embeds (every path to the tower goes through _encode_tokens)."""
    calls = []
    encode = enc._encode_tokens

    def counting(tokens):
        calls.append(tokens.shape[0])
        return encode(tokens)

    enc._encode_tokens = counting
    return calls


def test_encode_text_is_normalised_and_cached(encoder):
    calls = _count_text_calls(encoder)
    texts = ["a red circle", "a blue square", "a red circle"]
    emb = encoder.encode_text(texts)
    assert emb.shape == (3, 24) and encoder.embed_dim == 24
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(emb[0], emb[2])
    assert not torch.allclose(emb[0], emb[1])
    assert calls == [2]  # the two distinct texts, in one batch
    again = encoder.encode_text(["a blue square", "a red circle"])
    assert calls == [2]  # all from the cache: the model did not run
    assert torch.equal(again, emb[[1, 0]])
    encoder.encode_text(["a green star", "a red circle"])
    assert calls == [2, 1]  # only the new text runs
    # the cached rows equal a fresh, uncached computation
    fresh = torch.nn.functional.normalize(encoder.model.encode_text(encoder.tokenize(["a red circle"])), dim=-1)
    assert torch.allclose(fresh[0], emb[0], atol=1e-6)


def test_cache_is_bounded_lru(encoder):
    encoder.cache_size = 2
    encoder.encode_text(["a", "b"])
    encoder.encode_text(["a"])  # 'a' is now the most recent
    encoder.encode_text(["c"])  # evicts 'b'
    assert list(encoder._cache) == ["a", "c"]


def test_encode_text_rejects_a_bare_string(encoder):
    with pytest.raises(ConfigError, match="list of strings"):
        encoder.encode_text("a red circle")
    assert encoder.encode_text([]).shape == (0, 24)


def test_frozen_encoder_has_no_trainable_weights_and_stays_in_eval(encoder):
    assert encoder.frozen
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.Module()
    parent.text = encoder
    parent.train()
    assert not encoder.model.training and not encoder.model.visual.bn1.training


def test_encode_image_is_differentiable_wrt_the_images(encoder):
    images = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)  # resized to 32 inside
    emb = encoder.encode_image(images)
    assert emb.shape == (2, 24)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    target = encoder.encode_text(["a red circle"])
    (emb @ target.T).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        encoder.encode_image(torch.zeros(3, 32, 32))


def test_preprocess_uses_the_models_size_mean_and_std(encoder):
    x = encoder.preprocess(torch.zeros(1, 3, 64, 64))  # mid grey
    assert x.shape == (1, 3, 32, 32)
    expected = (0.5 - encoder.image_mean) / encoder.image_std
    assert torch.allclose(x[0, :, 0, 0], expected.flatten(), atol=1e-6)


def test_save_and_from_pretrained_round_trip(encoder, tmp_path):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    texts = ["a red circle above a blue square", "snow"]
    before_t, before_i = encoder.encode_text(texts), encoder.encode_image(images)
    encoder.save_pretrained(tmp_path / "clip", metadata={"step": 7})
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert config["model_class"] == "TextEncoder" and config["clip"]["embed_dim"] == 24
    loaded = TextEncoder.load(str(tmp_path / "clip"))  # a folder: the domain CLIP
    assert loaded.frozen and loaded.metadata == {"step": 7}
    assert torch.equal(loaded.encode_text(texts), before_t)
    assert torch.equal(loaded.encode_image(images), before_i)


def test_from_pretrained_rejects_other_folders(tmp_path, encoder):
    (tmp_path / "gan").mkdir()
    (tmp_path / "gan" / "config.json").write_text(json.dumps({"model_class": "SceneGraphToImage"}))
    (tmp_path / "gan" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a CLIP folder"):
        TextEncoder.from_pretrained(tmp_path / "gan")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        TextEncoder.from_pretrained(tmp_path / "half")
    encoder.save_pretrained(tmp_path / "clip")
    cfg = json.loads((tmp_path / "clip" / "config.json").read_text())
    cfg["clip"]["embed_dim"] = 16
    (tmp_path / "clip" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        TextEncoder.from_pretrained(tmp_path / "clip")


def test_pretrained_tag_offline_fails_fast_with_the_alternatives(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # No network here; offline mode makes the hub fail at once instead of retrying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        TextEncoder.load("ViT-B-32/openai", cache_dir=str(tmp_path / "empty-cache"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("cannot load CLIP 'ViT-B-32/openai': no network/cache (")
    assert "local checkpoint" in msg and "layout2img train-clip" in msg


def test_bad_specs_are_one_line_errors():
    with pytest.raises(ConfigError, match="no pretrained tag 'nonsense'.*openai"):
        TextEncoder.load("ViT-B-32/nonsense")
    with pytest.raises(ConfigError, match="'ViT-B-33' is not an open_clip model.*ViT-B-32"):
        TextEncoder.load("ViT-B-33/openai")
    with pytest.raises(ConfigError, match="no such file or folder"):
        TextEncoder.load("missing/clip.safetensors")
    with pytest.raises(ConfigError, match="NAME/TAG"):
        TextEncoder.load("ViT-B-32")


@pytest.fixture
def tiny_arch(tmp_path):
    """A tiny architecture registered with open_clip under a name, as a built-in one would be."""
    import open_clip

    name = "l2i-test-tiny"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(path)
    return name


def test_local_checkpoint_files_load_weights_only(tmp_path, tiny_arch):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.create_model(tiny_arch)
    state = model.state_dict()
    texts = ["a purple heart"]
    want = torch.nn.functional.normalize(model.eval().encode_text(open_clip.get_tokenizer(tiny_arch)(texts)), dim=-1)

    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.bin")
    enc = TextEncoder.load(f"{tiny_arch}={tmp_path / 'ckpt.bin'}")
    assert enc.source == {"kind": "file", "model": tiny_arch, "path": str(tmp_path / "ckpt.bin")}
    assert torch.allclose(enc.encode_text(texts), want, atol=1e-6)

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ckpt.safetensors"))
    enc = TextEncoder.load(str(tmp_path / "ckpt.safetensors"), model_name=tiny_arch)
    assert torch.allclose(enc.encode_text(texts), want, atol=1e-6)

    with pytest.raises(ConfigError, match="name the checkpoint's open_clip architecture"):
        TextEncoder.load(str(tmp_path / "ckpt.safetensors"))
    # Anything but tensors is refused, never unpickled.
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": object.__new__(_Pickled)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        TextEncoder.load(f"{tiny_arch}={tmp_path / 'evil.pt'}")
    save_file({"visual.conv1.weight": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match=f"does not fit open_clip model {tiny_arch}"):
        TextEncoder.load(f"{tiny_arch}={tmp_path / 'wrong.safetensors'}")


class _Pickled:
    pass


def test_text_features_stop_at_the_end_token_without_changing_the_result(encoder):
    # Rows of very different lengths: each runs only up to its end-of-text token, in buckets.
    texts = ["snow", "a red circle to the left of a blue square, on grass under the sky", "a small red circle"]
    tokens = encoder.tokenize(texts)
    assert encoder._can_trim()
    want = encoder.model.encode_text(tokens)
    got = encoder._text_features(tokens)
    assert torch.allclose(got, want, atol=1e-5)


def test_loading_new_weights_clears_the_text_cache(encoder):
    before = encoder.encode_text(["a red circle"])
    other = TextEncoder.from_config(TINY_CLIP)  # different random weights
    parent = torch.nn.Module()
    parent.text = encoder
    parent.load_state_dict({f"text.{k}": v for k, v in other.state_dict().items()})
    after = encoder.encode_text(["a red circle"])
    assert not torch.allclose(before, after)
    assert torch.allclose(after, other.encode_text(["a red circle"]), atol=1e-6)
