"""Text-guided editing: change one object (or a box, or the whole picture) to match a text.

    layout2img edit --checkpoint runs/shapes_64/checkpoints/latest --graph scene.json --object 0 \\
        --text "a green circle" --out edited.png --seed 3 --clip runs/clip_shapes

The edit starts from exactly the image ``layout2img generate scene.json --seed 3`` makes: the
style codes ``generate`` drew are taken from its output and fed back as fixed codes, so step 0
reproduces it bit for bit. Then the chosen object's style code (the model's only noise input)
is optimised with Adam - with ``modulation`` also a per-channel scale and shift of the
generator's features at a named point inside the region (and on text models the caption
embedding FiLM reads), through the model's rendering hook ``SceneGraphToImage.render`` - to
raise the CLIP similarity between the region and the text, while an L1 term keeps the
generator's output outside the region where it was. The result is the masked composite
``mask * edited + (1 - mask) * original``, the mask being the object's soft layout mask (or the
box) grown by ``grow`` pixels and feathered, so pixels outside it are the original ones exactly.

From Python::

    from layout2img.editing import edit_image
    result = edit_image(model, graph, seed=3, target=0, text="a green circle", clip="runs/clip_shapes",
                        callback=lambda info: print(info["restart"], info["step"], info["clip"]))
    result.image      # (3, H, W) in [-1, 1]; result.original, result.mask, result.history
    result.improved   # False: nothing scored better than the original

Modules: ``settings`` (the knobs and their defaults), ``region`` (what may change), ``guidance`` (the CLIP signal), ``search`` (the optimised
state, its rendering and scoring, restarts and selection), ``edit`` (:func:`edit_image`);
the ``layout2img edit`` command is :mod:`layout2img.commands.edit`. Importing this package
does not load torch; a name below loads its module on first use.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import EditCancelled
from .settings import MODULATION_SITES, EditSettings

__all__ = ["EditCancelled", "EditRegion", "EditResult", "EditSettings", "MODULATION_SITES", "composite_mask",
           "edit_image", "parse_box"]

_LAZY = {"EditResult": "edit", "edit_image": "edit", "EditRegion": "region", "composite_mask": "region",
         "parse_box": "region"}


def __getattr__(name: str):  # torch loads on first use, so `layout2img --help` stays fast
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
