"""The model section of a config, checked with "did you mean" hints (defaults: the config schema's)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

from ..config import load_model_section, model_section_defaults, model_top_defaults, to_container
from ..errors import ConfigError
from ..vocab import Vocab

#: Every section's keys and defaults, and the top-level ones: the config schema's (one place).
SECTION_DEFAULTS: dict[str, dict[str, Any]] = model_section_defaults()
TOP_DEFAULTS: dict[str, Any] = model_top_defaults()
MODEL_KEYS = ("vocab", *TOP_DEFAULTS, *SECTION_DEFAULTS)


def unknown_key_error(where: str, key: str, known: Any) -> ConfigError:
    """``where: unknown key 'x'; did you mean 'y'?`` (or the known keys when nothing is close)."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def check_section(name: str, given: Mapping | None, defaults: dict) -> dict:
    """A model section completed with its defaults; an unknown key is a ConfigError."""
    given = to_container(given)
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"model.{name}: expected a mapping, got {type(given).__name__}")
    unknown = [k for k in given if k not in defaults]
    if unknown:
        raise unknown_key_error(f"model.{name}", unknown[0], defaults)
    return {**defaults, **dict(given)}


def make_vocab(vocab: Any) -> Vocab:
    """A :class:`Vocab` from a name (``'shapes'``), a vocab.json path, a dict or a Vocab."""
    vocab = to_container(vocab)
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, Mapping):
        return Vocab.from_dict(dict(vocab))
    if isinstance(vocab, (str, Path)):
        return Vocab.by_name(str(vocab))
    raise ConfigError(f"model.vocab: expected a vocabulary name, path or dict, got {type(vocab).__name__}")


def model_kwargs(config: Any, **overrides) -> dict[str, Any]:
    """The constructor arguments in a run config (a YAML path, or a dict / DictConfig with a
    ``model:`` section) or in a model section itself; ``overrides`` replace top-level keys."""
    if isinstance(config, (str, Path)):
        config = load_model_section(config)  # its base files merged, checked against the schema
    config = to_container(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"model config: expected a mapping, got {type(config).__name__}")
    section = config.get("model", config)
    if not isinstance(section, Mapping):
        raise ConfigError("model config: the 'model' section must be a mapping")
    kwargs = {**dict(section), **overrides}
    unknown = [k for k in kwargs if k not in MODEL_KEYS]
    if unknown:
        raise unknown_key_error("model", unknown[0], MODEL_KEYS)
    return kwargs
