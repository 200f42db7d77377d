import re
import pytest
from omegaconf import OmegaConf

from layout2img import SceneGraphToImage
from layout2img.config import (CONFIG_DIR, ClipRunConfig, RunConfig, load_config, load_model_section,
                               model_section_defaults, model_top_defaults, read_layers, to_container,
                               validate_config)
from layout2img.errors import ConfigError

GAN_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_default_config_loads_with_required_keys():
    cfg = load_config()
    for key in ("out_dir", "max_steps", "seed", "device", "batch_size", "checkpoint_every", "resume"):
        assert key in cfg
    assert cfg.data.dataset == "shapes" and OmegaConf.get_type(cfg) is RunConfig
    assert cfg.config_path == str(CONFIG_DIR / "shapes_64.yaml")
    # keys the file leaves out come from the schema, keys it sets win over it
    assert cfg.train.betas == [0.5, 0.999] and cfg.loss.lambda_l1 == 10.0 and cfg.model.gcn.width == 64
    assert cfg.model.image_size == 64 and cfg.discriminator.object is None


def test_overrides_apply_and_typos_are_named():
    cfg = load_config("shapes_64", ["batch_size=3", "data.image_size=32", "discriminator.object.ndf=8"])
    assert cfg.batch_size == 3 and cfg.model.image_size == 32  # the model follows the data's size
    assert dict(cfg.discriminator.object) == {"ndf": 8, "crop_size": 32}  # a null section filled in
    with pytest.raises(ConfigError, match=r"override 'model.gcn.widht=3': unknown key 'model.gcn.widht' "
                                          r"in shapes_64.yaml; did you mean 'model.gcn.width'\?"):
        load_config(None, ["model.gcn.widht=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'bach_size'.*did you mean 'batch_size'"):
        load_config(None, ["bach_size=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'modle.gcn.width'.*did you mean 'model.gcn.width'"):
        load_config(None, ["modle.gcn.width=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["batch_size"])
    # + adds keys only inside open-ended mappings; the data section is closed
    with pytest.raises(ConfigError, match=r"unknown key 'data.extra_knob' in shapes_64.yaml \(data keys: dataset"):
        load_config(None, ["+data.extra_knob=1"])


def test_type_errors_name_the_key_and_where_it_was_set(tmp_path):
    with pytest.raises(ConfigError, match=r"^override 'batch_size=abc': batch_size: Value 'abc'.*Integer$"):
        load_config(None, ["batch_size=abc"])
    with pytest.raises(ConfigError, match=r"^override 'model.gcn=5': model.gcn: expected a mapping, got 5$"):
        load_config(None, ["model.gcn=5"])
    with pytest.raises(ConfigError, match=r"model.image_size: Interpolation key 'data.image_sise' not found"):
        load_config(None, ["model.image_size=${data.image_sise}"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIG_DIR / 'shapes_64.yaml'}\nmodel: {{generator: {{ngf: wide}}}}\n")
    with pytest.raises(ConfigError, match=rf"^{bad.resolve()}: model.generator.ngf: Value 'wide'"):
        load_config(bad)


def test_misspelt_key_in_a_file_names_the_file_and_suggests(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"base: {CONFIG_DIR / 'coco_128.yaml'}\nout_dir: x\nmodel:\n  layout: {{box_hiden: 8}}\n")
    with pytest.raises(ConfigError, match=rf"^{typo.resolve()}: unknown key 'model.layout.box_hiden'; "
                                          r"did you mean 'model.layout.box_hidden'\?$"):
        load_config(typo)
    # a typo in a base file is reported against that base, not the file that names it
    base = tmp_path / "base.yaml"
    base.write_text("out_dir: x\nmax_steps: 1\nbatch_size: 1\ncheckpoint_every: 1\ndata: {dataset: shapes}\n"
                    "loss: {lamda_kl: 0.1}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nbatch_size: 2\n")
    with pytest.raises(ConfigError, match=rf"^{base.resolve()}: unknown key 'loss.lamda_kl'; "
                                          r"did you mean 'loss.lambda_kl'\?$"):
        load_config(child)
    (tmp_path / "loop.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="already part of this config"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "nobase.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="base file 'nowhere.yaml' not found"):
        load_config(tmp_path / "nobase.yaml")


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_config(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("seed: 1\ndata: {dataset: shapes}\n")
    with pytest.raises(ConfigError, match=r"missing required key\(s\): batch_size, checkpoint_every, max_steps, "
                                          r"out_dir$"):
        load_config(partial)
    no_data = tmp_path / "no_data.yaml"
    no_data.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"data.dataset: missing \(shapes, coco, vg\)"):
        load_config(no_data)
    with pytest.raises(ConfigError, match=r"data.dataset: unknown dataset 'mnist'"):
        load_config(None, ["data.dataset=mnist"])
    with pytest.raises(ConfigError, match=r"missing required key\(s\): data.train"):
        load_config(None, ["data.dataset=coco"])  # a COCO data section needs its files


def test_every_bundled_config_loads_and_validates():
    assert {"shapes_64", "shapes_text_64", "coco_64", "coco_128", "coco_256", "vg_64", "vg_128"} <= set(GAN_CONFIGS)
    for name in GAN_CONFIGS:
        cfg = load_config(name)
        assert OmegaConf.get_type(cfg) is RunConfig and not OmegaConf.missing_keys(cfg)
        assert cfg.out_dir == f"runs/{name}" and cfg.model.image_size == int(re.search(r"_(\d+)", name).group(1))
        assert cfg.data.dataset == name.split("_")[0]
    clip = load_config("clip/shapes", schema=ClipRunConfig)
    assert OmegaConf.get_type(clip) is ClipRunConfig and clip.train.steps == 1000 and clip.model.embed_dim == 128
    assert clip.data.root == "data/shapes" and clip.data.prepare.num_train == 10000
    # the CLIP model is an open mapping: a new key needs +, a typo in a known one is named
    assert load_config("clip/shapes", ["+model.vision_cfg.extra=1"], schema=ClipRunConfig).model.vision_cfg.extra == 1
    with pytest.raises(ConfigError, match=r"unknown key 'model.vision_cfg.widht' in clip/shapes.yaml; "
                                          r"did you mean 'model.vision_cfg.width'"):
        load_config("clip/shapes", ["model.vision_cfg.widht=8"], schema=ClipRunConfig)


def test_base_and_delta_merge():
    """coco_128 = base/coco.yaml (itself on base/sg2im.yaml) + base/coarse_to_fine.yaml + its own keys."""
    names = [p.relative_to(CONFIG_DIR).as_posix() for p, _ in read_layers(CONFIG_DIR / "coco_128.yaml")]
    assert names == ["base/sg2im.yaml", "base/coco.yaml", "base/coarse_to_fine.yaml", "coco_128.yaml"]
    cfg = load_config("coco_128")
    assert cfg.max_steps == 300000 and cfg.log_every == 50  # from sg2im.yaml
    assert cfg.data.train.instances_json == "data/coco/annotations/instances_train2017.json"  # coco.yaml
    assert cfg.model.generator.n_local_enhancers == 1 and cfg.train.global_steps == 100000  # coarse_to_fine
    assert cfg.model.generator.ngf == 32 and cfg.batch_size == 16 and cfg.data.image_size == 128  # its own
    assert cfg.model.generator.conditioning == "spade" and cfg.model.generator.n_blocks == 6  # sg2im / schema
    assert cfg.train.diffaugment == "color,translation,cutout" and cfg.train.fit_styles == 5000  # sg2im.yaml
    assert cfg.data.min_objects == 3 and cfg.data.max_objects == 8  # CocoDataConfig's defaults
    text = load_config("shapes_text_64")  # shapes_64 plus text
    assert (text.model.text_dim, text.model.text_encoder, text.train.text_dropout) == (128, "runs/clip_shapes", 0.3)
    assert text.model.gcn.width == 64 and text.max_steps == load_config("shapes_64").max_steps  # inherited


def test_resolutions_differ_exactly_where_expected():
    def diff(a, b):
        fa, fb = _flat(to_container(load_config(a))), _flat(to_container(load_config(b)))
        assert fa.keys() == fb.keys()
        return {k for k in fa if fa[k] != fb[k]} - {"config_path", "out_dir"}

    assert diff("coco_64", "coco_128") == {
        "batch_size", "data.image_size", "model.image_size", "model.generator.ngf",
        "model.generator.n_local_enhancers", "train.global_steps", "train.fix_global_steps"}
    assert diff("coco_128", "coco_256") == {
        "batch_size", "data.image_size", "model.image_size", "model.generator.ngf", "discriminator.image.num_D",
        "discriminator.object.crop_size"}
    assert diff("vg_64", "vg_128") == diff("coco_64", "coco_128")
    assert diff("shapes_64", "shapes_text_64") == {"model.text_dim", "model.text_encoder", "loss.lambda_clip",
                                                   "train.text_dropout"}


def test_model_defaults_are_the_pipelines():
    sections, top = model_section_defaults(), model_top_defaults()
    assert set(sections) == {"gcn", "layout", "generator", "encoder", "clusters"}
    assert top == {"image_size": 64, "style_dim": 8, "class_embed_dim": 0, "text_dim": 0, "text_encoder": None}
    model = SceneGraphToImage(vocab="shapes")
    assert {name: model.config[name] for name in sections} == sections
    assert {k: model.config.get(k) for k in top} == top
    sections["gcn"]["width"] = 1  # a copy: the schema is unchanged
    assert model_section_defaults()["gcn"]["width"] == 64


def test_the_default_model_is_the_model_train_py_trains():
    """``SceneGraphToImage()`` is the model section of configs/shapes_64.yaml (what ``python train.py``
    trains), the vocabulary expanded as the model stores it."""
    from layout2img import Vocab

    trained = load_model_section(CONFIG_DIR / "shapes_64.yaml")
    assert trained.pop("text_encoder") is None  # a text-free model's config does not hold the key
    trained["vocab"] = Vocab.by_name(trained["vocab"]).to_dict()
    assert SceneGraphToImage().config == trained
    assert trained["generator"]["conditioning"] == "spade" and trained["gcn"]["width"] == 64


def test_the_default_run_is_the_schemas_defaults():
    """configs/shapes_64.yaml sets no model or training key but its schedule: the rest are the schema's defaults."""
    layers = read_layers(CONFIG_DIR / "shapes_64.yaml")
    assert [set(to_container(node)) for _, node in layers] == [
        {"out_dir", "max_steps", "batch_size", "checkpoint_every", "sample_every", "data", "train"}]
    # its one training key is schedule: how many of its steps run at half size
    assert to_container(layers[0][1])["train"] == {"low_res_steps": 800}
    default = to_container(load_config("shapes_64"))
    assert default["data"]["dataset"] == "shapes" and default["train"]["lr_g"] == 4e-4
    assert default["train"]["diffaugment"] == "color,translation,cutout" and default["loss"]["lambda_l1"] == 10.0


def test_model_section_of_a_file():
    section = load_model_section(CONFIG_DIR / "vg_128.yaml")
    assert section["vocab"] == "vg" and section["image_size"] == 128 and section["layout"]["mask_size"] == 16
    assert section["layout"]["use_gt_masks"] is False and section["generator"]["ngf"] == 32


def test_saved_run_config_loads_back(tmp_path):
    cfg = load_config("coco_256", ["batch_size=2"])
    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(cfg))
    again = load_config(saved)
    assert to_container(again) == {**to_container(cfg), "config_path": str(saved)}
    assert validate_config(to_container(cfg)).batch_size == 2



def test_readme_training_commands_load():
    cfg = load_config(CONFIG_DIR / "coco_64.yaml", ["data.root=data/coco2", "out_dir=runs/coco64"])
    assert cfg.data.train.image_dir == "data/coco2/images/train2017"  # the split files follow data.root
    assert cfg.data.val.stuff_json == "data/coco2/annotations/stuff_val2017.json"
    cfg = load_config("vg_128", ["batch_size=32", "train.lr_g=1e-4"])
    assert (cfg.batch_size, cfg.train.lr_g, cfg.data.vocab) == (32, 1e-4, "data/vg/vocab.json")


def test_data_sections_hold_only_dataset_arguments():
    """Each data key the trainer hands to a dataset (all but the run keys) is one of its constructor's."""
    import inspect

    from layout2img.config import DATASETS
    from layout2img.data.coco import CocoSceneGraphDataset
    from layout2img.data.shapes import ShapesDataset
    from layout2img.data.vg import VisualGenomeDataset

    def params(*classes):
        return {p for c in classes for p in inspect.signature(c.__init__).parameters} - {"self", "kwargs"}

    accepts = {"shapes": params(ShapesDataset, CocoSceneGraphDataset), "coco": params(CocoSceneGraphDataset),
               "vg": params(VisualGenomeDataset)}
    run_keys = {"dataset", "root", "num_workers", "hflip", "train", "val", "prepare"}
    for name in GAN_CONFIGS:
        data = to_container(load_config(name).data)
        given = (set(data) - run_keys) | set(data["train"] or {}) | set(data["val"] or {})
        assert given <= accepts[data["dataset"]], (name, given - accepts[data["dataset"]])
    assert set(DATASETS) == set(accepts)


def test_every_dataset_kind_names_its_builder():
    """The one registry: each kind's schema for the loader and builder for ``build_dataset``."""
    import importlib

    from layout2img.config import DATASETS, DataConfig

    for name, kind in DATASETS.items():
        module, _, function = kind.builder.partition(":")
        assert issubclass(kind.schema, DataConfig) and callable(getattr(importlib.import_module(module), function))


def test_long_recipe_keeps_the_learning_rate_and_model_it_was_measured_with():
    """The default run moved to lr 4e-4, a 24-wide generator and the layout sampler after the long
    recipe was measured at 2e-4 with the 32-wide regression model (BENCHMARKS); the rest is shared."""
    default, long = load_config("shapes_64"), load_config("shapes_64_long")
    assert (default.train.lr_g, default.train.lr_d) == (4e-4, 4e-4)
    assert (long.train.lr_g, long.train.lr_d, long.max_steps) == (2e-4, 2e-4, 8000)
    assert (default.model.generator.ngf, default.model.layout.predictor) == (24, "sampler")
    assert (long.model.generator.ngf, long.model.layout.predictor) == (32, "regression")
    long.model.generator.ngf, long.model.layout.predictor = 24, "sampler"
    assert long.model == default.model and long.train.diffaugment == default.train.diffaugment
