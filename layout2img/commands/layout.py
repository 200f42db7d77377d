"""``layout2img layout``: a scene-graph file with the model's boxes written in (sg2im JSON), printed or saved.

    layout2img layout scene.json --checkpoint runs/shapes_64/checkpoints/latest --seed 3 --out scene_boxes.json
    layout2img generate scene_boxes.json --checkpoint runs/shapes_64/checkpoints/latest --seed 3 --out a.png

Graph ``i`` of the file takes layout seed ``seed + i``, as ``generate`` takes image seeds, so
generating the written file with the same ``--seed`` reproduces the images ``generate`` draws
from the original file. Boxes already in a graph stay as they are.
"""
from __future__ import annotations

import argparse
import json
import sys

from .options import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("layout", help="write the model's boxes into scene graphs (sg2im JSON)",
                       description="Predict each graph's layout and print the graph JSON with 'boxes' filled in "
                                   "(graph i uses layout seed seed+i, as `generate` uses image seeds).")
    p.add_argument("graph", help="a JSON file: one scene graph or a list (sg2im or node-link form)")
    add_model_args(p, checkpoint=True, device=True)
    p.add_argument("--seed", type=int, default=0, help="graph i uses layout seed seed+i (default 0)")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="repair broken relations and piled-up things of the predicted boxes (default: as "
                        "`generate` does: on when the model's layout.refine_steps > 0)")
    p.add_argument("--text", default=None, metavar="CAPTION",
                   help="a caption for every graph, as given to `generate` (needs a model with a text encoder)")
    p.add_argument("--out", default=None, help="write the JSON here (default: print it)")
    p.add_argument("--max-objects", type=int, default=None, help="largest allowed graph (default 32)")
    p.set_defaults(func=run)
    return p


def graphs_with_layouts(model, graphs, seed: int = 0, refine: bool | None = None, text: str | None = None) -> list:
    """Copies of ``graphs`` with every box set: graph i's layout from layout seed ``seed + i``."""
    filled = []
    for i, graph in enumerate(graphs):
        layout = model.predict_layout([graph], seed=seed + i, refine=refine, text=text)[0]
        graph = graph.copy()
        for k, box in enumerate(layout["boxes"].tolist()):
            graph.set_box(k, box)
        filled.append(graph)
    return filled


def run(args) -> int:
    from ..generate import model_and_graphs
    from ..graph import write_graphs
    from ..io import read_json

    model, graphs = model_and_graphs(args.graph, args.checkpoint, args.device, args.max_objects)
    if graphs is None:
        return 2
    filled = graphs_with_layouts(model, graphs, args.seed, args.refine, args.text)
    as_list = isinstance(read_json(args.graph), list)
    if args.out is None:
        data = [g.to_dict() for g in filled] if as_list else filled[0].to_dict()
        print(json.dumps(data, indent=2))
    elif as_list:
        write_graphs(args.out, filled)
    else:
        filled[0].write(args.out)
    if args.out is not None:
        print(f"wrote {len(filled)} graph(s) with boxes to {args.out}", file=sys.stderr)
    return 0
