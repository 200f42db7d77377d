"""The pipeline: scene graphs (and text) in, images out, around the tensor modules of ``models/``.

:class:`SceneGraphToImage` reads graphs, encodes and grounds text, builds the layout, renders it
(:meth:`SceneGraphToImage.render`, the hook editing uses), generates, and saves / loads itself.
"""
from .model_config import SECTION_DEFAULTS, TOP_DEFAULTS
from .outputs import ModelOutput, TextInputs
from .checkpoint import TEXT_ENCODER_FOLDER
from .scene_to_image import SceneGraphToImage
from .text import (TRAIN_CLIP_HINT, SharedTextEncoder, caption_phrase, is_path_spec, load_text_encoder,
                   resolve_text_encoder_spec)

__all__ = ["SECTION_DEFAULTS", "TOP_DEFAULTS", "TEXT_ENCODER_FOLDER", "TRAIN_CLIP_HINT", "ModelOutput",
           "SceneGraphToImage", "SharedTextEncoder", "TextInputs", "caption_phrase", "is_path_spec",
           "load_text_encoder", "resolve_text_encoder_spec"]
