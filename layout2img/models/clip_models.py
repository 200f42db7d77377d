"""open_clip plumbing for :class:`~layout2img.models.text.TextEncoder`: the package, a domain CLIP
built from its config, and a local checkpoint's tensors read without unpickling."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

#: The image normalisation of OpenAI's CLIP (open_clip's default), used by domain models too.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: A small CLIP for 64 px pictures with short captions (the domain model of the Shapes config).
DEFAULT_DOMAIN_CLIP: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "width": 128, "heads": 4, "layers": 3},
}
#: What to try when an open_clip tag cannot be loaded (no network, no cache).
LOAD_ALTERNATIVES = ("Use a local checkpoint (text_encoder: path/to/file.safetensors or .bin, as ARCH=PATH) "
                     "or the project's domain CLIP (layout2img train-clip)")


def one_line(e: BaseException) -> str:
    """An exception as one line of at most ~200 characters (open_clip and hub errors run long)."""
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(e).__name__


def open_clip_module():
    """The open_clip package, or a ConfigError saying how to install it."""
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ConfigError(f"CLIP needs the open_clip package (pip install open-clip-torch): {e}") from None
    return open_clip


def build_clip(config: Mapping[str, Any]) -> nn.Module:
    """An untrained ``open_clip.CLIP`` from its constructor arguments (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, optionally ``quick_gelu``, ``init_logit_scale``)."""
    open_clip = open_clip_module()
    config = dict(config)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ConfigError(f"CLIP config: missing key {key!r}")
    allowed = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(f"CLIP config: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    for section, cls in (("vision_cfg", open_clip.model.CLIPVisionCfg), ("text_cfg", open_clip.model.CLIPTextCfg)):
        if not isinstance(config[section], Mapping):
            raise ConfigError(f"CLIP config: {section} must be a mapping")
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(config[section]) - known)
        if bad:
            raise ConfigError(f"CLIP config: unknown key {section}.{bad[0]}")
    if config["text_cfg"].get("hf_model_name") or config["text_cfg"].get("hf_tokenizer_name"):
        raise ConfigError("CLIP config: a domain CLIP uses open_clip's own text tower and tokenizer "
                          "(no hf_model_name / hf_tokenizer_name)")
    try:
        return open_clip.CLIP(**copy.deepcopy(config))
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ConfigError(f"CLIP config: cannot build the model: {one_line(e)}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors without unpickling anything but tensors (weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals, damaged files
        raise CheckpointError(f"{path}: cannot read as a weights-only checkpoint: {one_line(e)}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}



def check_model_name(name: str, problem: str) -> None:
    """ConfigError ``text_encoder: {problem}; did you mean ...?`` unless open_clip knows ``name``."""
    import difflib

    known = open_clip_module().list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise ConfigError(f"text_encoder: {problem}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def load_clip_file(path: Path, model_name: str) -> nn.Module:
    """open_clip's ``model_name`` with the weights of a local checkpoint file, fitted as open_clip's
    own loader fits them (positional embeddings resized); CheckpointError when they do not fit."""
    open_clip = open_clip_module()
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    state = read_state_dict(path)
    try:
        if "logit_scale" in state and state["logit_scale"].dim() != model.logit_scale.dim():
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        open_clip.model.resize_pos_embed(state, model)
        open_clip.model.resize_text_pos_embed(state, model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: does not fit open_clip model {model_name}: {one_line(e)}") from None
    return model
