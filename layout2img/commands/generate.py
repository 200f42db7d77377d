"""``layout2img generate``: arguments, the images of a scene-graph file (:mod:`layout2img.generate`), exit status."""
from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from ..generate import generate_files, load_reference, model_and_graphs
from ..pipeline.appearance import parse_object_map
from .options import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    g = sub.add_parser("generate", help="draw images for the scene graphs in a JSON file",
                       description="Draw images for the scene graphs in a JSON file (one graph or a list, "
                                   "sg2im form). Boxes in the file fix the layout; graph i uses seed+i.")
    g.add_argument("graph", help="a JSON file: one scene graph or a list (sg2im form, optional boxes)")
    add_model_args(g, checkpoint=True, device=True, style=True)
    g.add_argument("--out", required=True, help="an image file for a single image, else a folder")
    g.add_argument("--num-samples", type=int, default=1, help="images per graph (default 1)")
    g.add_argument("--seed", type=int, default=0, help="graph i uses seed+i (default 0)")
    g.add_argument("--text", default=None, metavar="CAPTION",
                   help="a caption for every graph (needs a model with a text encoder)")
    g.add_argument("--size", type=int, default=None, metavar="PX",
                   help="resize the images to PX x PX (default: the model's size)")
    g.add_argument("--style-from", default=None, metavar="IMAGE:GRAPH",
                   help="take the objects' appearance from a picture: IMAGE:GRAPH (the picture and a scene-graph "
                        "file whose boxes say where its objects are) or a JSON file {\"image\": ..., \"graph\": ...}; "
                        "each object takes the code of a reference object of its class, others follow --style")
    g.add_argument("--style-map", default=None, metavar="I=J,...",
                   help="with --style-from: object I of each graph takes reference object J's appearance")
    g.add_argument("--save-layout", action="store_true", help="also write each graph's layout picture")
    g.add_argument("--max-objects", type=int, default=None, help="largest allowed graph (default 32)")
    g.set_defaults(func=run)
    return g


def run(args) -> int:
    # the model checks the arguments once (SceneGraphToImage.generate); here only what the CLI adds
    if args.style_map is not None and args.style_from is None:
        raise ConfigError("--style-map needs --style-from (the picture whose objects it maps)")
    style_map = parse_object_map(args.style_map) if args.style_map is not None else None
    model, graphs = model_and_graphs(args.graph, args.checkpoint, args.device, args.max_objects)
    if graphs is None:
        return 2
    reference = load_reference(model, args.style_from) if args.style_from is not None else None
    if model.text_encoder is None:
        for g in graphs:
            if g.caption is not None or any(t is not None for t in g.descriptions):
                print(f"warning: {g.source}: graph {g.index}: caption/descriptions ignored: "
                      f"this model has no text encoder", file=sys.stderr)
    written = generate_files(model, graphs, args.out, num_samples=args.num_samples, seed=args.seed,
                             text=args.text, size=args.size, save_layout=args.save_layout, style=args.style,
                             reference=reference, style_map=style_map)
    images = len(graphs) * args.num_samples
    layouts = f" and {len(written) - images} layout picture(s)" if args.save_layout else ""
    print(f"wrote {images} image(s){layouts} to {args.out}")
    return 0
