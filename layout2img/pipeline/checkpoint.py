"""How a :class:`~layout2img.pipeline.SceneGraphToImage` is saved: what its :class:`PretrainedMixin` hooks call.

A checkpoint folder holds ``config.json`` (the constructor's arguments but the vocabulary, plus
the text encoder's spec and weight fingerprint), ``model.safetensors``, ``vocab.json`` and, for a
model whose text encoder is a domain CLIP, that encoder in ``text_encoder/`` (format version 2),
so the checkpoint still works after the CLIP folder it was trained with is moved or deleted. A
folder of format version 1 (layout2img 0.1) names its text encoder by spec only; it loads as
before, the spec looked up beside the checkpoint too, and the fingerprint checked.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError
from ..io import atomic_write_text, read_json
from ..vocab import Vocab
from .text import resolve_text_encoder_spec

VOCAB_FILE = "vocab.json"
#: The subfolder of a checkpoint that holds its text encoder (a domain CLIP), when bundled.
TEXT_ENCODER_FOLDER = "text_encoder"
#: State-dict suffixes added after format 1 whose all-zero value reproduces older checkpoints'
#: behaviour (style cluster shares: zero = centres drawn uniformly).
LATER_ZERO_TENSORS = ("style_clusters.shares",)


def with_later_tensors(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the tensors added after it was written (:data:`LATER_ZERO_TENSORS`, under any
    prefix) filled in with the value that means what the older state meant: zeros."""
    missing = {key: torch.zeros_like(value) for key, value in expected.items()
               if key not in state and key.endswith(LATER_ZERO_TENSORS)}
    return {**state, **missing} if missing else state


#: The :class:`~layout2img.io.PretrainedMixin` class settings of a SceneGraphToImage folder.
MODEL_CLASS = "SceneGraphToImage"
#: 1: layout2img 0.1 folders (no key); 2: may bundle the text encoder in ``text_encoder/``.
FORMAT_VERSION = 2
EXTRA_FILES = (VOCAB_FILE,)


def bundles_text_encoder(model) -> bool:
    """Whether ``model``'s text encoder is saved with it: a domain CLIP is; a tag or file encoder
    stays named by its spec."""
    encoder = model.text_encoder
    return encoder is not None and encoder.source.get("kind") == "domain"


def checkpoint_config(model) -> dict[str, Any]:
    """What ``config.json`` records: the constructor's arguments but the vocabulary, and the text
    encoder's fingerprint (and its folder, when bundled)."""
    config = {k: v for k, v in model.config.items() if k != "vocab"}
    if model.text_encoder is not None:
        config["text_encoder_fingerprint"] = model.text_encoder.fingerprint()
    if bundles_text_encoder(model):
        config["text_encoder_folder"] = TEXT_ENCODER_FOLDER
    return config


def save_checkpoint_files(model, folder: Path) -> None:
    """The files beside the weights: ``vocab.json`` and a bundled text encoder."""
    atomic_write_text(folder / VOCAB_FILE, json.dumps(model.vocab.to_dict(), indent=1) + "\n")
    if bundles_text_encoder(model):
        encoder = model.text_encoder
        encoder.save_pretrained(folder / TEXT_ENCODER_FOLDER, encoder.metadata)


def model_from_checkpoint_config(build: Callable[[dict[str, Any]], Any], config: dict[str, Any], folder: Path):
    """The model ``config.json`` describes (``build``: config dict -> model), with its text encoder:
    the bundled one in ``text_encoder/``, else the one its spec names (a relative path is also
    looked up beside the checkpoint); either must have the fingerprint the model was saved with."""
    from ..models.text import TextEncoder

    config = dict(config)
    expected = config.pop("text_encoder_fingerprint", None)
    bundled = config.pop("text_encoder_folder", None)
    spec = config.get("text_encoder")
    vocab = Vocab.from_dict(read_json(folder / VOCAB_FILE, "vocabulary", CheckpointError))
    encoder, where = None, None
    if bundled is not None:
        if bundled != TEXT_ENCODER_FOLDER:
            raise CheckpointError(f"{folder / 'config.json'}: text_encoder_folder must be "
                                  f"{TEXT_ENCODER_FOLDER!r}, got {bundled!r}")
        where = folder / TEXT_ENCODER_FOLDER
        encoder = TextEncoder.from_pretrained(where)
        config["text_encoder"] = None
    elif isinstance(spec, str):
        config["text_encoder"] = resolve_text_encoder_spec(spec, [folder.resolve(), *folder.resolve().parents])
    model = build({**config, "vocab": vocab.to_dict()})
    if encoder is not None:
        model.set_text_encoder(encoder)
    if isinstance(spec, str):
        model.config["text_encoder"] = spec  # saved again as written, not as resolved here
    found = model.text_encoder.fingerprint() if expected and model.text_encoder is not None else expected
    if found != expected:
        if where is not None:
            raise CheckpointError(f"{where}: the bundled text encoder's weights ({found}) are not the ones "
                                  f"this model was trained with ({expected})")
        raise CheckpointError(f"{folder}: text encoder {spec!r} is not the CLIP this model was trained with "
                              f"(weights {found}, expected {expected}); point text_encoder in "
                              f"{folder / 'config.json'} at that CLIP")
    return model
