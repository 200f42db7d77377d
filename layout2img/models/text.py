"""CLIP text (and image) encoders: an open_clip model with its tokenizer, frozen, with a text cache.

Three sources, one class::

    TextEncoder.load("ViT-B-32/openai")          # an open_clip pretrained tag (downloads on first use)
    TextEncoder.load("ViT-B-32=path/to/model.bin")   # a local open_clip checkpoint for a named architecture
    TextEncoder.load("runs/clip_shapes")         # a domain CLIP trained by ``layout2img train-clip``

``encode_text(["a red circle"])`` gives L2-normalised rows; each text is encoded once and kept in
an LRU cache (on the CPU). ``encode_image(images)`` takes images in [-1, 1] at any size and is
differentiable with respect to them (the model's own weights stay frozen), so a loss on CLIP
similarity can steer an image.

A domain CLIP folder (:class:`~layout2img.io.PretrainedMixin`) holds ``config.json`` (the
open_clip ``CLIP`` arguments and the image normalisation) and ``model.safetensors``; nothing is
ever unpickled: ``.bin`` / ``.pt`` files are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_container
from ..errors import CheckpointError, ConfigError
from ..io import CONFIG_FILE, PretrainedMixin, check_state
from .clip_models import (DEFAULT_DOMAIN_CLIP, LOAD_ALTERNATIVES, OPENAI_MEAN, OPENAI_STD, build_clip,
                          check_model_name, load_clip_file, one_line, open_clip_module)

#: Object crops are their box grown by this share of its size on each side, wherever a crop meets
#: a CLIP text: domain-CLIP training, the GAN's CLIP loss, editing.
CROP_MARGIN = 0.1


class TextEncoder(PretrainedMixin, nn.Module):
    """An open_clip CLIP model and its tokenizer: cached text embeddings, differentiable image ones.

    Build one with :meth:`load` (or :meth:`from_tag`, :meth:`from_file`, :meth:`from_pretrained`,
    :meth:`from_config`). Frozen by default: no parameter wants a gradient, the model stays in
    eval mode even when a parent module calls ``.train()``, and text embeddings are cached.
    ``frozen=False`` (training the domain CLIP) bypasses the cache. A domain CLIP is saved with
    :meth:`save_pretrained` (:class:`~layout2img.io.PretrainedMixin`: ``config.json`` with the
    ``open_clip.CLIP`` arguments and image normalisation, ``model.safetensors``).
    """

    MODEL_CLASS = "TextEncoder"
    FOLDER_KIND = "CLIP folder"

    def __init__(self, model: nn.Module, tokenizer, *, name: str, image_size: int | Sequence[int],
                 image_mean: Sequence[float] = OPENAI_MEAN, image_std: Sequence[float] = OPENAI_STD,
                 source: Mapping[str, Any] | None = None, frozen: bool = True, cache_size: int = 16384):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        size = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        self.image_size = (int(size[0]), int(size[1]))
        self.register_buffer("image_mean", torch.tensor(list(image_mean), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(list(image_std), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        #: Where the weights came from ({'kind': 'tag'|'file'|'domain', ...}); also the domain config.
        self.source: dict[str, Any] = dict(source or {})
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        #: Token ids of this many recent texts are kept (tokenising costs ~0.08 ms a text on a CPU
        #: and does not depend on the weights): a training set's captions are tokenised once.
        self.token_cache_size = 32768
        self._token_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._fingerprint: str | None = None
        self.metadata: dict[str, Any] = {}
        self.frozen = False
        if frozen:
            self.freeze()

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        return int(self.model.visual.output_dim)

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", None) or self.model.context_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- freezing ----------------------------------------------------------------------------------
    def freeze(self) -> "TextEncoder":
        """No gradients for the weights, eval mode for good, cached text embeddings."""
        self.frozen = True
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        return self

    def unfreeze(self) -> "TextEncoder":
        """Trainable weights (the cache is dropped and no longer used)."""
        self.frozen = False
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.clear_cache()
        return self

    def train(self, mode: bool = True) -> "TextEncoder":
        # A frozen encoder inside a model being trained stays in eval mode (dropout, BN stats).
        super().train(mode and not self.frozen)
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    def fingerprint(self) -> str:
        """``sha256:<16 hex>`` of the weights (names, shapes, float32 values): a GAN checkpoint
        records it, so loading it with a different CLIP at the same path is an error, not
        silently wrong embeddings."""
        import hashlib

        if self.frozen and self._fingerprint is not None:  # frozen weights: hash them once
            return self._fingerprint
        h = hashlib.sha256()
        for name, t in sorted(self.model.state_dict().items()):
            t = t.detach().to("cpu")
            h.update(f"{name}:{tuple(t.shape)}:".encode())
            h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
        self._fingerprint = "sha256:" + h.hexdigest()[:16]
        return self._fingerprint

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()  # new weights (also when a parent model loads its state): stale embeddings
        self._fingerprint = None
        return super()._load_from_state_dict(*args, **kwargs)

    # -- text --------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, context_length) token ids (open_clip's tokenizer; long texts are cut). Each text's
        ids are kept (LRU, ``token_cache_size`` texts): a repeated text costs a lookup."""
        texts = self._check_texts(texts)
        cache = self._token_cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:  # one tokenizer call for the new texts; a row each, not views of the batch
            for t, row in zip(missing, self.tokenizer(missing).to(torch.long)):
                cache[t] = row.clone()
        if not texts:
            return torch.zeros(0, self.context_length, dtype=torch.long)
        rows = []
        for t in texts:
            cache.move_to_end(t)
            rows.append(cache[t])
        while len(cache) > self.token_cache_size:
            cache.popitem(last=False)
        return torch.stack(rows)

    @staticmethod
    def _check_texts(texts) -> list[str]:
        if isinstance(texts, str):
            raise ConfigError("encode_text: expected a list of strings, got one string (wrap it in a list)")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ConfigError(f"encode_text: text {i} is {type(t).__name__}, expected a string")
        return texts

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, embed_dim) L2-normalised embeddings of token ids (rows as :meth:`tokenize` makes
        them), never cached: differentiable with respect to the weights when not frozen."""
        return self._encode_tokens(tokens)

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._text_features(tokens.to(self.device)).float(), dim=-1)

    def _can_trim(self) -> bool:
        m = self.model
        return (type(m).__name__ == "CLIP" and getattr(m, "attn_mask", None) is not None
                and getattr(m, "text_pool_type", None) == "argmax" and getattr(m.transformer, "batch_first", False))

    def _text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``model.encode_text(tokens)``, computed faster for a causal text tower pooled at the
        end-of-text token: each row only runs up to that token (nothing after it can change
        the result), rows grouped into length buckets of 8 tokens. The token table is looked up
        once for all buckets: in training, each lookup's gradient is a dense table-sized tensor."""
        m = self.model
        if not self._can_trim():
            return m.encode_text(tokens)
        ends = tokens.argmax(dim=-1)  # open_clip pools at the highest id, the end-of-text token
        buckets = ((ends + 8) // 8 * 8).clamp(max=tokens.shape[1])
        lengths = buckets.unique().tolist()
        picked = [(buckets == length).nonzero().flatten() for length in lengths]
        trimmed = [tokens[rows, :length] for rows, length in zip(picked, lengths)]
        embedded = m.token_embedding(torch.cat([t.flatten() for t in trimmed])).split([t.numel() for t in trimmed])
        cast = m.transformer.get_cast_dtype()
        parts, order = [], []
        for rows, length, tok, emb in zip(picked, lengths, trimmed, embedded):
            x = emb.view(*tok.shape, -1).to(cast) + m.positional_embedding[:length].to(cast)
            x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
            x = x[torch.arange(x.shape[0], device=x.device), ends[rows]]
            proj = m.text_projection
            parts.append(proj(x) if isinstance(proj, nn.Linear) else (x @ proj if proj is not None else x))
            order.append(rows)
        return torch.cat(parts)[torch.argsort(torch.cat(order))]

    def encode_text(self, texts: Sequence[str], batch_size: int = 256, cache: bool = True) -> torch.Tensor:
        """(N, embed_dim) L2-normalised text embeddings on the model's device.

        Frozen: each distinct text runs through the model once; later calls read the cache.
        ``cache=False`` runs all ``texts`` together, always: a row's last bits then depend only
        on this call's texts, not on which earlier batch first cached it (the trainer uses this,
        so a resumed run is bit-exact).
        """
        texts = self._check_texts(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        if not self.frozen:
            return self._encode_tokens(self.tokenize(texts))
        if not cache:
            with torch.no_grad():
                return self._encode_tokens(self.tokenize(texts))
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        with torch.no_grad():
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                emb = self._encode_tokens(self.tokenize(chunk)).cpu()
                for t, e in zip(chunk, emb):
                    self._cache[t] = e
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        out = torch.stack(rows).to(self.device)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    # -- images ------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) -> the model's input: its size, its mean / std."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"encode_image: expected images of shape (B, 3, H, W), got {shape}")
        x = (images.float() + 1.0) * 0.5
        if tuple(x.shape[-2:]) != self.image_size:
            shrink = x.shape[-2] > self.image_size[0] or x.shape[-1] > self.image_size[1]
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self.image_mean.to(x.device)) / self.image_std.to(x.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) L2-normalised image embeddings; gradients flow back to ``images``."""
        x = self.preprocess(images.to(self.device))
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    def similarity(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """(B, N) cosine similarities between images and texts."""
        return self.encode_image(images) @ self.encode_text(texts).T

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}, image_size={self.image_size}, frozen={self.frozen}"

    # -- constructors --------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: str | os.PathLike, model_name: str | None = None, cache_dir: str | None = None,
             device: str | torch.device = "cpu") -> "TextEncoder":
        """A text encoder from a string: a folder (domain CLIP), ``[ARCH=]FILE`` (a local
        checkpoint; ``model_name`` or ``ARCH`` names its open_clip architecture), or
        ``NAME/TAG`` (an open_clip pretrained tag, e.g. ``ViT-B-32/openai``)."""
        spec = to_container(spec)
        if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
            raise ConfigError(f"text_encoder: expected a folder, a checkpoint file or NAME/TAG, got {spec!r}")
        text = str(spec).strip()
        path = Path(text).expanduser()
        if path.is_dir():
            return cls.from_pretrained(path, map_location=device)
        if path.is_file():
            return cls.from_file(path, model_name, device=device)
        arch, eq, rest = text.partition("=")
        if eq and Path(rest).expanduser().is_file():
            return cls.from_file(Path(rest).expanduser(), model_name or arch, device=device)
        if eq or text.endswith((".safetensors", ".bin", ".pt", ".pth")) or text.startswith((".", "/", "~")):
            raise ConfigError(f"text_encoder: {rest if eq else text}: no such file or folder")
        return cls.from_tag(text, cache_dir=cache_dir, device=device)

    @classmethod
    def from_tag(cls, spec: str, pretrained: str | None = None, cache_dir: str | None = None,
                 device: str | torch.device = "cpu") -> "TextEncoder":
        """open_clip's ``create_model_and_transforms(name, pretrained=tag)``: ``'ViT-B-32/openai'``
        or ``from_tag('ViT-B-32', 'openai')``; ``hf-hub:org/repo`` works too. Downloads on first use."""
        open_clip = open_clip_module()
        if spec.startswith(("hf-hub:", "local-dir:")):
            name, tag = spec, None
        elif pretrained is not None:
            name, tag = spec, pretrained
        else:
            name, slash, tag = spec.partition("/")
            if not slash or not name or not tag:
                raise ConfigError(f"text_encoder: {spec!r} is not a folder, a file or NAME/TAG "
                                  "(e.g. ViT-B-32/openai); " + LOAD_ALTERNATIVES)
        label = f"{name}/{tag}" if tag else name
        if tag is not None:
            check_model_name(name, f"{spec}: no such CLIP folder or file, and {name!r} is not an open_clip model")
            tags = open_clip.list_pretrained_tags_by_model(name)
            if tag not in tags:
                raise ConfigError(f"text_encoder: {name} has no pretrained tag {tag!r} "
                                  f"(known: {', '.join(tags) or 'none'})")
        try:
            model, _, _ = open_clip.create_model_and_transforms(name, pretrained=tag, cache_dir=cache_dir,
                                                                device="cpu")
            tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
        except Exception as e:  # network, cache, hub errors: one line, with the way out
            if name.startswith("local-dir:"):
                raise CheckpointError(f"{name[10:]}: cannot load open_clip folder: {one_line(e)}") from None
            raise ConfigError(f"cannot load CLIP {label!r}: no network/cache ({one_line(e)}). "
                              + LOAD_ALTERNATIVES) from None
        pp = open_clip.get_model_preprocess_cfg(model)
        enc = cls(model, tokenizer, name=label, image_size=pp.get("size", model.visual.image_size),
                  image_mean=pp.get("mean", OPENAI_MEAN), image_std=pp.get("std", OPENAI_STD),
                  source={"kind": "tag", "model": name, "pretrained": tag})
        return enc.to(device)

    @classmethod
    def from_file(cls, path: str | os.PathLike, model_name: str | None,
                  device: str | torch.device = "cpu") -> "TextEncoder":
        """A local open_clip checkpoint (``.safetensors``, or ``.bin`` / ``.pt`` / ``.pth`` read
        with ``weights_only=True``) for the open_clip architecture ``model_name``."""
        open_clip = open_clip_module()
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"text_encoder: {path}: checkpoint file not found")
        if not model_name:
            raise ConfigError(f"text_encoder: {path}: name the checkpoint's open_clip architecture, "
                              f"e.g. 'ViT-B-32={path}' (or model_name=...)")
        check_model_name(model_name, f"unknown open_clip model {model_name!r}")
        model = load_clip_file(path, model_name)
        pp = open_clip.get_model_preprocess_cfg(model)
        enc = cls(model, open_clip.get_tokenizer(model_name), name=f"{model_name}={path}",
                  image_size=pp.get("size", model.visual.image_size), image_mean=pp.get("mean", OPENAI_MEAN),
                  image_std=pp.get("std", OPENAI_STD), source={"kind": "file", "model": model_name,
                                                                "path": str(path)})
        return enc.to(device)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, *, image_mean: Sequence[float] = OPENAI_MEAN,
                    image_std: Sequence[float] = OPENAI_STD, frozen: bool = True, name: str = "domain-clip"
                    ) -> "TextEncoder":
        """A new (untrained) domain CLIP: ``open_clip.CLIP(**config)`` with open_clip's
        ``SimpleTokenizer``. ``config`` defaults to :data:`DEFAULT_DOMAIN_CLIP`."""
        open_clip = open_clip_module()
        config = copy.deepcopy(to_container(dict(config)) if config is not None else DEFAULT_DOMAIN_CLIP)
        model = build_clip(config)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=int(model.context_length))
        if int(model.vocab_size) != len(tokenizer.encoder):
            raise ConfigError(f"CLIP config: text_cfg.vocab_size is {model.vocab_size}, but open_clip's tokenizer "
                              f"has {len(tokenizer.encoder)} tokens")
        return cls(model, tokenizer, name=name, image_size=model.visual.image_size, image_mean=image_mean,
                   image_std=image_std, source={"kind": "domain", "clip": config}, frozen=frozen)

    # -- saving and loading (a domain CLIP; the PretrainedMixin hooks) ---------------------------
    def pretrained_config(self) -> dict[str, Any]:
        if self.source.get("kind") != "domain":
            raise ConfigError(f"save_pretrained: only a domain CLIP is saved as a folder; {self.name!r} "
                              "is loaded by its tag or file")
        return {"clip": self.source["clip"], "image_mean": [float(v) for v in self.image_mean.flatten()],
                "image_std": [float(v) for v in self.image_std.flatten()], "tokenizer": "open_clip.SimpleTokenizer"}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], folder: Path) -> "TextEncoder":
        if "clip" not in config:
            raise CheckpointError(f"{folder / CONFIG_FILE}: not a domain CLIP (no 'clip' section)")
        return cls.from_config(config["clip"], image_mean=config.get("image_mean", OPENAI_MEAN),
                               image_std=config.get("image_std", OPENAI_STD), name=str(folder))

    def pretrained_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()  # the open_clip model's own names, as open_clip saves them

    def load_pretrained_state(self, state: dict[str, torch.Tensor], where: Path) -> None:
        check_state(where, self.model.state_dict(), state)
        self.model.load_state_dict(state, strict=True)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "TextEncoder":
        """Load a domain CLIP folder written by :meth:`save_pretrained` (strict, safetensors only).

        A folder with ``open_clip_config.json`` (open_clip's own export) is loaded by open_clip."""
        path = Path(path)
        if path.is_dir() and not (path / CONFIG_FILE).is_file() and (path / "open_clip_config.json").is_file():
            return cls.from_tag(f"local-dir:{path}", device=map_location)
        return super().from_pretrained(path, map_location)
