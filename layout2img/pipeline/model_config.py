"""The model section of a config, checked with "did you mean" hints (defaults: the config schema's)."""
from __future__ import annotations

import copy
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

# The model defaults of layout2img 0.1 where today's differ (today's are the default run's model).
_V0_1_DEFAULTS: dict[str, dict[str, Any]] = {
    "gcn": {"embed_dim": 128, "width": 128, "hidden": 512, "layers": 5},
    "layout": {"box_hidden": 512, "mask_channels": None, "fill_holes": False, "predictor": "regression"},
    "generator": {"ngf": 64, "n_blocks": 6, "conditioning": "input"},
    "encoder": {"norm": "instance"},
}
#: What a section key absent from a checkpoint's config.json means, by the folder's
#: ``format_version``: the defaults of the code that wrote it. Folders of formats 1 and 2 were all
#: written while the defaults were v0.1's (format 2 writes every key, so only hand-edited ones
#: miss any); a key absent from neither table takes today's default.
SAVED_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {1: _V0_1_DEFAULTS, 2: _V0_1_DEFAULTS}
# (``layout.fill_holes`` came later: every folder that lacks it was written before it, so False;
# ``layout.predictor`` likewise: written before the sampler existed, so the regression.)


def with_saved_defaults(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's config.json payload with the section keys it lacks filled in as the code that
    wrote it meant them (:data:`SAVED_DEFAULTS`), so an old folder builds the model it saved."""
    old = SAVED_DEFAULTS.get(payload.get("format_version", 1), {})
    out = dict(payload)
    for name, defaults in old.items():
        section = out.get(name)
        if section is None or isinstance(section, Mapping):
            out[name] = {**defaults, **dict(section or {})}
    return out


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


def model_config(vocab: Vocab, sections: Mapping[str, Mapping | None], **top: Any) -> dict[str, Any]:
    """A model's complete ``config`` from its constructor's arguments: each section completed with
    its defaults and checked, the top-level keys (None = the default) checked (ConfigError)."""
    sections = {name: check_section(name, sections.get(name), defaults) for name, defaults in SECTION_DEFAULTS.items()}
    top = {key: TOP_DEFAULTS[key] if top.get(key) is None else top[key] for key in TOP_DEFAULTS}
    for key in ("image_size", "style_dim", "class_embed_dim", "text_dim"):
        value, least = top[key], 1 if key == "image_size" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"model.{key}: expected a {'positive' if least else 'non-negative'} integer, "
                              f"got {value!r}")
    for key in ("noise_channels", "position_frequencies"):  # absent from older config.json files: 0, as they meant
        value = sections["generator"][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"model.generator.{key}: expected a non-negative integer, got {value!r}")
    if not isinstance(sections["generator"]["box_coordinates"], bool):
        raise ConfigError(f"model.generator.box_coordinates: expected true or false, "
                          f"got {sections['generator']['box_coordinates']!r}")
    spec = to_container(top.pop("text_encoder", None))
    if spec is not None and (not isinstance(spec, (str, Path)) or not str(spec).strip()):
        raise ConfigError(f"model.text_encoder: expected a CLIP folder, ARCH=FILE or NAME/TAG (or null), got {spec!r}")
    config = {"vocab": vocab.to_dict(), **top, **copy.deepcopy(sections)}
    if spec is not None:  # absent from config.json of text-free models, as before
        config["text_encoder"] = str(spec)
    return config
