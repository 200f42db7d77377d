"""Text in the pipeline: the frozen text encoder a model holds, caption grounding, CLIP specs.

A text-conditioned :class:`~layout2img.pipeline.SceneGraphToImage` holds its frozen CLIP
:class:`~layout2img.models.text.TextEncoder` in a :class:`SharedTextEncoder` - a plain object,
not a submodule - so the encoder's weights are not in the model's ``parameters()`` (the
optimiser is built from them) nor its ``state_dict()``, and the EMA copy of a model
(``copy.deepcopy``) shares the one encoder. :class:`TextConditioningMixin` gives the model its
``text_encoder``, :meth:`~TextConditioningMixin.encode_texts` (captions and descriptions of a
batch, grounded: a caption's phrase for an object becomes its description) and the checks of
given embeddings.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data.batch import Batch
from ..errors import CheckpointError, ConfigError, DataError
from .outputs import TextInputs

if TYPE_CHECKING:
    from ..models.text import TextEncoder

#: What to do when a text encoder folder named by a run config does not exist yet.
TRAIN_CLIP_HINT = "run `layout2img train-clip --config configs/clip/shapes.yaml` first (it writes runs/clip_shapes)"


#: Words that end a noun phrase when reading backwards from an object's name in a caption.
_PHRASE_STOPS = frozenset("a an the of to and or on in at by with under over above below left right beside near "
                          "behind front inside around next is are there this that".split())


def caption_phrase(caption: str | None, name: str, max_words: int = 3) -> str | None:
    """The caption's noun phrase for an object name: its first whole-word mention with up to
    ``max_words`` modifiers before it ("a large black star ..." , "star" -> "a large black star";
    "... on grass" -> "grass"), or None when the caption does not mention it."""
    if not caption or not name or name.startswith("__"):
        return None
    words = re.findall(r"[\w'-]+|[^\w\s]", caption.lower())
    target = name.lower().split()
    n = len(target)
    for i in range(len(words) - n + 1):
        if words[i:i + n] == target:
            start = i
            while start > 0 and i - start < max_words and words[start - 1].isalpha() \
                    and words[start - 1] not in _PHRASE_STOPS:
                start -= 1
            article = [words[start - 1]] if start > 0 and words[start - 1] in ("a", "an", "the") else []
            return " ".join([*article, *words[start:i + n]])
    return None


def is_path_spec(spec: str) -> bool:
    """Whether a text-encoder spec means a file or folder (``runs/clip_shapes``, ``ARCH=FILE``),
    not an open_clip ``NAME/TAG`` or ``hf-hub:`` name."""
    if spec.startswith(("hf-hub:", "local-dir:")):
        return False
    if spec.startswith((".", "/", "~")) or "\\" in spec or "=" in spec:
        return True
    head, slash, _ = spec.partition("/")
    if not slash:
        return True
    try:
        import open_clip

        return head not in open_clip.list_models()
    except ImportError:  # pragma: no cover - a declared dependency
        return True


def resolve_text_encoder_spec(spec: str, base_dirs: Sequence[Path] = ()) -> str:
    """``spec`` itself, or - a relative path that does not exist from here - the first
    ``base / spec`` that exists (a checkpoint names ``runs/clip_shapes`` relative to the repo)."""
    arch, eq, rest = spec.partition("=")
    target = rest if eq else spec
    if not is_path_spec(spec) or Path(target).expanduser().exists() or Path(target).is_absolute():
        return spec
    for base in base_dirs:
        if (Path(base) / target).exists():
            found = str(Path(base) / target)
            return f"{arch}={found}" if eq else found
    return spec


def load_text_encoder(spec: Any, text_dim: int):
    """The frozen :class:`TextEncoder` a model config names; ``text_dim`` must be its ``embed_dim``."""
    from ..models.text import TextEncoder

    spec = str(spec).strip()
    arch, eq, rest = spec.partition("=")
    if is_path_spec(spec) and not Path(rest if eq else spec).expanduser().exists():
        raise ConfigError(f"model.text_encoder: {rest if eq else spec}: no such CLIP folder or file; "
                          f"for the Shapes domain CLIP, {TRAIN_CLIP_HINT}")
    try:
        encoder = TextEncoder.load(spec)
    except CheckpointError as e:
        raise ConfigError(f"model.text_encoder: {e}") from None
    encoder.freeze()
    if text_dim != encoder.embed_dim:
        raise ConfigError(f"model.text_dim is {text_dim}, but the text encoder {spec} embeds in "
                          f"{encoder.embed_dim} dimensions (set model.text_dim: {encoder.embed_dim})")
    return encoder


class SharedTextEncoder:
    """A frozen :class:`TextEncoder` held beside a model's modules, not among them.

    ``nn.Module`` registers only modules, parameters and buffers, so the encoder held here stays
    out of the owner's ``parameters()``, ``state_dict()``, ``.train()`` and ``.to()``;
    ``copy.deepcopy`` returns this same holder, so a model and its EMA copy share one encoder.
    :meth:`on` hands the encoder out on the device that needs it (moving it there first).
    """

    __slots__ = ("encoder",)

    def __init__(self, encoder: "TextEncoder"):
        self.encoder = encoder

    def __deepcopy__(self, memo: dict) -> "SharedTextEncoder":
        return self

    def on(self, device: torch.device) -> "TextEncoder":
        if self.encoder.device != device:
            self.encoder.to(device)
        return self.encoder


class TextConditioningMixin:
    """The text half of :class:`~layout2img.pipeline.SceneGraphToImage` (which provides
    ``text_dim``, ``vocab``, ``device`` and ``style_prior``)."""

    _shared_text_encoder: SharedTextEncoder | None = None

    @property
    def text_encoder(self) -> "TextEncoder | None":
        """The frozen text encoder, on the model's device (it follows the model there on first
        use after a move), or None (then ``generate(text=...)`` fails)."""
        holder = self._shared_text_encoder
        return holder.on(self.device) if holder is not None else None

    def set_text_encoder(self, encoder: "TextEncoder | None", spec: str | None = None) -> None:
        """Use ``encoder`` (frozen here; its ``embed_dim`` must be the model's ``text_dim``) or none.
        ``config['text_encoder']`` becomes ``spec`` (default: the encoder's name)."""
        from ..models.text import TextEncoder

        if encoder is None:
            self._shared_text_encoder = None
            self.config.pop("text_encoder", None)
            return
        if not isinstance(encoder, TextEncoder):
            raise ConfigError(f"text_encoder: expected a TextEncoder or None, got {type(encoder).__name__}")
        if encoder.embed_dim != self.text_dim:
            raise ConfigError(f"text_encoder: embeds in {encoder.embed_dim} dimensions, the model's text_dim is "
                              f"{self.text_dim}")
        self._shared_text_encoder = SharedTextEncoder(encoder.freeze())
        self.config["text_encoder"] = str(spec if spec is not None else encoder.name)

    def encode_texts(self, batch: Batch, drop_prob: float = 0.0, generator: torch.Generator | None = None,
                     captions: Sequence[str | None] | None = None, ground_captions: bool = True,
                     cache: bool = True) -> TextInputs:
        """Caption and description embeddings of a batch with the model's text encoder.

        ``captions`` replaces ``batch.captions`` (one per image, None for none). ``drop_prob``:
        each caption and each description is independently dropped (as if absent) with this
        probability - text dropout in training, so the model also works without text. The
        draws are one ``torch.rand(B + O, generator=generator)`` call whatever the batch holds,
        so a seeded generator gives the same drops on every run.

        ``ground_captions``: an object without a (kept) description whose vocabulary name the
        (kept) caption of its image mentions gets the caption's phrase for it as its description
        ("a large black star to the left of a white square" gives the star "a large black star"
        and the square "a white square"; see :func:`caption_phrase`), so a caption reaches the
        objects it talks about, not only FiLM. Objects of a class the caption names twice get its
        first phrase. ``cache``: as :meth:`TextEncoder.encode_text`.
        """
        if self.text_encoder is None:
            raise ConfigError(f"encode_texts: this model has no text encoder (text_dim={self.text_dim}); "
                              "set model.text_encoder")
        captions = list(batch.captions if captions is None else captions)
        b, o = batch.num_images, batch.objs.shape[0]
        if len(captions) != b:
            raise DataError(f"captions: expected one per image ({b}), got {len(captions)}")
        descriptions = list(batch.descriptions)
        if len(descriptions) != o:
            raise DataError(f"batch.descriptions: expected one per object ({o}), got {len(descriptions)}")

        def present(t: Any) -> bool:
            return isinstance(t, str) and bool(t.strip())

        keep = [present(t) for t in captions + descriptions]
        if drop_prob > 0:
            rng_device = generator.device if generator is not None else "cpu"
            draws = torch.rand(b + o, generator=generator, device=rng_device).cpu().tolist()
            keep = [k and r >= drop_prob for k, r in zip(keep, draws)]
        if ground_captions:
            names = self.vocab.object_names
            for j, img in enumerate(batch.obj_to_img.tolist()):
                if keep[b + j] or not keep[img] or int(batch.objs[j]) == 0:
                    continue
                phrase = caption_phrase(captions[img], names[int(batch.objs[j])])
                if phrase is not None:
                    descriptions[j], keep[b + j] = phrase, True
        texts = [" ".join(t.split()) for t, k in zip(captions + descriptions, keep) if k]
        device = self.device
        emb = torch.zeros(b + o, self.text_dim, device=device)
        if texts:
            rows = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long, device=device)
            encoded = self.text_encoder.encode_text(texts, cache=cache)
            emb = emb.index_copy(0, rows, encoded.to(device=device, dtype=emb.dtype))
        mask = torch.tensor(keep, dtype=torch.bool, device=device)
        return TextInputs(emb[:b], mask[:b], emb[b:], mask[b:])

    def _check_text_inputs(self, batch: Batch, text_emb, text_mask, obj_text_emb, obj_text_mask):
        """The four text inputs of ``forward``, checked; masks with no True row drop their embeddings."""
        b, o = batch.num_images, batch.objs.shape[0]
        if (text_emb is not None or obj_text_emb is not None) and self.text_dim == 0:
            raise ConfigError("text embeddings given, but this model takes no text (text_dim=0)")
        for name, emb, rows in (("text_emb", text_emb, b), ("obj_text_emb", obj_text_emb, o)):
            if emb is not None and (not isinstance(emb, torch.Tensor) or tuple(emb.shape) != (rows, self.text_dim)):
                shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
                raise DataError(f"{name}: expected shape ({rows}, {self.text_dim}), got {shape}")
        for name, mask, emb, rows in (("text_mask", text_mask, text_emb, b),
                                      ("obj_text_mask", obj_text_mask, obj_text_emb, o)):
            if mask is None:
                continue
            if emb is None:
                raise DataError(f"{name} given without {name.replace('mask', 'emb')}")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (rows,):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise DataError(f"{name}: expected shape ({rows},), got {shape}")
        device = batch.objs.device
        if text_mask is not None:
            text_mask = text_mask.to(device=device, dtype=torch.bool)
            if not bool(text_mask.any()):
                text_emb = text_mask = None  # no image has a caption: exactly the text-free model
        if obj_text_mask is not None:
            obj_text_mask = obj_text_mask.to(device=device, dtype=torch.bool)
            if not bool(obj_text_mask.any()):
                obj_text_emb = obj_text_mask = None
        return text_emb, text_mask, obj_text_emb, obj_text_mask

    def _text_prior(self, batch: Batch, obj_vecs, text_emb, text_mask, obj_text_emb, obj_text_mask):
        o, device = batch.objs.shape[0], obj_vecs.device
        zeros = obj_vecs.new_zeros(o, self.text_dim, dtype=torch.float32)
        no = torch.zeros(o, dtype=torch.bool, device=device)
        if text_emb is not None:
            cap = text_emb.float()[batch.obj_to_img]
            cap_mask = (text_mask[batch.obj_to_img] if text_mask is not None
                        else torch.ones(o, dtype=torch.bool, device=device))
        else:
            cap, cap_mask = zeros, no
        if obj_text_emb is not None:
            desc = obj_text_emb.float()
            desc_mask = obj_text_mask if obj_text_mask is not None else torch.ones(o, dtype=torch.bool, device=device)
        else:
            desc, desc_mask = zeros, no
        # the prior steers appearance only: the layout's training is left to its own losses
        mu, logvar = self.style_prior(batch.objs, obj_vecs.detach(), cap, cap_mask, desc, desc_mask)
        return mu, logvar, (cap_mask | desc_mask) & (batch.objs != 0)
