"""Reading run configs: a YAML file and its ``base:`` files, ``key=value`` overrides, the schema check.

A config file may name the files it builds on, ``base: base/coco.yaml`` or a list of them,
relative to itself; they are merged in order (OmegaConf), the file's own keys last. The result is
merged over the schema's defaults (:mod:`layout2img.config.schema`): a key no dataclass declares
is an error naming the file (or override) with the closest known key, a value of the wrong type
an error naming the key, a required key left unset an error listing it.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from .schema import DATASETS, DataConfig, RunConfig


def _bundled_config_dir() -> Path:
    """The repository's ``configs/`` folder, which the build ships as the package ``layout2img.configs``
    (pyproject.toml): found through the import system, so an editable and a wheel install agree."""
    try:
        return Path(str(resources.files("layout2img.configs")))
    except ModuleNotFoundError:  # a source tree put on sys.path by hand, never installed
        return Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = _bundled_config_dir()
DEFAULT_CONFIG = "shapes_64.yaml"
BASE_KEY = "base"


def resolve_config_path(path: str | Path | None) -> Path:
    """A config file: an existing path as given, else a bundled config by name: ``coco_128``,
    ``clip/shapes``, ``coco_128.yaml`` or ``configs/coco_128.yaml`` (the repository's spelling, so the
    README's commands work from any folder with an installed package)."""
    if path is None:
        path = CONFIG_DIR / DEFAULT_CONFIG
    p = Path(path)
    if not p.exists() and not p.is_absolute():
        name = p if p.suffix else p.with_name(p.name + ".yaml")
        if name.parts[:1] == ("configs",) and len(name.parts) > 1:
            name = name.relative_to("configs")
        p = CONFIG_DIR / name
    if not p.is_file():
        available = ", ".join(sorted(q.relative_to(CONFIG_DIR).with_suffix("").as_posix()
                                     for q in CONFIG_DIR.rglob("*.yaml") if q.parent.name != "base"))
        raise ConfigError(f"{path}: config file not found (bundled configs: {available})")
    return p


def to_container(cfg: Any) -> Any:
    """A plain dict/list copy (resolved interpolations) of an OmegaConf node; others unchanged."""
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _display(path: Path) -> str:
    """A bundled config by its name in the configs folder (``clip/shapes.yaml``), others as given."""
    try:
        return str(path.resolve().relative_to(CONFIG_DIR))
    except ValueError:
        return str(path)


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


# -- files -------------------------------------------------------------------------------------------
def _read_file(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def read_layers(path: Path, _chain: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """``(file, its own keys)`` for a config file and every base it names, bases first."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"{_chain[-1]}: base {path} is already part of this config (a loop)")
    cfg = _read_file(path)
    bases = to_container(cfg.pop(BASE_KEY, None))
    bases = [bases] if isinstance(bases, str) else bases
    if bases is not None and not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a file name or a list of file names")
    layers: list[tuple[Path, DictConfig]] = []
    for name in bases or []:
        base = path.parent / name
        if not base.is_file():
            raise ConfigError(f"{path}: base file {name!r} not found (looked for {base})")
        layers.extend(read_layers(base, (*_chain, path)))
    layers.append((path, cfg))
    return layers


# -- the schema, walked ------------------------------------------------------------------------------
_OPEN = object()  # the schema type at a key inside an open mapping (e.g. the CLIP model's arguments)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, False


def _field_types(cls: type, data_cls: type) -> dict[str, tuple[Any, bool]]:
    """Each field's ``(type, optional)``; a field typed :class:`DataConfig` is ``data_cls``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, optional = _strip_optional(hints[f.name])
        out[f.name] = (data_cls if tp is DataConfig else tp, optional)
    return out


def _is_open(tp: Any) -> bool:
    return tp is Any or tp is dict or typing.get_origin(tp) in (dict, Mapping)


def _schema_paths(cls: type, data_cls: type, prefix: str = "") -> list[str]:
    paths = []
    for name, (tp, _) in _field_types(cls, data_cls).items():
        paths.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            paths.extend(_schema_paths(tp, data_cls, f"{prefix}{name}."))
    return paths


def _lookup(schema: type, data_cls: type, key: str) -> Any:
    """The schema type at a dotted key: a type, :data:`_OPEN` (inside an open mapping) or None (unknown)."""
    tp: Any = schema
    for part in key.split("."):
        if _is_open(tp):
            return _OPEN
        if not dataclasses.is_dataclass(tp):
            return None
        fields = _field_types(tp, data_cls)
        if part not in fields:
            return None
        tp = fields[part][0]
    return tp


def _unknown_key(where: str, key: str, schema: type, data_cls: type, present: Mapping | None = None,
                 may_add: bool = False, source: str = "") -> ConfigError:
    """``where: unknown key 'a.b' [in source]; did you mean 'a.c'?``: the closest key beside it (in the
    schema, or in ``present`` inside an open mapping), else the closest dotted key anywhere."""
    parent, _, leaf = key.rpartition(".")
    above = _lookup(schema, data_cls, parent) if parent else schema
    if dataclasses.is_dataclass(above) or above is _OPEN or _is_open(above):
        if dataclasses.is_dataclass(above):
            names = list(_field_types(above, data_cls))
        else:
            node = OmegaConf.select(OmegaConf.create(dict(present or {})), parent, default=None)
            names = [str(n) for n in node.keys()] if isinstance(node, DictConfig) else []
        close = [f"{parent}.{n}" if parent else n for n in difflib.get_close_matches(leaf, names, n=1)]
        listing = f" ({parent or 'top-level'} keys: {', '.join(names)})" if dataclasses.is_dataclass(above) else ""
    else:
        close = difflib.get_close_matches(key, _schema_paths(schema, data_cls), n=1)
        listing = ""
    hint = (f"; did you mean {close[0]!r}?" if close else "; prefix with + to add a new key" if may_add
            else listing)
    return ConfigError(f"{where}: unknown key {key!r}{f' in {source}' if source else ''}{hint}")


def _check_keys(where: str, node: Mapping, cls: type, data_cls: type, schema: type, prefix: str = "") -> None:
    """Every key of a file's mapping ``node`` is declared by dataclass ``cls`` (recursively)."""
    fields = _field_types(cls, data_cls)
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise _unknown_key(where, path, schema, data_cls)
        tp, optional = fields[key]
        if not dataclasses.is_dataclass(tp) or (isinstance(value, str) and value.startswith("${")):
            continue
        if isinstance(value, Mapping):
            _check_keys(where, value, tp, data_cls, schema, path + ".")
        elif value is None and not optional:
            raise ConfigError(f"{where}: {path}: expected a mapping, got null")
        elif value is not None and value != "???":
            raise ConfigError(f"{where}: {path}: expected a mapping, got {value!r}")


# -- overrides ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Override:
    text: str
    key: str
    adds: bool  # written +key=value: may add a key inside an open mapping
    value: DictConfig


def _parse_override(text: str) -> _Override:
    key, eq, value = text.partition("=")
    adds = key.startswith("+")
    key = key.lstrip("+").strip()
    if not eq or not key:
        raise ConfigError(f"override {text!r}: expected key=value")
    try:
        parsed = OmegaConf.from_dotlist([f"{key}={value}"])
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"override {text!r}: {str(e).splitlines()[0]}") from None
    return _Override(text, key, adds, parsed)


def _check_override(ov: _Override, raw: DictConfig, schema: type, data_cls: type, source: str) -> None:
    """The key is declared, or is in an open mapping and either there already or added with ``+``."""
    found = _lookup(schema, data_cls, ov.key)
    if found is not None and found is not _OPEN:
        return
    if found is _OPEN and (ov.adds or OmegaConf.select(raw, ov.key, default=_OPEN) is not _OPEN):
        return
    raise _unknown_key(f"override {ov.text!r}", ov.key, schema, data_cls, _plain(raw), may_add=found is _OPEN,
                       source=source)


# -- validation --------------------------------------------------------------------------------------
def _data_schema(schema: type, dataset: Any, where: str, complete: bool) -> type:
    """The ``data:`` dataclass: the one ``data.dataset`` names where the schema's data is a DataConfig."""
    if typing.get_type_hints(schema).get("data") is not DataConfig or (dataset is None and not complete):
        return DataConfig
    if dataset not in DATASETS:
        got = "missing" if dataset is None else f"unknown dataset {dataset!r}"
        raise ConfigError(f"{where}: data.dataset: {got} ({', '.join(DATASETS)})")
    return DATASETS[dataset].schema


def _source_of(key: str, layers: list[tuple[str, Mapping]]) -> str:
    """The last layer (file or override) that sets ``key`` or a section above it."""
    for where, node in reversed(layers):
        parts, cur = key.split("."), node
        for i, part in enumerate(parts):
            if not isinstance(cur, Mapping) or part not in cur:
                break
            if i == len(parts) - 1 or not isinstance(cur[part], Mapping):
                return where
            cur = cur[part]
    return layers[-1][0] if layers else "config"


def _structured(schema: type, data_cls: type) -> DictConfig:
    instance = schema(data=data_cls()) if data_cls is not DataConfig else schema()
    return OmegaConf.structured(instance)


def _is_interpolation(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    return OmegaConf.is_interpolation(OmegaConf.select(cfg, parent) if parent else cfg, leaf)


def _config_error(e: OmegaConfBaseException, layers: list[tuple[str, Mapping]], where: str) -> ConfigError:
    key = e.full_key or ""
    src = _source_of(key, layers) if key else where
    return ConfigError(f"{src}: {key + ': ' if key else ''}{str(e).splitlines()[0]}")


def _validate(layers: list[tuple[str, Mapping]], schema: type, data_cls: type, where: str,
              complete: bool, resolve: str = "") -> DictConfig:
    """The schema's defaults with every layer merged on top: types checked, required keys set (if
    ``complete``) and the interpolations under ``resolve`` (a dotted key; '' for all) resolvable."""
    cfg = _structured(schema, data_cls)
    try:
        for _, node in layers:
            cfg = OmegaConf.merge(cfg, node)
    except OmegaConfBaseException as e:
        raise _config_error(e, layers, where) from None
    try:
        # an interpolation of a missing key is not listed: the key it points to is
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not _is_interpolation(cfg, k)) if complete else []
        if not missing:  # every interpolation resolves, to a value of its key's type
            to_container(OmegaConf.select(cfg, resolve) if resolve else cfg)
    except OmegaConfBaseException as e:
        raise _config_error(e, layers, where) from None
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(missing)}")
    return cfg


def validate_config(config: Mapping | DictConfig, schema: type = RunConfig, where: str = "config") -> DictConfig:
    """A config (mapping or OmegaConf node) checked against ``schema`` and completed with its defaults."""
    node = _plain(config) if OmegaConf.is_config(config) else dict(config)
    data = node.get("data")
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    data_cls = _data_schema(schema, dataset, where, True)
    _check_keys(where, node, schema, data_cls, schema)
    return _validate([(where, node)], schema, data_cls, where, True)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *,
                schema: type = RunConfig) -> DictConfig:
    """Load a config file (with its bases), apply ``key=value`` overrides and check it against ``schema``
    (:class:`RunConfig`, or :class:`ClipRunConfig` for ``train-clip``).

    Returns an OmegaConf structured config (unknown keys cannot be added to it later) with
    ``config_path`` set to the file.
    """
    return _load(resolve_config_path(path), overrides, schema, complete=True)


def load_model_section(path: str | Path) -> dict[str, Any]:
    """The ``model:`` section of a run config file (bases merged, checked, interpolations resolved);
    the file may leave the run's other required keys unset."""
    cfg = _load(resolve_config_path(path), (), RunConfig, complete=False, resolve="model")
    return to_container(cfg.model)


def _load(p: Path, overrides: Iterable[str], schema: type, complete: bool, resolve: str = "") -> DictConfig:
    files = [(str(f), _plain(cfg)) for f, cfg in read_layers(p)]
    merged = OmegaConf.merge(*[OmegaConf.create(node) for _, node in files])
    parsed = [_parse_override(o) for o in overrides]
    dataset = OmegaConf.select(merged, "data.dataset", default=None)
    for ov in parsed:
        dataset = OmegaConf.select(ov.value, "data.dataset", default=dataset)
    data_cls = _data_schema(schema, dataset, str(p), complete)
    for f, node in files:
        _check_keys(f, node, schema, data_cls, schema)
    layers: list[tuple[str, Mapping]] = list(files)
    for ov in parsed:
        _check_override(ov, merged, schema, data_cls, _display(p))
        _check_keys(f"override {ov.text!r}", _plain(ov.value), schema, data_cls, schema)
        merged = OmegaConf.merge(merged, ov.value)
        layers.append((f"override {ov.text!r}", _plain(ov.value)))
    cfg = _validate(layers, schema, data_cls, str(p), complete, resolve)
    cfg.config_path = str(p)
    return cfg
