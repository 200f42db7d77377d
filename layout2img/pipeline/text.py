"""Text in the pipeline: the frozen text encoder a model holds, caption grounding, CLIP specs.

A text-conditioned :class:`~layout2img.pipeline.SceneGraphToImage` holds its frozen CLIP
:class:`~layout2img.models.text.TextEncoder` in a :class:`SharedTextEncoder` - a plain object,
not a submodule - so the encoder's weights are not in the model's ``parameters()`` (the
optimiser is built from them) nor its ``state_dict()``, and the EMA copy of a model
(``copy.deepcopy``) shares the one encoder; the model's
:class:`~layout2img.pipeline.text_conditioner.TextConditioner` uses it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import CheckpointError, ConfigError

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
