"""Domain CLIP: an open_clip model trained contrastively on a dataset's images and captions.

No pretrained CLIP weights can be had offline, so the project trains a small one on its own
data (``layout2img train-clip``, ``configs/clip/shapes.yaml``). Each step has two contrastive
halves, scored by open_clip's ``ClipLoss`` with the model's learned temperature:

* whole images with one of their captions (a random one of the image's captions each time);
* object crops (the object's box cut from its image, resized to the model's input) with short
  texts ("a red circle"); the crops of a step have distinct texts, so no crop's text is
  another crop's false negative.

Images are decoded once into a uint8 tensor (10k Shapes images at 64 px: 123 MB). The
validation number is caption retrieval: for each validation image, its first caption ranked
against ``num_candidates - 1`` captions of other images (:func:`caption_retrieval_accuracy`).
The trained model is saved as a folder that :meth:`TextEncoder.from_pretrained` loads.
"""
from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..errors import CheckpointError, ConfigError, DataError
from ..io import check_state
from ..models.layout import crop_boxes
from ..models.text import CROP_MARGIN, TextEncoder

DEFAULT_CLIP_CONFIG = "clip/shapes.yaml"


# -- configuration ---------------------------------------------------------------------------------
def load_clip_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> DictConfig:
    """``configs/clip/shapes.yaml`` (or ``path``) with ``key=value`` overrides; unknown keys are errors."""
    from ..config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / DEFAULT_CLIP_CONFIG if path is None else path, overrides,
                       required=("out_dir", "seed", "data", "model", "train"))


# -- data ------------------------------------------------------------------------------------------
@dataclass
class ClipPairs:
    """Images with their captions, and objects (box + short text) inside them."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    captions: list[list[str]]  # per image, the first one is the full caption
    obj_image: torch.Tensor  # (M,) long: the image of each object
    obj_boxes: torch.Tensor  # (M, 4) float [x0, y0, x1, y1] in [0, 1]
    obj_texts: list[str]  # (M,)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int) -> "ClipPairs":
        keep = self.obj_image < n
        idx = keep.nonzero().flatten().tolist()
        return ClipPairs(self.images[:n], self.captions[:n], self.obj_image[keep], self.obj_boxes[keep],
                         [self.obj_texts[i] for i in idx])


def _article(name: str) -> str:
    name = name.replace("-other", "").replace("-", " ")
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read {what}: {str(e).splitlines()[0]}") from None


def read_coco_pairs(image_dir: str | Path, captions_json: str | Path, object_jsons: Sequence[str | Path] = (),
                    image_size: int = 64, max_images: int | None = None, progress: bool = True) -> ClipPairs:
    """Images that have captions, from COCO-format files, decoded once to (N, 3, S, S) uint8.

    Objects come from ``object_jsons`` (instances / stuff): their ``description`` when present
    (Shapes: "a red circle"), else "a <category name>".
    """
    from PIL import Image
    from tqdm.auto import tqdm

    image_dir = Path(image_dir)
    caps = _read_json(Path(captions_json), "captions JSON")
    try:
        files = {int(im["id"]): (im["file_name"], float(im["width"]), float(im["height"])) for im in caps["images"]}
        by_image: dict[int, list[str]] = {}
        for a in caps["annotations"]:
            by_image.setdefault(int(a["image_id"]), []).append(" ".join(str(a["caption"]).split()))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{captions_json}: not a COCO captions file ({e!r})") from None
    ids = sorted(i for i in by_image if i in files)
    if max_images is not None:
        ids = ids[: int(max_images)]
    if not ids:
        raise DataError(f"{captions_json}: no image has a caption")
    row = {image_id: r for r, image_id in enumerate(ids)}
    obj_image, obj_boxes, obj_texts = [], [], []
    for path in object_jsons:
        data = _read_json(Path(path), "annotation JSON")
        try:
            names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
            for a in data["annotations"]:
                r = row.get(int(a["image_id"]))
                if r is None or a.get("iscrowd", 0):
                    continue
                _, w, h = files[ids[r]]
                x, y, bw, bh = (float(v) for v in a["bbox"])
                if bw <= 0 or bh <= 0:
                    continue
                text = a.get("description") or _article(names.get(int(a["category_id"]), "object"))
                obj_image.append(r)
                obj_boxes.append([x / w, y / h, (x + bw) / w, (y + bh) / h])
                obj_texts.append(" ".join(str(text).split()))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a COCO annotation file ({e!r})") from None
    images = torch.empty(len(ids), 3, image_size, image_size, dtype=torch.uint8)
    for r, image_id in enumerate(tqdm(ids, desc="images", unit="img", disable=not progress or None,
                                      leave=False)):
        p = image_dir / files[image_id][0]
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BICUBIC)
                images[r] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except FileNotFoundError:
            raise DataError(f"{p}: image file not found") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{p}: cannot read image ({e})") from None
    return ClipPairs(images, [by_image[i] for i in ids],
                     torch.tensor(obj_image, dtype=torch.long),
                     torch.tensor(obj_boxes, dtype=torch.float32).reshape(-1, 4).clamp_(0, 1), obj_texts)


def load_clip_pairs(data_cfg: Mapping[str, Any], split: str, image_size: int, progress: bool = True) -> ClipPairs:
    """The ``split`` of the dataset a config's ``data:`` section names (shapes or coco)."""
    cfg = dict(OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else data_cfg)
    kind = cfg.get("dataset")
    max_images = (cfg.get(split) or {}).get("max_images", cfg.get("max_images"))
    if kind == "shapes":
        from ..data.shapes import ensure_shapes, shapes_paths

        prep = dict(cfg.get("prepare") or {})
        root = ensure_shapes(Path(cfg["root"]), **prep) if prep else Path(cfg["root"])
        paths = shapes_paths(root, split)
        return read_coco_pairs(paths["image_dir"], paths["captions_json"],
                               [paths["instances_json"], paths["stuff_json"]], image_size, max_images, progress)
    if kind == "coco":
        section = dict(cfg.get(split) or {})
        for key in ("image_dir", "captions_json"):
            if not section.get(key):
                raise ConfigError(f"data.{split}.{key}: needed to train a CLIP on COCO")
        objects = [section[k] for k in ("instances_json", "stuff_json") if section.get(k)]
        return read_coco_pairs(section["image_dir"], section["captions_json"], objects, image_size, max_images,
                               progress)
    if kind == "vg":
        raise ConfigError("data.dataset: vg has no captions; train the CLIP on shapes or coco")
    raise ConfigError(f"data.dataset: unknown dataset {kind!r} (shapes or coco)")


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [-1, 1]) images -> float in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def _crop_own_images(images: torch.Tensor, boxes: torch.Tensor, size) -> torch.Tensor:
    """Box k from image k, grown by 10 % a side (the context the crops' texts describe)."""
    return crop_boxes(images, boxes, torch.arange(len(boxes), device=images.device), size, margin=CROP_MARGIN)


# -- retrieval -----------------------------------------------------------------------------------
def retrieval_accuracy(image_emb: torch.Tensor, text_emb: torch.Tensor, num_candidates: int = 100, seed: int = 0,
                       keys: Sequence[Any] | None = None, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of finding row i of ``text_emb`` for row i of ``image_emb`` among
    ``num_candidates`` texts: the true one and ``num_candidates - 1`` others drawn (without
    replacement, fixed ``seed``) from the other rows. Rows with an equal key (e.g. the same
    caption text) are never each other's candidates. A tie counts against the true text."""
    n = image_emb.shape[0]
    if text_emb.shape[0] != n:
        raise ConfigError(f"retrieval: {n} images but {text_emb.shape[0]} texts")
    if num_candidates < 2:
        raise ConfigError(f"retrieval: num_candidates must be >= 2, got {num_candidates}")
    keys = list(range(n)) if keys is None else list(keys)
    groups: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    sims = image_emb.float() @ text_emb.float().T  # (n, n)
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in ks}
    for i in range(n):
        same = set(groups[keys[i]])
        pool = np.array([j for j in range(n) if j not in same])
        if len(pool) < num_candidates - 1:
            raise ConfigError(f"retrieval: {num_candidates} candidates asked, but only {len(pool) + 1} "
                              "distinct texts exist")
        others = rng.choice(pool, size=num_candidates - 1, replace=False)
        rank = int((sims[i, torch.from_numpy(others)] >= sims[i, i]).sum())  # texts scored at least as high
        for k in ks:
            hits[k] += rank < k
    out = {f"top{k}": hits[k] / n for k in ks}
    out.update(num_queries=n, num_candidates=num_candidates)
    return out


@torch.no_grad()
def embed_images(encoder: TextEncoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, D) normalised embeddings of images (uint8 or float in [-1, 1]), in eval mode."""
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        rows = [encoder.encode_image(_to_float(images[s : s + batch_size]).to(encoder.device))
                for s in range(0, images.shape[0], batch_size)]
    finally:
        encoder.model.train(was_training)
    return torch.cat(rows).float().cpu()


@torch.no_grad()
def embed_texts(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    was_training = encoder.model.training
    encoder.model.eval()
    try:
        rows = [encoder.encode_text(list(texts[s : s + batch_size])) for s in range(0, len(texts), batch_size)]
    finally:
        encoder.model.train(was_training)
    return torch.cat(rows).float().cpu()


def caption_retrieval_accuracy(encoder: TextEncoder, images: torch.Tensor, captions: Sequence[str],
                               num_candidates: int = 100, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """Caption retrieval among ``num_candidates`` (see :func:`retrieval_accuracy`): images
    (N, 3, H, W) uint8 or float in [-1, 1], one caption per image. Returns top1, top5, ..."""
    if images.shape[0] != len(captions):
        raise ConfigError(f"retrieval: {images.shape[0]} images but {len(captions)} captions")
    img = embed_images(encoder, images, batch_size)
    txt = embed_texts(encoder, list(captions), batch_size)
    return retrieval_accuracy(img, txt, num_candidates, seed, keys=list(captions))


def object_description_accuracy(encoder: TextEncoder, pairs: ClipPairs, max_objects: int = 1000, seed: int = 0,
                                batch_size: int = 256) -> dict[str, float]:
    """Zero-shot object naming: each object's crop (up to ``max_objects``, a fixed random
    sample) classified among all distinct object texts of ``pairs`` ("a red circle", ...)."""
    if not pairs.obj_texts:
        raise ConfigError("object accuracy: the dataset has no objects")
    names = sorted(set(pairs.obj_texts))
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(pairs.obj_texts), generator=gen)[:max_objects]
    crops = torch.cat([_crop_own_images(_to_float(pairs.images[pairs.obj_image[pick[s : s + batch_size]]]),
                                        pairs.obj_boxes[pick[s : s + batch_size]], encoder.image_size)
                       for s in range(0, len(pick), batch_size)])
    img = embed_images(encoder, crops, batch_size)
    txt = embed_texts(encoder, names, batch_size)
    truth = torch.tensor([names.index(pairs.obj_texts[m]) for m in pick.tolist()])
    ranks = (img @ txt.T).argsort(dim=1, descending=True)
    return {"top1": float((ranks[:, 0] == truth).float().mean()),
            "top5": float((ranks[:, :5] == truth[:, None]).any(dim=1).float().mean()),
            "num_objects": len(pick), "num_texts": len(names)}


# -- hard negatives ------------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z]+")


def swap_word(text: str, groups: Sequence[Iterable[str]], rng: random.Random) -> str | None:
    """``text`` with one word that belongs to a group replaced by another word of the same group
    ("a red circle above ..." -> "a red star above ..."), the article before it fixed (a / an).
    None when no word of ``text`` is in any group."""
    sets = [{w.lower() for w in g} for g in groups]
    where = [(m, g) for m in _WORD.finditer(text) for g in sets if m.group(0).lower() in g and len(g) > 1]
    if not where:
        return None
    m, group = rng.choice(where)
    new = rng.choice(sorted(group - {m.group(0).lower()}))
    head = text[: m.start()]
    article = re.search(r"\b(a|an) $", head)
    if article:  # "a red" -> "an orange", as the captions write it
        head = head[: article.start()] + ("an " if new[0] in "aeiou" else "a ")
    return head + new + text[m.end():]


def clip_loss_with_negatives(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                             negative_features: torch.Tensor | None = None) -> torch.Tensor:
    """open_clip's ClipLoss (symmetric InfoNCE over the batch), with extra texts that every
    image must also rank below its own: hard negatives join the image->text softmax only."""
    texts = text_features if negative_features is None else torch.cat([text_features, negative_features])
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    logits_per_image = logit_scale * image_features @ texts.T
    logits_per_text = logit_scale * text_features @ image_features.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


# -- training ------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available (use device=cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device={name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, embeddings' scale and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
                or "positional_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _cosine_with_warmup(warmup: int, total: int, floor: float = 0.0):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


@dataclass
class ClipTrainResult:
    encoder: TextEncoder
    out_dir: Path | None
    losses: list[float]
    history: list[dict]  # evaluations: step, top1, top5, seconds
    seconds: float


class _Sampler:
    """Epoch-wise shuffled image indices, a random caption each, and crops with distinct texts."""

    def __init__(self, pairs: ClipPairs, seed: int):
        self.pairs = pairs
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.by_text: dict[str, list[int]] = {}
        for m, t in enumerate(pairs.obj_texts):
            self.by_text.setdefault(t, []).append(m)
        self.texts = sorted(self.by_text)

    def images(self, n: int, captions_per_image: int = 1) -> tuple[list[int], list[list[str]]]:
        """``n`` image indices and ``captions_per_image`` lists of one caption per image (an
        image's captions in random order, distinct while it has enough)."""
        idx = []
        while len(idx) < n:
            if not self.order:
                self.order = list(range(len(self.pairs)))
                self.rng.shuffle(self.order)
            idx.append(self.order.pop())
        drawn = []
        for i in idx:
            caps = list(self.pairs.captions[i])
            self.rng.shuffle(caps)
            drawn.append([caps[k % len(caps)] for k in range(captions_per_image)])
        return idx, [[d[k] for d in drawn] for k in range(captions_per_image)]

    def crops(self, n: int) -> tuple[list[int], list[str]]:
        texts = self.rng.sample(self.texts, min(n, len(self.texts)))
        return [self.rng.choice(self.by_text[t]) for t in texts], texts


def train_clip(cfg: Mapping[str, Any] | DictConfig, progress: bool = True, save: bool = True,
               pairs: tuple[ClipPairs, ClipPairs] | None = None) -> ClipTrainResult:
    """Train a domain CLIP as ``cfg`` (see ``configs/clip/shapes.yaml``) says; save it to ``out_dir``."""
    from open_clip.loss import ClipLoss
    from tqdm.auto import tqdm

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg))
    tr = cfg.train
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    device = _device(str(cfg.get("device", "auto")))
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    encoder = TextEncoder.from_config(model_cfg, frozen=False)
    init_from = tr.get("init_from")
    if init_from:  # continue from a trained domain CLIP of the same configuration (new schedule)
        start = TextEncoder.from_pretrained(Path(str(init_from))).model.state_dict()
        try:
            check_state(Path(str(init_from)), encoder.model.state_dict(), start, against="this config's model")
        except CheckpointError as e:
            raise ConfigError(f"train.init_from={init_from}: {e}") from None
        encoder.model.load_state_dict(start)
    encoder = encoder.to(device)
    encoder.train()
    size = encoder.image_size[0]
    for key in ("steps", "batch_size", "lr", "warmup", "weight_decay"):
        if key not in tr:
            raise ConfigError(f"train.{key}: missing")
    steps, batch_size = int(tr.steps), int(tr.batch_size)
    if steps < 1 or batch_size < 2:
        raise ConfigError(f"train: need steps >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    crops_per_step = int(tr.get("crops_per_step", 0))
    crop_weight = float(tr.get("crop_weight", 1.0))
    eval_every = int(tr.get("eval_every", 0))
    log_every = int(tr.get("log_every", 0))
    num_candidates = int(tr.get("num_candidates", 100))
    eval_seed = int(tr.get("eval_seed", 0))
    max_seconds = float(tr.get("max_minutes", 0) or 0) * 60.0
    hard_negatives = int(tr.get("hard_negatives", 0) or 0)
    captions_per_image = max(1, int(tr.get("captions_per_image", 1) or 1))
    swap_groups = [list(g) for g in (tr.get("swap_words") or [])]
    if hard_negatives > 0 and not swap_groups:
        raise ConfigError("train.hard_negatives needs train.swap_words (groups of interchangeable words)")

    t0 = time.time()
    if pairs is None:
        train_pairs = load_clip_pairs(cfg.data, "train", size, progress)
        val_pairs = load_clip_pairs(cfg.data, "val", size, progress)
    else:
        train_pairs, val_pairs = pairs
    val_captions = [c[0] for c in val_pairs.captions]
    n_cand = min(num_candidates, len(set(val_captions)))
    load_seconds = time.time() - t0
    if progress:
        print(f"train-clip: {len(train_pairs)} train images ({len(train_pairs.obj_texts)} objects), "
              f"{len(val_pairs)} val images, loaded in {load_seconds:.0f} s; device {device}", flush=True)

    sampler = _Sampler(train_pairs, seed)
    model = encoder.model
    from open_clip.modified_resnet import ModifiedResNet

    conv_tower = isinstance(model.visual, ModifiedResNet)
    memory_format = torch.channels_last if conv_tower and device.type == "cpu" else torch.contiguous_format
    model.visual.to(memory_format=memory_format)  # a ResNet on a CPU: ~25% faster channels-last
    opt_args = dict(lr=float(tr.lr), betas=tuple(tr.get("betas", (0.9, 0.98))), eps=1e-6)
    try:  # the fused kernel: ~10x faster than the default loop on a CPU (the token table is big)
        opt = torch.optim.AdamW(_param_groups(model, float(tr.weight_decay)), fused=True, **opt_args)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(_param_groups(model, float(tr.weight_decay)), **opt_args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(int(tr.warmup), steps))
    loss_fn = ClipLoss()
    writer = None
    if cfg.get("log_dir"):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(cfg.log_dir))

    def evaluate(step: int) -> dict:
        r = caption_retrieval_accuracy(encoder, val_pairs.images, val_captions, n_cand, eval_seed)
        r = {"step": step, "top1": r["top1"], "top5": r["top5"], "num_candidates": n_cand}
        if val_pairs.obj_texts:
            r["object_top1"] = object_description_accuracy(encoder, val_pairs, seed=eval_seed)["top1"]
        r["seconds"] = round(time.time() - t0, 1)
        if writer is not None:
            for k in ("top1", "top5", "object_top1"):
                if k in r:
                    writer.add_scalar(f"val/caption_{k}" if k != "object_top1" else "val/object_top1", r[k], step)
        return r

    losses: list[float] = []
    history: list[dict] = []
    bar = tqdm(range(steps), desc="train-clip", unit="step", disable=not progress or None)
    done = steps
    for step in bar:
        idx, caption_sets = sampler.images(batch_size, captions_per_image)
        images = _to_float(train_pairs.images[idx]).to(device)
        obj_texts: list[str] = []
        if crops_per_step > 0 and train_pairs.obj_texts:
            obj, obj_texts = sampler.crops(crops_per_step)
            src = _to_float(train_pairs.images[train_pairs.obj_image[obj]]).to(device)
            images = torch.cat([images, _crop_own_images(src, train_pairs.obj_boxes[obj], size)])
        negative_sets = [[n for c in caps for _ in range(hard_negatives)
                          for n in [swap_word(c, swap_groups, sampler.rng)] if n is not None]
                         for caps in caption_sets]
        texts = [t for caps in caption_sets for t in caps] + obj_texts + [t for n in negative_sets for t in n]
        img_f = encoder.encode_image(images.contiguous(memory_format=memory_format))
        txt_f = encoder.encode_text(texts)
        scale = model.logit_scale.exp()
        # one contrastive loss per caption set, all on the same image features
        losses_img, start = [], 0
        neg_start = len(caption_sets) * batch_size + len(obj_texts)
        for negs in negative_sets:
            cap_f = txt_f[start : start + batch_size]
            neg_f = txt_f[neg_start : neg_start + len(negs)]
            start, neg_start = start + batch_size, neg_start + len(negs)
            losses_img.append(clip_loss_with_negatives(img_f[:batch_size], cap_f, scale, neg_f) if negs
                              else loss_fn(img_f[:batch_size], cap_f, scale))
        loss_img = torch.stack(losses_img).mean()
        loss = loss_img
        loss_crop = None
        if len(obj_texts) > 1:
            loss_crop = loss_fn(img_f[batch_size:], txt_f[start : start + len(obj_texts)], scale)
            loss = loss + crop_weight * loss_crop
        if not torch.isfinite(loss):
            raise ConfigError(f"train-clip: the loss became {loss.item()} at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if float(tr.get("grad_clip", 0) or 0) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(tr.grad_clip))
        opt.step()
        sched.step()
        with torch.no_grad():  # as open_clip: the temperature never goes below 1/100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.item()))
        if writer is not None:
            writer.add_scalar("train/loss", losses[-1], step)
            writer.add_scalar("train/loss_captions", float(loss_img.item()), step)
            if loss_crop is not None:
                writer.add_scalar("train/loss_crops", float(loss_crop.item()), step)
            writer.add_scalar("train/logit_scale", float(scale.item()), step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", T=f"{scale.item():.0f}")
        if log_every > 0 and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            bar.write(f"step {step + 1}/{steps}: loss {sum(recent) / len(recent):.3f}, logit scale "
                      f"{scale.item():.1f}, {(time.time() - t0 - load_seconds) / (step + 1):.2f} s/step")
        if eval_every > 0 and (step + 1) % eval_every == 0 and step + 1 < steps:
            history.append(evaluate(step + 1))
            h = history[-1]
            bar.write(f"step {step + 1}: caption top-1 {h['top1']:.3f}, top-5 {h['top5']:.3f} (among {n_cand})"
                      + (f"; object naming top-1 {h['object_top1']:.3f}" if "object_top1" in h else ""))
        if max_seconds > 0 and step + 1 < steps and time.time() - t0 - load_seconds > max_seconds:
            done = step + 1
            bar.write(f"train-clip: train.max_minutes={max_seconds / 60:g} reached at step {done}/{steps}; "
                      "evaluating and saving")
            break
    bar.close()
    train_seconds = time.time() - t0 - load_seconds
    history.append(evaluate(done))
    encoder.freeze()
    seconds = time.time() - t0
    final = history[-1]
    encoder.metadata = {
        "step": done, "steps_planned": steps, "val_caption_top1": final["top1"], "val_caption_top5": final["top5"],
        "val_object_top1": final.get("object_top1"),
        "num_candidates": n_cand, "num_val_images": len(val_pairs), "num_train_images": len(train_pairs),
        "load_seconds": round(load_seconds, 1), "train_seconds": round(train_seconds, 1),
        "total_seconds": round(seconds, 1), "device": str(device), "torch_threads": torch.get_num_threads(),
        "history": history, "config": OmegaConf.to_container(cfg, resolve=True),
    }
    out_dir = None
    if save:
        out_dir = encoder.save_pretrained(Path(cfg.out_dir), encoder.metadata)
    if writer is not None:
        writer.close()
    return ClipTrainResult(encoder, out_dir, losses, history, seconds)


def cmd_train_clip(args) -> int:
    """``layout2img train-clip [--config FILE] [key=value ...]``."""
    cfg = load_clip_config(args.config, args.overrides)
    result = train_clip(cfg)
    final = result.history[-1]
    print(f"caption retrieval on val: top-1 {final['top1']:.3f}, top-5 {final['top5']:.3f} "
          f"among {final['num_candidates']} ({result.encoder.metadata['num_val_images']} images); "
          f"{result.seconds:.0f} s")
    if final.get("object_top1") is not None:
        print(f"object naming on val crops: top-1 {final['object_top1']:.3f}")
    print(f"domain CLIP written to {result.out_dir}")
    return 0

