"""Run configuration: a structured schema with every default, YAML files that state what differs.

``load_config("configs/coco_128.yaml", ["batch_size=8", "model.generator.ngf=32"])`` reads the
file and the ``base:`` files it builds on, applies ``key=value`` overrides (OmegaConf dot-list
syntax) and checks the result against :class:`RunConfig`: a key the schema does not declare is
an error that names it and the closest known key, so a typo never silently does nothing.
"""
from .choices import STYLE_CHOICES

# The loader and the schemas (omegaconf, yaml) load on first use: building the CLI parser needs
# only the choices, and `layout2img --help` stays fast.
_LAZY = {
    **dict.fromkeys(("CONFIG_DIR", "DEFAULT_CONFIG", "load_config", "load_model_section", "read_layers",
                     "resolve_config_path", "to_container", "validate_config"), ".loader"),
    **dict.fromkeys(("ClipDataConfig", "ClipRunConfig", "ClipTrainConfig"), ".clip_schema"),
    **dict.fromkeys(("DATASETS", "CocoDataConfig", "DataConfig", "ModelConfig", "RunConfig", "ShapesDataConfig",
                     "VgDataConfig", "model_section_defaults", "model_top_defaults"), ".schema"),
    **dict.fromkeys(("DiscriminatorConfig", "LossConfig", "TrainConfig"), ".training_schema"),
}

__all__ = ["STYLE_CHOICES", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
