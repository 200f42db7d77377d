"""pyproject.toml lists every package by hand (configs/ ships as layout2img.configs, which
packages.find cannot discover): a new subpackage or config folder must be listed, or wheels lack it."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_subpackage_is_listed():
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "layout2img").rglob("__init__.py")}
    listed = set(_setuptools()["packages"])
    assert found | {"layout2img.configs"} == listed, (
        f"pyproject.toml [tool.setuptools] packages: add {sorted(found - listed)}, drop {sorted(listed - found - {'layout2img.configs'})}")


def test_every_config_file_ships():
    st = _setuptools()
    assert st["package-dir"]["layout2img.configs"] == "configs"
    globs = st["package-data"]["layout2img.configs"]
    configs = REPO / "configs"
    files = [p.relative_to(configs).as_posix() for p in configs.rglob("*.yaml")]
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert files and not missed, f"pyproject.toml package-data for layout2img.configs misses {missed}"


def test_bundled_configs_resolve_through_the_package():
    """The installed package (editable here, a wheel in .ci/wheel_smoke.sh) finds them by import."""
    from importlib import resources

    from layout2img.config import CONFIG_DIR, resolve_config_path

    assert CONFIG_DIR == Path(str(resources.files("layout2img.configs")))
    assert resolve_config_path("clip/shapes") == CONFIG_DIR / "clip" / "shapes.yaml"
    assert resolve_config_path(None) == CONFIG_DIR / "shapes_64.yaml"


def test_a_config_path_resolves_from_any_folder_and_a_user_file_wins(tmp_path, monkeypatch):
    from layout2img.config import CONFIG_DIR, resolve_config_path
    from layout2img.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("configs/coco_64.yaml") == CONFIG_DIR / "coco_64.yaml"  # the README's spelling
    assert resolve_config_path("coco_64") == CONFIG_DIR / "coco_64.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "coco_64.yaml").write_text("base: x\n")
    assert resolve_config_path("configs/coco_64.yaml") == Path("configs/coco_64.yaml")
    with pytest.raises(ConfigError, match=r"^nope: config file not found \(bundled configs: clip/shapes, coco_128"):
        resolve_config_path("nope")
