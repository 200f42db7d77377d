"""Images from scene-graph files: the logic of ``layout2img generate`` (its CLI: :mod:`.commands.generate`).

    layout2img generate scenes.json --checkpoint runs/shapes_64/checkpoints/latest --out samples/

A file holds one graph or a list (sg2im form, plus ``descriptions`` / ``boxes`` / ``caption``).
Graph ``i`` is drawn with seed ``seed + i``, so a graph gives the same pixels whether it is
alone in its file or in a list. Boxes in the file fix the layout (masks are still predicted).
One image per graph and sample: ``OUT`` is a file name when there is a single image, a folder
otherwise (``graph_000_sample_0.png``, ...); ``--save-layout`` adds each graph's layout picture
(boxes, masks and labels) beside it.

``--style`` picks the objects' appearance codes: ``cluster`` (the per-class style clusters
``layout2img fit-styles`` or training fits), ``sample`` (N(0, I)) or ``auto`` (clusters when the
model has them, else sampled); :func:`~layout2img.pipeline.inputs.resolve_style_source`, the one place a
style choice is decided, turns it into the pipeline's ``style_source``.

Also used by the web editor: :func:`load_model`, :func:`object_style_codes` (one code per
object from its own seed, so one object can be restyled alone) and :func:`layout_picture`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DataError, GraphError
from .io import IMAGE_SUFFIXES

#: The largest output side ``--size`` accepts (a safety bound, not a quality promise).
MAX_SIZE = 4096
#: Side of a layout picture when the image itself is smaller (labels stay legible).
LAYOUT_MIN_SIDE = 256


def read_graphs(path: str | Path, vocab, max_objects: int | None = None) -> list | None:
    """A scene-graph file's graphs, its warnings printed to stderr; None when it has errors (each
    printed to stderr as one line), so a CLI command can exit 2 without a traceback.
    ``max_objects``: the largest allowed graph (None: the default limit)."""
    graphs, errors = validated_graphs(path, vocab, max_objects)
    for line in errors:
        print(line, file=sys.stderr)
    return None if errors else graphs


def validated_graphs(path: str | Path, vocab, max_objects: int | None = None) -> tuple[list, list[str]]:
    """``(graphs, errors)`` of a scene-graph file, its warnings printed to stderr (one line each)."""
    from .graph import DEFAULT_MAX_OBJECTS, validate_file

    warnings: list[str] = []
    graphs, errors = validate_file(path, vocab, max_objects=DEFAULT_MAX_OBJECTS if max_objects is None else max_objects,
                                   warnings=warnings)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return graphs, errors


def model_and_graphs(graph_file: str | Path, checkpoint: str | Path, device: str = "auto",
                     max_objects: int | None = None):
    """``(model, graphs or None)`` for a command that draws a scene-graph file: the file must exist
    before a model is loaded for nothing; its graphs are read with the model's vocabulary (None
    when it has errors, each printed as one line: exit 2)."""
    if not Path(graph_file).exists():
        raise DataError(f"{graph_file}: file not found")
    model = load_model(checkpoint, device)
    return model, read_graphs(graph_file, model.vocab, max_objects)


def load_model(checkpoint: str | Path, device: str = "auto"):
    """A checkpoint folder's model in eval mode on ``device`` (CheckpointError when unusable)."""
    from .devices import resolve_device
    from .pipeline import SceneGraphToImage

    return SceneGraphToImage.from_pretrained(checkpoint, map_location=resolve_device(device))


def object_style_codes(model, objects: Sequence[str], seeds: Sequence[int], style: str = "auto"):
    """(N, style_dim) codes, object ``i``'s drawn from its own ``seeds[i]``, or None (style_dim 0).

    ``style`` as :func:`~layout2img.pipeline.inputs.resolve_style_source`: a code is a random one of the fitted style clusters of
    the object's class (``cluster``) or from N(0, I) (``sample``), as ``generate`` would draw
    it. Changing one seed changes one object only.
    """
    import torch

    if len(objects) != len(seeds):
        raise DataError(f"style seeds: {len(seeds)} for {len(objects)} objects (one per object)")
    if model.style_dim == 0:
        return None
    clusters = model.style_clusters
    from .pipeline.inputs import resolve_style_source

    use_clusters = resolve_style_source(model, style) == "cluster"
    rows = []
    for name, seed in zip(objects, seeds):
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        if use_clusters:
            cls = torch.tensor([model.vocab.object_index(name)])
            rows.append(clusters.sample(cls, rng)[0].float().cpu())
        else:
            rows.append(torch.randn(model.style_dim, generator=rng))
    return torch.stack(rows)


def layout_picture(boxes: Any, weights: Any, labels: Sequence[str], size: int = LAYOUT_MIN_SIDE):
    """A PIL picture of a layout: each object's visible pixels (``weights`` (N, H, W), see
    ``ModelOutput.visible_weights``) filled and its box outlined and labelled."""
    from .visualize import draw_layout

    return draw_layout(None, boxes, labels=list(labels), image_masks=weights, size=max(int(size), LAYOUT_MIN_SIDE),
                       min_side=LAYOUT_MIN_SIDE)


def to_image(tensor, size: int | None = None):
    """(3, H, W) in [-1, 1] -> PIL image, resized (bicubic) to ``size`` x ``size`` when given."""
    from PIL import Image

    from .visualize import to_pil

    image = to_pil(tensor)
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return image


def _save(path: Path, image) -> Path:
    from .visualize import save_image

    return save_image(path, image)  # atomic; a failed write is a WriteError naming path (exit 1)


def output_paths(out: str | Path, num_graphs: int, num_samples: int) -> tuple[list[list[Path]], list[Path]]:
    """Where each image (``[graph][sample]``) and each graph's layout picture go.

    A single image goes to ``out`` itself when it has an image suffix (its layout to
    ``NAME_layout.png``); anything else makes ``out`` a folder.
    """
    out = Path(out)
    total = num_graphs * num_samples
    as_file = out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    if as_file and total > 1:
        raise ConfigError(f"--out {out}: {total} images ({num_graphs} graph(s) x {num_samples} sample(s)) "
                          f"need a folder; give a folder name instead of a file name")
    if out.exists() and not out.is_dir() and not as_file:
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if as_file:
        return [[out]], [out.with_name(f"{out.stem}_layout.png")]
    width = max(3, len(str(num_graphs - 1)))
    images = [[out / f"graph_{i:0{width}d}_sample_{j}.png" for j in range(num_samples)] for i in range(num_graphs)]
    layouts = [out / f"graph_{i:0{width}d}_layout.png" for i in range(num_graphs)]
    return images, layouts


def load_reference(model, spec: str | Path):
    """The :class:`~layout2img.pipeline.appearance.ReferenceStyles` of ``--style-from``: ``IMAGE:GRAPH``
    (a picture and a scene-graph file, one graph whose boxes say where its objects are in it) or
    one JSON file ``{"image": PICTURE, "graph": {...}}`` (PICTURE relative to the file's folder).
    Errors are one line naming the file."""
    from .graph import SceneGraph
    from .io import read_json
    from .pipeline.appearance import ReferenceStyles

    spec = str(spec)
    if spec.lower().endswith(".json") and Path(spec).is_file():
        d = read_json(spec, what="reference file", error=DataError)
        if not isinstance(d, dict) or not isinstance(d.get("image"), str) or not isinstance(d.get("graph"), dict):
            raise DataError(f"{spec}: a reference file is {{\"image\": PICTURE, \"graph\": {{...}}}}")
        image, graph = Path(spec).parent / d["image"], SceneGraph.from_dict(d["graph"], model.vocab, source=spec)
        where = spec
    else:
        image, sep, graph_file = spec.rpartition(":")
        if not sep and spec.lower().endswith(".json"):
            raise DataError(f"{spec}: reference file not found")
        if not sep or not image or not graph_file:
            raise ConfigError(f"--style-from {spec}: expected IMAGE:GRAPH (a picture and its scene-graph file) "
                              f"or a reference JSON file")
        if not Path(graph_file).is_file():
            raise DataError(f"{graph_file}: file not found")
        graphs, errors = validated_graphs(graph_file, model.vocab)
        if errors:  # one line: the first problem (the file's name is in it)
            more = f" (and {len(errors) - 1} more problem(s) in the file)" if len(errors) > 1 else ""
            raise GraphError(f"{errors[0]}{more}")
        if len(graphs) != 1:
            raise DataError(f"{graph_file}: a reference holds one graph, found {len(graphs)}")
        graph, where = graphs[0], graph_file
    if graph.boxes is None:  # named here, where the file is known
        raise GraphError(f"{where}: the reference graph needs a box for every object "
                         f"({graph.num_objects}): where each one is in the picture")
    return ReferenceStyles.from_image(model, image, graph)


def generate_files(model, graphs: Sequence, out: str | Path, *, num_samples: int = 1, seed: int = 0,
                   text: str | None = None, size: int | None = None, save_layout: bool = False,
                   style: str = "auto", progress: bool = True, reference=None,
                   style_map: dict[int, int] | None = None) -> list[Path]:
    """Draw every graph ``num_samples`` times and write PNGs (see the module doc); returns the paths.
    ``style``: the appearance codes (:data:`STYLE_CHOICES`). ``reference`` (a
    :class:`~layout2img.pipeline.appearance.ReferenceStyles`): objects take the codes of the
    reference's objects (``style_map``'s pairs, else by class), the others follow ``style``. The
    model checks the graphs, sample count and style (``generate``'s one entry check); only
    ``size``, this function's own, is checked here."""
    from tqdm.auto import tqdm

    if size is not None and not 8 <= size <= MAX_SIZE:
        raise ConfigError(f"--size {size}: expected a side between 8 and {MAX_SIZE} pixels")
    # every graph's reference codes first: a bad --style-map pair is an error before anything is written
    codes = [None if reference is None else
             [reference.codes_for(g.objects, style_map, where=f"{g.source}: graph {g.index}")] for g in graphs]
    image_paths = layout_paths = None
    written: list[Path] = []
    for i, graph in enumerate(tqdm(graphs, desc="generate", unit="graph", disable=not progress or None)):
        result = model.generate([graph], seed=seed + i, text=text, num_samples=num_samples, return_output=True,
                                style_source=style, style_codes=codes[i])
        if image_paths is None:  # the arguments have passed the model's check
            image_paths, layout_paths = output_paths(out, len(graphs), num_samples)
        for j in range(num_samples):
            written.append(_save(image_paths[i][j], to_image(result.images[j], size)))
        if save_layout:
            n = graph.num_objects  # sample 0's rows; the layout is the same in every sample
            picture = layout_picture(result.boxes[:n].cpu(), result.visible_weights()[:n].cpu(), graph.objects,
                                     size or model.image_size)
            written.append(_save(layout_paths[i], picture))
    return written
