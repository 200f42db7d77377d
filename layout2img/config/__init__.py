"""Run configuration: a structured schema with every default, YAML files that state what differs.

``load_config("configs/coco_128.yaml", ["batch_size=8", "model.generator.ngf=32"])`` reads the
file and the ``base:`` files it builds on, applies ``key=value`` overrides (OmegaConf dot-list
syntax) and checks the result against :class:`RunConfig`: a key the schema does not declare is
an error that names it and the closest known key, so a typo never silently does nothing.
"""
from .loader import (CONFIG_DIR, DEFAULT_CONFIG, load_config, load_model_section, read_layers, resolve_config_path,
                     to_container, validate_config)
from .clip_schema import ClipDataConfig, ClipRunConfig, ClipTrainConfig
from .schema import (DATASET_SCHEMAS, CocoDataConfig, DataConfig, DiscriminatorConfig, LossConfig, ModelConfig,
                     RunConfig, ShapesDataConfig, TrainConfig, VgDataConfig, model_section_defaults,
                     model_top_defaults)

__all__ = [
    "CONFIG_DIR", "DEFAULT_CONFIG", "DATASET_SCHEMAS", "ClipDataConfig", "ClipRunConfig", "ClipTrainConfig",
    "CocoDataConfig", "DataConfig", "DiscriminatorConfig", "LossConfig", "ModelConfig", "RunConfig",
    "ShapesDataConfig", "TrainConfig", "VgDataConfig", "load_config", "load_model_section", "model_section_defaults",
    "model_top_defaults", "read_layers", "resolve_config_path", "to_container", "validate_config",
]
