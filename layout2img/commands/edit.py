"""``layout2img edit``: arguments, one text-guided edit (:mod:`layout2img.editing`), the written image and the exit status."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..editing import MODULATION_SITES, EditSettings
from ..errors import ConfigError, DataError
from ..io import IMAGE_SUFFIXES
from .options import add_model_args

EXIT_EDITED = 0
EXIT_NOTHING_BETTER = 3  # 2 is every bad input (cli.main)

EXIT_STATUS_HELP = (
    "exit status: 0 edited (the composite written to --out); 2 bad input (one line on stderr); "
    f"{EXIT_NOTHING_BETTER} nothing better found: no optimised state scored better than the original, so "
    "--out is not written (an existing file there is left as it is) and one line on stderr says so; "
    "--save-original is still written.")


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("edit", help="edit one object (or a box, or the whole image) of a generated image with text",
                       description="Start from the image `layout2img generate GRAPH --seed S` makes and change "
                                   "one object, a box or the whole image to match a text, keeping the rest.",
                       epilog=EXIT_STATUS_HELP)
    add_model_args(e, checkpoint=True, device=True)
    e.add_argument("--graph", required=True, help="a scene-graph JSON file (as for generate)")
    e.add_argument("--graph-index", type=int, default=0,
                   help="which graph of a list (default 0); it is drawn with seed + index, as generate does")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--object", type=int, default=None, metavar="I", help="edit object I of the graph")
    where.add_argument("--box", default=None, metavar="x0,y0,x1,y1", help="edit a box (normalised coordinates)")
    e.add_argument("--text", required=True, help='what the region should show, e.g. "a green circle" '
                                                 "(without --object/--box: a caption for the whole image)")
    e.add_argument("--out", required=True,
                   help=f"the edited image (.png or .jpg); not written when nothing better is found "
                        f"(exit status {EXIT_NOTHING_BETTER})")
    e.add_argument("--seed", type=int, default=0, help="the seed given to generate (default 0)")
    d = EditSettings()
    e.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps per run (default {d.steps})")
    e.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate on the style code (default {d.lr})")
    e.add_argument("--strength", type=float, default=d.strength, help=f"weight of the CLIP term (default {d.strength:g})")
    e.add_argument("--preserve-weight", type=float, default=d.preserve_weight,
                   help=f"weight of the L1 term that keeps the outside unchanged (default {d.preserve_weight:g})")
    e.add_argument("--modulation", default=d.modulation, action=argparse.BooleanOptionalAction,
                   help="also optimise the generator's modulation: a per-channel scale and shift inside the "
                        "region (see --modulation-at; on text models also the caption embedding that drives FiLM)")
    e.add_argument("--modulation-at", default=d.modulation_at, choices=MODULATION_SITES,
                   help="where --modulation acts: rgb (the RGB head before the tanh: a colour transform, "
                        "default), output (the last features: colour and texture), decoder (after the "
                        "residual blocks)")
    e.add_argument("--restarts", type=int, default=d.restarts,
                   help="optimisation runs (the first from the original, the others from random starts "
                        f"near it); the best is kept (default {d.restarts})")
    e.add_argument("--patience", type=int, default=d.patience, metavar="N",
                   help=f"end a run after N checks in a row without a better result (default {d.patience}; 0: never)")
    e.add_argument("--screen", type=int, default=d.screen, metavar="N",
                   help=f"score N random starts with a forward pass; later runs start from the best (default {d.screen})")
    e.add_argument("--views", type=int, default=d.augment, metavar="N",
                   help=f"jittered views of the region CLIP scores each step (default {d.augment})")
    e.add_argument("--cluster-starts", default=d.cluster_starts, action=argparse.BooleanOptionalAction,
                   help="score the class's fitted style clusters as starts beside the original (default on)")
    e.add_argument("--auto-negatives", default=d.auto_negatives, action=argparse.BooleanOptionalAction,
                   help="without --negative: the text with each other colour is a negative (default on)")
    e.add_argument("--negative", action="append", default=[], metavar="TEXT",
                   help='a text the region should not match, e.g. "a red circle" (repeatable)')
    e.add_argument("--clip", default=None, metavar="SPEC",
                   help="the CLIP that guides the edit (default: the model's text encoder), e.g. runs/clip_shapes")
    e.add_argument("--save-original", default=None, metavar="PATH", help="also write the unedited image")
    e.set_defaults(func=run)
    return e


def run(args) -> int:
    from ..editing import edit_image, parse_box
    from ..generate import load_model, read_graphs, to_image
    from ..visualize import save_image

    for name, path in (("--out", args.out), ("--save-original", args.save_original)):
        if path is not None and Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{name} {path}: expected an image file name (.png or .jpg)")
    if args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.restarts < 1:
        raise ConfigError(f"--restarts must be >= 1, got {args.restarts}")
    if args.views < 1:
        raise ConfigError(f"--views must be >= 1, got {args.views}")
    box = parse_box(args.box) if args.box is not None else None
    if not Path(args.graph).exists():
        raise DataError(f"{args.graph}: file not found")
    model = load_model(args.checkpoint, args.device)
    graphs = read_graphs(args.graph, model.vocab)
    if graphs is None:
        return 2
    if not 0 <= args.graph_index < len(graphs):
        raise DataError(f"--graph-index {args.graph_index}: {args.graph} has {len(graphs)} graph(s)")
    graph = graphs[args.graph_index]
    if args.object is not None and not 0 <= args.object < graph.num_objects:
        raise DataError(f"--object {args.object}: graph {args.graph_index} of {args.graph} has "
                        f"{graph.num_objects} objects (0-{graph.num_objects - 1})")
    target = args.object if args.object is not None else box
    result = edit_image(model, graph, text=args.text, seed=args.seed + args.graph_index, target=target,
                        steps=args.steps, lr=args.lr, strength=args.strength, preserve_weight=args.preserve_weight,
                        modulation=args.modulation, modulation_at=args.modulation_at, restarts=args.restarts,
                        patience=args.patience, screen=args.screen, augment=args.views, negatives=args.negative,
                        cluster_starts=args.cluster_starts, auto_negatives=args.auto_negatives,
                        clip=args.clip, progress=True)
    written = [(args.out, result.image)] if result.improved else []
    if args.save_original:
        written.append((args.save_original, result.original))
    for path, image in written:
        try:
            save_image(path, to_image(image.cpu()))
        except OSError as e:
            raise DataError(f"{path}: cannot write ({e.strerror or e})") from None
    what = f"object {args.object} ({graph.objects[args.object]})" if args.object is not None else \
        (f"box {args.box}" if box is not None else "the whole image")
    similarity = f"CLIP similarity {result.clip_before:.3f} -> {result.clip_after:.3f}"
    if not result.improved:
        hint = "more --steps or --restarts, a larger --lr" + ("" if args.modulation else ", or --modulation")
        print(f"edit: nothing better found for {what} ({similarity}); did not write {args.out}; try {hint}",
              file=sys.stderr)
        return EXIT_NOTHING_BETTER
    print(f"edited {what}: {similarity}; wrote {args.out}")
    return EXIT_EDITED
