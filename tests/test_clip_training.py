"""Domain CLIP training: data, crops, retrieval accuracy, the loss falling, the train-clip command."""
from __future__ import annotations

import json

import pytest
import torch

from layout2img.errors import ConfigError
from layout2img.models.text import TextEncoder
from layout2img.metrics.retrieval import (RetrievalAccuracy, caption_retrieval_accuracy, object_description_accuracy,
                                          retrieval_accuracy)
from layout2img.training.clip import ClipBatchSampler, load_clip_config, train_clip
from layout2img.training.clip_data import load_clip_pairs


def tiny_clip_overrides(shapes_root, out_dir, **extra) -> list[str]:
    """configs/clip/shapes.yaml shrunk to a seconds-long CPU run on the tiny_shapes fixture."""
    o = {
        "out_dir": str(out_dir), "device": "cpu", "data.root": str(shapes_root),
        # the fixture's own parameters, so ensure_shapes reuses it as it is
        "data.prepare.num_train": 24, "data.prepare.num_val": 8, "data.prepare.size": 32,
        "model.embed_dim": 32, "model.vision_cfg.image_size": 32, "model.vision_cfg.width": 8,
        "model.vision_cfg.head_width": 16, "model.text_cfg.context_length": 24, "model.text_cfg.width": 32,
        "model.text_cfg.heads": 2, "model.text_cfg.layers": 1,
        "train.steps": 4, "train.batch_size": 8, "train.crops_per_step": 8, "train.warmup": 2,
        "train.lr": 0.002, "train.eval_every": 0, "train.log_every": 0, "train.num_candidates": 8,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def test_retrieval_accuracy_on_known_embeddings():
    text = torch.eye(5)
    image = torch.eye(5)
    image[2] = 0.6 * text[2] + 0.8 * text[3]  # closer to text 3: rank 1
    image[4] = -text[4]  # every other text scores higher: rank 4
    r = retrieval_accuracy(image, text, num_candidates=5, seed=0)
    assert r["top1"] == pytest.approx(3 / 5) and r["top5"] == pytest.approx(1.0)
    assert r["num_queries"] == 5 and r["num_candidates"] == 5
    r = retrieval_accuracy(image, text, num_candidates=5, ks=(1, 2, 4))
    assert (r["top1"], r["top2"], r["top4"]) == (pytest.approx(0.6), pytest.approx(0.8), pytest.approx(0.8))
    # A text equal to the true one (same key) is never a wrong candidate: image 2 now finds its own.
    r = retrieval_accuracy(image, text, num_candidates=3, keys=["a", "b", "c", "c", "e"])
    assert r["top1"] == pytest.approx(4 / 5)  # only image 4 misses
    with pytest.raises(ConfigError, match="only 4 distinct texts"):
        retrieval_accuracy(image, text, num_candidates=5, keys=["a", "b", "c", "c", "e"])


def test_retrieval_candidates_are_a_fixed_random_subset():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(200, 16), dim=1)
    text = torch.nn.functional.normalize(image + 0.9 * torch.randn(200, 16), dim=1)
    a = retrieval_accuracy(image, text, num_candidates=100, seed=3)
    b = retrieval_accuracy(image, text, num_candidates=100, seed=3)
    c = retrieval_accuracy(image, text, num_candidates=10, seed=3)
    assert a == b
    assert 0 < a["top1"] < c["top1"] <= 1  # fewer candidates: easier
    assert a["top1"] <= a["top5"]


def test_retrieval_metric_over_updates_equals_the_function_of_all_rows():
    torch.manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(30, 8), dim=1)
    keys = [f"caption {i % 25}" for i in range(30)]  # five captions occur twice
    metric = RetrievalAccuracy(num_candidates=10, seed=4)
    metric.update(image[:12], text[:12], keys[:12])
    metric.update(image[12:], text[12:], keys[12:])
    assert metric.compute() == retrieval_accuracy(image, text, 10, 4, keys)
    unkeyed = RetrievalAccuracy(num_candidates=10, seed=4)
    unkeyed.update(image[:12], text[:12])
    unkeyed.update(image[12:], text[12:])
    assert unkeyed.compute() == retrieval_accuracy(image, text, 10, 4)
    with pytest.raises(ConfigError, match="3 images, 2 texts and 3 keys"):
        metric.update(image[:3], text[:2])


def test_clip_pairs_from_shapes(tiny_shapes):
    cfg = {"dataset": "shapes", "root": str(tiny_shapes)}
    pairs = load_clip_pairs(cfg, "val", image_size=32, progress=False)
    assert pairs.images.shape == (8, 3, 32, 32) and pairs.images.dtype == torch.uint8
    assert all(len(c) == 3 for c in pairs.captions)
    anns = json.loads((tiny_shapes / "annotations" / "captions_val.json").read_text())["annotations"]
    assert pairs.captions[0][0] == next(a["caption"] for a in anns if a["image_id"] == 1)
    things = json.loads((tiny_shapes / "annotations" / "instances_val.json").read_text())["annotations"]
    assert len(pairs.obj_texts) >= len(things)  # things and stuff regions
    assert {a["description"] for a in things} <= set(pairs.obj_texts)
    assert ((pairs.obj_boxes[:, 2:] > pairs.obj_boxes[:, :2]).all())
    with pytest.raises(ConfigError, match="vg has no captions"):
        load_clip_pairs({"dataset": "vg"}, "train", 32)


def test_domain_clip_loss_falls(tiny_shapes, tmp_path):
    cfg = load_clip_config(None, tiny_clip_overrides(tiny_shapes, tmp_path / "clip", **{
        "train.steps": 30, "train.warmup": 3, "train.batch_size": 12, "train.crops_per_step": 12}))
    result = train_clip(cfg, progress=False, save=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert len(result.losses) == 30
    assert last < 0.75 * first, (first, last)
    assert result.out_dir is None and not (tmp_path / "clip").exists()


def test_max_minutes_stops_early_then_evaluates_and_saves(tiny_shapes, tmp_path):
    cfg = load_clip_config(None, tiny_clip_overrides(tiny_shapes, tmp_path / "clip", **{
        "train.steps": 50, "train.max_minutes": 1e-9}))
    result = train_clip(cfg, progress=False)
    assert len(result.losses) == 1  # the limit is checked after each step
    meta = json.loads((tmp_path / "clip" / "config.json").read_text())["metadata"]
    assert (meta["step"], meta["steps_planned"]) == (1, 50)
    assert result.history[-1]["step"] == 1 and 0 <= meta["val_caption_top1"] <= 1


def test_init_from_continues_a_trained_clip(tiny_shapes, tmp_path):
    first = train_clip(load_clip_config(None, tiny_clip_overrides(tiny_shapes, tmp_path / "a")), progress=False)
    again = train_clip(load_clip_config(None, tiny_clip_overrides(
        tiny_shapes, tmp_path / "b", **{"train.init_from": tmp_path / "a", "train.steps": 1, "train.lr": 1e-12})),
        progress=False, save=False)
    weights = dict(again.encoder.model.named_parameters())  # (BatchNorm statistics move in one step)
    for k, v in first.encoder.model.named_parameters():  # one step at lr ~0: the same weights
        assert torch.allclose(v, weights[k], atol=1e-6), k
    with pytest.raises(ConfigError, match=r"train.init_from=.*weights do not match this config's model.*shape mismatch"):
        train_clip(load_clip_config(None, tiny_clip_overrides(
            tiny_shapes, tmp_path / "c", **{"train.init_from": tmp_path / "a", "model.text_cfg.width": 16})),
            progress=False, save=False)


def test_caption_retrieval_accuracy_with_an_encoder(tiny_shapes):
    torch.manual_seed(0)
    enc = TextEncoder.from_config({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
                                                                   "width": 8, "head_width": 16},
                                   "text_cfg": {"context_length": 24, "width": 32, "heads": 2, "layers": 1}})
    pairs = load_clip_pairs({"dataset": "shapes", "root": str(tiny_shapes)}, "val", 32, progress=False)
    caps = [c[0] for c in pairs.captions]
    r = caption_retrieval_accuracy(enc, pairs.images, caps, num_candidates=8)
    assert r["num_queries"] == 8 and 0 <= r["top1"] <= r["top5"] <= 1
    floats = pairs.images.float() / 127.5 - 1  # float images in [-1, 1] give the same answer
    assert caption_retrieval_accuracy(enc, floats, caps, num_candidates=8) == r


def test_train_clip_command_writes_a_loadable_folder(tiny_shapes, tmp_path, capsys):
    from layout2img.cli import main

    out = tmp_path / "clip"
    assert main(["train-clip", *tiny_clip_overrides(tiny_shapes, out)]) == 0
    printed = capsys.readouterr().out
    assert "caption retrieval on val: top-1" in printed and str(out) in printed
    enc = TextEncoder.load(str(out))
    assert enc.embed_dim == 32 and enc.image_size == (32, 32)
    meta = enc.metadata
    assert meta["step"] == 4 and meta["num_candidates"] == 8 and 0 <= meta["val_caption_top1"] <= 1
    assert 0 <= meta["val_object_top1"] <= 1 and "object naming on val crops" in printed
    assert meta["config"]["train"]["steps"] == 4
    assert enc.encode_text(["a red circle"]).shape == (1, 32)


def test_train_clip_config_errors(tiny_shapes, tmp_path, capsys):
    from layout2img.cli import main

    assert main(["train-clip", "train.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.stepz'" in err and "did you mean 'train.steps'" in err
    assert main(["train-clip", *tiny_clip_overrides(tiny_shapes, tmp_path / "x", **{"model.vision_cfg.widht": 8})]) == 2
    assert "unknown key" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"CLIP config: unknown key vision_cfg\.widht"):
        train_clip(load_clip_config(None, tiny_clip_overrides(
            tiny_shapes, tmp_path / "y", **{"+model.vision_cfg.widht": 8})), progress=False, save=False)


def test_object_description_accuracy_names_crops(tiny_shapes):
    pairs = load_clip_pairs({"dataset": "shapes", "root": str(tiny_shapes)}, "val", 32, progress=False)
    torch.manual_seed(0)
    enc = TextEncoder.from_config({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
                                                                   "width": 8, "head_width": 16},
                                   "text_cfg": {"context_length": 24, "width": 32, "heads": 2, "layers": 1}})
    r = object_description_accuracy(enc, pairs, max_objects=20)
    assert r["num_objects"] == 20 and r["num_texts"] == len(set(pairs.obj_texts))
    assert 0 <= r["top1"] <= r["top5"] <= 1
    assert object_description_accuracy(enc, pairs, max_objects=20) == r  # a fixed sample


def test_swap_word_makes_a_grammatical_hard_negative():
    import random

    from layout2img.training.clip import swap_word

    groups = [["red", "orange"], ["circle", "square"]]
    rng = random.Random(0)
    seen = {swap_word("a red circle above a square", groups, rng) for _ in range(40)}
    assert seen == {"an orange circle above a square", "a red square above a square", "a red circle above a circle"}
    assert swap_word("the sky", groups, rng) is None


def test_clip_loss_with_negatives_extends_open_clips_loss():
    from open_clip.loss import ClipLoss

    from layout2img.training.clip import clip_loss_with_negatives

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(6, 8), dim=1)
    scale = torch.tensor(10.0)
    plain = clip_loss_with_negatives(img, txt, scale)
    assert torch.allclose(plain, ClipLoss()(img, txt, scale))
    close_negatives = torch.nn.functional.normalize(img + 0.1 * torch.randn(6, 8), dim=1)
    assert clip_loss_with_negatives(img, txt, scale, close_negatives) > plain + 0.1


def test_sampler_gives_each_image_distinct_captions(tiny_shapes):
    pairs = load_clip_pairs({"dataset": "shapes", "root": str(tiny_shapes)}, "train", 32, progress=False)
    sampler = ClipBatchSampler(pairs, seed=0)
    idx, sets = sampler.images(10, captions_per_image=3)
    assert len(set(idx)) == 10 and len(sets) == 3 and all(len(s) == 10 for s in sets)
    for j, i in enumerate(idx):
        assert sorted(s[j] for s in sets) == sorted(pairs.captions[i])
    objs, texts = sampler.crops(12)
    assert len(set(texts)) == len(texts) == 12
    assert [pairs.obj_texts[m] for m in objs] == texts


# -- token ids: cached, and hard negatives spliced (issue 13) ----------------------------------------
SWAP_GROUPS = [["red", "green", "blue", "yellow", "purple", "orange", "white", "black"],
               ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart"]]


def test_token_cache_gives_the_tokenizers_ids():
    from conftest import TINY_CLIP

    enc = TextEncoder.from_config(TINY_CLIP, frozen=False)
    long = "eight shapes, a black star, a black circle, a purple star, a white triangle and a white square"
    texts = ["a red circle", long, "a red circle", "the sky"]
    seen = []
    tokenizer = enc.tokenizer

    def counting(batch):
        seen.append(list(batch))
        return tokenizer(batch)

    enc.tokenizer = counting
    first = enc.tokenize(texts)
    assert torch.equal(first, tokenizer(texts)) and first.dtype == torch.long
    assert first[1, -1] == tokenizer.eot_token_id  # cut to the context, the end token kept
    again = enc.tokenize(["the sky", "a blue star", long])
    assert torch.equal(again, tokenizer(["the sky", "a blue star", long]))
    assert seen == [["a red circle", long, "the sky"], ["a blue star"]]  # each text tokenised once
    enc.token_cache_size = 2
    enc.tokenize(["a red circle"])
    assert list(enc._token_cache) == [long, "a red circle"]  # the least recently used evicted
    assert enc.tokenize([]).shape == (0, enc.context_length)


def test_swapped_tokens_equal_tokenising_swap_word(tiny_shapes):
    import random

    from conftest import TINY_CLIP

    from layout2img.training.clip_data import SwappedTokens, swap_word

    enc = TextEncoder.from_config(TINY_CLIP)  # context 16: long captions are cut
    captions = [c for split in ("train", "val") for caps in load_clip_pairs(
        {"dataset": "shapes", "root": str(tiny_shapes)}, split, 32, progress=False).captions for c in caps]
    odd = ["A red circle", "an orange star (red), a blue-square", "the redé circle", "superstar red", "the sky"]
    swapped = SwappedTokens(enc.tokenizer, SWAP_GROUPS, enc.context_length)
    assert swapped.by_ids
    by_ids, by_text = random.Random(3), random.Random(3)
    for text in captions + odd:
        for _ in range(4):
            want = swap_word(text, SWAP_GROUPS, by_text)
            got = swapped.swap(text, by_ids)
            assert got == (None if want is None else enc.tokenizer([want])[0].tolist()), (text, want)
    assert by_ids.getstate() == by_text.getstate()  # the same draws: training picks the same negatives
    assert swapped._plans["the redé circle"] is None  # the tokenizer joins across the cut: the text path
    assert swapped.swap("the sky", by_ids) is None

    def plain(texts):  # a tokenizer without open_clip's encode(): always the text path
        return enc.tokenizer(texts)

    fallback = SwappedTokens(plain, SWAP_GROUPS, enc.context_length)
    assert not fallback.by_ids
    assert fallback.swap(captions[0], random.Random(5)) == enc.tokenizer(
        [swap_word(captions[0], SWAP_GROUPS, random.Random(5))])[0].tolist()


def test_cached_and_uncached_training_give_identical_losses(tiny_shapes, tmp_path, monkeypatch):
    from conftest import TINY_CLIP

    from layout2img.training.clip_data import SwappedTokens

    model = {"model.embed_dim": TINY_CLIP["embed_dim"], "model.text_cfg.context_length": 16,
             "model.text_cfg.width": 32, "model.text_cfg.heads": 2, "model.text_cfg.layers": 1}
    cfg = load_clip_config(None, tiny_clip_overrides(tiny_shapes, tmp_path / "clip", **model, **{
        "train.steps": 4, "train.hard_negatives": 2, "train.captions_per_image": 2}))
    cached = train_clip(cfg, progress=False, save=False).losses
    # as before the caches: every text through the tokenizer, negatives as texts
    monkeypatch.setattr(TextEncoder, "tokenize", lambda self, texts: self.tokenizer(list(texts)).to(torch.long))
    monkeypatch.setattr(SwappedTokens, "_plan", lambda self, text: None)
    uncached = train_clip(cfg, progress=False, save=False).losses
    assert len(cached) == 4 and cached == uncached  # bit for bit
