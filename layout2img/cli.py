"""The ``layout2img`` command line.

Every user error is a ``Layout2ImgError``: printed as one line on stderr, exit status 2.
Each subcommand's handler is a small function here that calls the library; the library does
the work, so everything the CLI does is also available from Python.
"""
from __future__ import annotations

import argparse
import sys

from .errors import Layout2ImgError


# -- validate / vocab ------------------------------------------------------------------------
def _cmd_validate(args) -> int:
    from .graph import DEFAULT_MAX_OBJECTS, validate_file
    from .vocab import Vocab

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


def _cmd_vocab(args) -> int:
    from .vocab import Vocab

    vocab = Vocab.by_name(args.name)
    print(f"# {vocab.name}: {vocab.num_objects} objects, {vocab.num_predicates} predicates")
    print("objects:")
    for i, n in enumerate(vocab.object_names):
        print(f"  {i}\t{n}")
    print("predicates:")
    for i, n in enumerate(vocab.predicate_names):
        print(f"  {i}\t{n}")
    if vocab.attribute_names:
        print("attributes:")
        for i, n in enumerate(vocab.attribute_names):
            print(f"  {i}\t{n}")
    return 0


# -- prepare ---------------------------------------------------------------------------------
def _cmd_prepare_shapes(args) -> int:
    from .data.shapes import prepare_shapes

    out = prepare_shapes(
        args.out, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Shapes dataset written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layout2img", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check scene-graph JSON files against a vocabulary")
    v.add_argument("file", help="a JSON file: one graph, a list of graphs, or networkx node-link JSON")
    v.add_argument("--vocab", default="coco-stuff", help="coco-stuff | vg | shapes | PATH to vocab.json")
    v.add_argument("--max-objects", type=int, default=None,
                   help="largest allowed number of objects per graph (default 32)")
    v.add_argument("--strict", action="store_true",
                   help="treat warnings (self-referencing relations, unknown keys) as errors")
    v.set_defaults(func=_cmd_validate)

    vb = sub.add_parser("vocab", help="print a vocabulary's object and predicate names")
    vb.add_argument("name", help="coco-stuff | vg | shapes | PATH to vocab.json")
    vb.set_defaults(func=_cmd_vocab)

    pr = sub.add_parser("prepare", help="prepare a dataset")
    prs = pr.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    ps = prs.add_parser("shapes", help="write the embedded Shapes world in COCO format")
    ps.add_argument("--out", required=True)
    ps.add_argument("--num-train", type=int, default=10000)
    ps.add_argument("--num-val", type=int, default=1000)
    ps.add_argument("--size", type=int, default=64)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    ps.set_defaults(func=_cmd_prepare_shapes)

    # -- generate / edit / serve: each command's module adds its parser here ----------------
    from . import editing as _editing
    from . import generate as _generate  # light modules: torch loads only when a command runs
    from .web import server as _server

    _generate.add_parser(sub)
    _editing.add_parser(sub)
    _server.add_parser(sub)
    # -- text: train-clip ----------------------------------------------------------------------
    tc = sub.add_parser("train-clip", help="train a domain CLIP on a dataset's image-caption pairs")
    tc.add_argument("--config", default=None, help="a CLIP config (default: configs/clip/shapes.yaml)")
    tc.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")

    def _cmd_train_clip(args) -> int:  # torch and open_clip load only when the command runs
        from .training.clip import cmd_train_clip

        return cmd_train_clip(args)

    tc.set_defaults(func=_cmd_train_clip)
    # -- evaluation: evaluate / fid / train-classifier --------------------------------------
    from .metrics.commands import add_parsers as add_evaluation_parsers  # handlers import lazily

    add_evaluation_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
