import pytest

from layout2img.config import CONFIG_DIR, load_config
from layout2img.errors import ConfigError


def test_default_config_loads_with_required_keys():
    cfg = load_config()
    for key in ("out_dir", "max_steps", "seed", "device", "batch_size", "checkpoint_every", "resume"):
        assert key in cfg
    assert cfg.data.dataset == "shapes"


def test_overrides_apply_and_typos_are_named():
    cfg = load_config("shapes_64", ["batch_size=3", "model.image_size=64"])
    assert cfg.batch_size == 3
    with pytest.raises(ConfigError, match=r"unknown key 'bach_size'.*did you mean 'batch_size'"):
        load_config(None, ["bach_size=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["batch_size"])
    cfg = load_config(None, ["+data.extra_knob=1"])
    assert cfg.data.extra_knob == 1


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_config(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="missing top-level key"):
        load_config(partial)


def test_every_bundled_config_loads():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"shapes_64", "coco_64", "coco_128", "coco_256", "vg_64", "vg_128"} <= set(names)
    for n in names:
        load_config(n)
