"""``layout2img validate``: check scene-graph JSON files against a vocabulary."""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    v = sub.add_parser("validate", help="check scene-graph JSON files against a vocabulary")
    v.add_argument("file", help="a JSON file: one graph, a list of graphs, or networkx node-link JSON")
    v.add_argument("--vocab", default="coco-stuff", help="coco-stuff | vg | shapes | PATH to vocab.json")
    v.add_argument("--max-objects", type=int, default=None,
                   help="largest allowed number of objects per graph (default 32)")
    v.add_argument("--strict", action="store_true",
                   help="treat warnings (self-referencing relations, unknown keys) as errors")
    v.set_defaults(func=run)
    return v


def run(args) -> int:
    from ..graph import DEFAULT_MAX_OBJECTS, validate_file
    from ..vocab import Vocab

    vocab = Vocab.by_name(args.vocab)
    max_objects = DEFAULT_MAX_OBJECTS if args.max_objects is None else args.max_objects
    warnings: list[str] = []
    graphs, errors = validate_file(args.file, vocab, max_objects=max_objects, strict=args.strict,
                                   warnings=warnings)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        return 2
    for i, g in enumerate(graphs):
        print(f"{args.file}: graph {i}: {g.summary()}")
    return 0
