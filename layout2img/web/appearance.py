"""POST /api/appearance: the style codes of a user's picture, for the editor's "Appearance from a
picture" panel (no HTTP here).

A request carries the picture (a data URL: the page sends a PNG scaled to the model's image size,
so the body stays small), the reference graph (what the picture shows: object classes and one
box per object, in [0, 1] of the picture), the scene's object classes (``targets``) and
optionally ``mapping`` {target index: reference index}. The appearance encoder gives every
reference object its code (:class:`~layout2img.pipeline.appearance.ReferenceStyles`, on a model
turn as a generate request takes one), and ReferenceStyles' rule hands them to the targets: a
mapped target takes that reference object's code, the others the code of a reference object of
their class (the k-th of a class the k-th, cycling), and a target whose class the picture lacks
gets null (it keeps its seed's code). The page sets those codes as the objects' explicit codes.
"""
from __future__ import annotations

import base64
import binascii
import io
import time
import warnings

from .models import AppearanceRequest
from .protocol import RequestError

#: The body limit of /api/appearance (the others keep ``MAX_BODY``): a picture at the model's size
#: (the page scales it down first) is a few KiB to a few hundred KiB as a PNG data URL.
MAX_IMAGE_BODY = 1024 * 1024
#: The largest picture side decoded (a larger one is refused before its pixels are read).
MAX_IMAGE_SIDE = 2048
#: The formats a picture may come in (Pillow opens only these).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def decode_picture(url: str):
    """The RGB PIL image of a ``data:image/...;base64,`` URL (RequestError naming 'image' otherwise);
    transparent parts are laid over white."""
    from PIL import Image

    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(400, "'image' must be a picture as a base64 data URL (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "'image': the data URL's base64 data is malformed") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: the side limit below decides
            picture = Image.open(io.BytesIO(raw), formats=FORMATS)
            width, height = picture.size
    except Exception:  # whatever Pillow raises for bytes that are no picture it reads
        raise RequestError(400, f"'image': not a picture ({', '.join(FORMATS)} data expected)") from None
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise RequestError(413, f"'image' is {width}x{height} pixels, more than {MAX_IMAGE_SIDE} on a side "
                                "(scale it down to the model's image size first)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            picture.load()
            if "A" in picture.getbands() or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                picture = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            return picture.convert("RGB")
    except Exception:
        raise RequestError(400, f"'image': the {picture.format or 'picture'} data is damaged or cut short") from None


def appearance(service, request: AppearanceRequest) -> dict:
    """The answer to ``POST /api/appearance`` (see the module's docstring) for ``service``
    (a :class:`~.service.ModelService`)."""
    from ..pipeline.appearance import ReferenceStyles
    from ..vocab import IMAGE_OBJECT

    model = service.model
    if getattr(model, "encoder", None) is None:
        raise RequestError(409, appearance_reason(model))
    reference = request.reference
    n = len(reference.objects)
    if len(reference.boxes) != n:
        raise RequestError(400, f"'reference.boxes' must hold one box per reference object ({n}), "
                                f"got {len(reference.boxes)}")
    for field, names in (("reference.objects", reference.objects), ("targets", request.targets)):
        if len(names) > service.max_objects:
            raise RequestError(400, f"'{field}' holds {len(names)} objects, more than this server's limit of "
                                    f"{service.max_objects}")
    known = set(model.vocab.object_names) - {IMAGE_OBJECT}
    lines = [f"'{field}[{i}]': unknown object {name!r} (not in the {model.vocab.name} vocabulary)"
             for field, names in (("reference.objects", reference.objects), ("targets", request.targets))
             for i, name in enumerate(names) if name not in known]
    if lines:
        raise RequestError(400, lines[0], lines)
    for target, ref in (request.mapping or {}).items():
        if target >= len(request.targets):
            raise RequestError(400, f"'mapping': target object {target} does not exist "
                                    f"({len(request.targets)} targets)")
        if ref >= n:
            raise RequestError(400, f"'mapping': target {target}: reference object {ref} does not exist "
                                    f"({n} reference objects)")
    picture = decode_picture(request.image)
    graph = {"objects": list(reference.objects), "relationships": [], "boxes": [list(b) for b in reference.boxes]}
    with service.model_turn():
        started = time.perf_counter()
        styles = ReferenceStyles.from_image(model, picture, graph)
        seconds = time.perf_counter() - started
    codes = styles.codes_for(list(request.targets), request.mapping, where="mapping")
    return {
        "codes": [codes[i].tolist() if i in codes else None for i in range(len(request.targets))],
        "reference_codes": styles.codes.tolist(),
        "ms": round(seconds * 1000, 1),
    }


def appearance_reason(model) -> str | None:
    """Why a model cannot take appearance from a picture, or None when it can."""
    if getattr(model, "encoder", None) is None:
        return (f"this model has no appearance encoder (style_dim {model.style_dim}): it cannot take "
                "appearance from a picture")
    return None
