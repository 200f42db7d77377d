"""Caption retrieval of a CLIP on the Shapes validation split (the domain CLIP's acceptance number).

For each validation image, its full caption (the first of its three) is ranked against
``--candidates - 1`` captions of other images (drawn with a fixed seed; images with the very
same caption are never each other's negatives); the script reports top-1 and top-5 accuracy.

    python benchmarks/clip_retrieval.py                                  # runs/clip_shapes on data/shapes
    python benchmarks/clip_retrieval.py --clip ViT-B-32/openai           # any TextEncoder.load spec
    python benchmarks/clip_retrieval.py --train --config configs/clip/shapes.yaml     # train first, time it, then measure

Checks first that the machine is quiet (``benchmarks/machine.py``; ``--allow-busy`` to override: the
training time is a figure). Prints one JSON object (numbers, protocol, machine; ``--out FILE``
writes it too), then one markdown row per figure for docs/BENCHMARKS.md. A seconds-long run: a
tiny CLIP folder, ``--data`` a small Shapes folder and ``--candidates 4``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from layout2img.errors import Layout2ImgError  # noqa: E402
from layout2img.io import atomic_write_text  # noqa: E402

from machine import add_guard_args, guard_from_args, machine, machine_line  # noqa: E402  (benchmarks/machine.py)
from timing import FIGURE_HEADER, figure_row  # noqa: E402


def figure_rows(result: dict) -> list[str]:
    """Top-1 / top-5 (and, after --train, the training wall time) as markdown rows."""
    command, line = result["machine"]["command"], machine_line(result["machine"])
    p = result["protocol"]
    rows = [figure_row(f"caption retrieval of {p['clip']}, {p['split']}, {result['num_images']} images, "
                       f"top-1 / top-5 among {p['num_candidates']}",
                       f"{100 * result['top1']:.1f} % / {100 * result['top5']:.1f} % (one run, fixed seed)",
                       command, line)]
    if "train" in result:
        t = result["train"]
        rows.append(figure_row(f"CLIP training, {t['step']} steps",
                               f"{t['wall_seconds']:.0f} s wall, {t['seconds_per_step']:.2f} s a step (one run)",
                               command, line))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="runs/clip_shapes", help="a TextEncoder.load spec (folder, ARCH=FILE, NAME/TAG)")
    ap.add_argument("--data", default="data/shapes", help="the Shapes dataset folder")
    ap.add_argument("--split", default="val")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", action="store_true", help="train the domain CLIP first (train-clip), timed")
    ap.add_argument("--config", default=None, help="with --train: the CLIP config (default configs/clip/shapes.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="with --train: config overrides")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    guard = guard_from_args(args)
    try:
        from layout2img.models.text import TextEncoder
        from layout2img.metrics.retrieval import caption_retrieval_accuracy
        from layout2img.training.clip import load_clip_config, train_clip
        from layout2img.training.clip_data import load_clip_pairs

        result: dict = {"benchmark": "clip_caption_retrieval", "machine": machine(guard=guard)}
        if args.train:
            cfg = load_clip_config(args.config, args.overrides)
            start = time.time()
            trained = train_clip(cfg)
            result["train"] = {"command": " ".join(["python", *sys.argv]), "wall_seconds": round(time.time() - start, 1),
                               **{k: trained.encoder.metadata[k] for k in ("load_seconds", "train_seconds", "step")},
                               "seconds_per_step": round(trained.encoder.metadata["train_seconds"]
                                                         / max(1, trained.encoder.metadata["step"]), 3),
                               "history": trained.history}
            args.clip = str(trained.out_dir)
        start = time.time()
        encoder = TextEncoder.load(args.clip, device=args.device)
        pairs = load_clip_pairs({"dataset": "shapes", "root": args.data}, args.split, encoder.image_size[0],
                                progress=False)
        captions = [c[0] for c in pairs.captions]
        r = caption_retrieval_accuracy(encoder, pairs.images, captions, args.candidates, args.seed)
        result.update({"clip": args.clip, "data": args.data, "split": args.split, "num_images": len(pairs),
                       "num_candidates": args.candidates, "seed": args.seed, "top1": r["top1"], "top5": r["top5"],
                       "eval_seconds": round(time.time() - start, 1),
                       "protocol": {"clip": args.clip, "data": args.data, "split": args.split, "device": args.device,
                                    "num_candidates": args.candidates, "seed": args.seed,
                                    "query": "each image's first caption", "negatives": "captions of other images, "
                                    "drawn with the seed; identical captions never negatives",
                                    "train": {"config": args.config or "configs/clip/shapes.yaml",
                                              "overrides": list(args.overrides)} if args.train else None}})
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    print(text)
    print(FIGURE_HEADER)
    print("\n".join(figure_rows(result)))
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
