"""Run configuration: one YAML per dataset and resolution, overridable from the command line.

``load_config("configs/coco_128.yaml", ["batch_size=8", "model.generator.ngf=32"])`` reads the
file, applies ``key=value`` overrides (OmegaConf dot-list syntax) and checks them: a key that the
file does not define is an error that names it, so a typo never silently does nothing.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = "shapes_64.yaml"
REQUIRED_KEYS = ("out_dir", "max_steps", "seed", "device", "batch_size", "checkpoint_every", "resume",
                 "data", "model")


def resolve_config_path(path: str | Path | None) -> Path:
    """A config file path; a bare name like ``coco_128`` is looked up in the configs folder."""
    if path is None:
        path = CONFIG_DIR / DEFAULT_CONFIG
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = CONFIG_DIR / f"{p.name}.yaml"
    elif not p.exists() and p.parent == Path("."):
        p = CONFIG_DIR / p.name
    if not p.exists():
        available = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"{path}: config file not found (bundled configs: {available})")
    return p


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, full + "."))
    return keys


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                required: Iterable[str] = REQUIRED_KEYS) -> DictConfig:
    """Load a YAML config and apply ``key=value`` overrides, rejecting unknown keys.

    ``required`` lists the top-level keys the file must define (a training run's by default).
    """
    p = resolve_config_path(path)
    try:
        cfg = OmegaConf.load(p)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot parse YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{p}: top level must be a mapping")
    known = set(_all_keys(cfg))
    for ov in overrides:
        key, eq, _ = ov.partition("=")
        key = key.lstrip("+")
        if not eq:
            raise ConfigError(f"override {ov!r}: expected key=value")
        # Keys under an open-ended mapping (e.g. a dataset's extra kwargs) may be new; a key
        # whose parent is known but which is itself unknown is almost always a typo.
        if key not in known and not ov.startswith("+"):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; prefix with + to add a new key"
            raise ConfigError(f"override {ov!r}: unknown key {key!r} in {p.name}{hint}")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    except OmegaConfBaseException as e:
        raise ConfigError(f"overrides: {str(e).splitlines()[0]}") from None
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ConfigError(f"{p}: missing top-level key(s): {', '.join(missing)}")
    cfg["config_path"] = str(p)
    return cfg


def to_container(cfg: Any) -> Any:
    """A plain dict/list copy (resolved interpolations) of an OmegaConf node; others unchanged."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
