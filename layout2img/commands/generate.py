"""``layout2img generate``: arguments, the images of a scene-graph file (:mod:`layout2img.generate`), exit status."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, DataError
from ..generate import MAX_SIZE, STYLE_CHOICES, generate_files, load_model, read_graphs, resolve_style


def add_parser(sub) -> argparse.ArgumentParser:
    g = sub.add_parser("generate", help="draw images for the scene graphs in a JSON file",
                       description="Draw images for the scene graphs in a JSON file (one graph or a list, "
                                   "sg2im form). Boxes in the file fix the layout; graph i uses seed+i.")
    g.add_argument("graph", help="a JSON file: one scene graph or a list (sg2im form, optional boxes)")
    g.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. runs/NAME/checkpoints/latest)")
    g.add_argument("--out", required=True, help="an image file for a single image, else a folder")
    g.add_argument("--num-samples", type=int, default=1, help="images per graph (default 1)")
    g.add_argument("--seed", type=int, default=0, help="graph i uses seed+i (default 0)")
    g.add_argument("--text", default=None, metavar="CAPTION",
                   help="a caption for every graph (needs a model with a text encoder)")
    g.add_argument("--size", type=int, default=None, metavar="PX",
                   help="resize the images to PX x PX (default: the model's size)")
    g.add_argument("--save-layout", action="store_true", help="also write each graph's layout picture")
    g.add_argument("--style", default="auto", choices=STYLE_CHOICES,
                   help="appearance codes: cluster = the fitted per-class style clusters (`layout2img "
                        "fit-styles`), sample = N(0, I), auto = clusters when fitted, else sample (default)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--max-objects", type=int, default=None, help="largest allowed graph (default 32)")
    g.set_defaults(func=run)
    return g


def run(args) -> int:
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {args.num_samples}")
    if args.size is not None and not 8 <= args.size <= MAX_SIZE:
        raise ConfigError(f"--size {args.size}: expected a side between 8 and {MAX_SIZE} pixels")
    if not Path(args.graph).exists():  # before loading a model for nothing
        raise DataError(f"{args.graph}: file not found")
    model = load_model(args.checkpoint, args.device)
    resolve_style(model, args.style, args.checkpoint)  # before reading and drawing anything
    graphs = read_graphs(args.graph, model.vocab, args.max_objects)
    if graphs is None:
        return 2
    if model.text_encoder is None:
        for g in graphs:
            if g.caption is not None or any(t is not None for t in g.descriptions):
                print(f"warning: {g.source}: graph {g.index}: caption/descriptions ignored: "
                      f"this model has no text encoder", file=sys.stderr)
    written = generate_files(model, graphs, args.out, num_samples=args.num_samples, seed=args.seed,
                             text=args.text, size=args.size, save_layout=args.save_layout, style=args.style)
    images = len(graphs) * args.num_samples
    layouts = f" and {len(written) - images} layout picture(s)" if args.save_layout else ""
    print(f"wrote {images} image(s){layouts} to {args.out}")
    return 0
