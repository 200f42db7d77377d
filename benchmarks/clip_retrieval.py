"""Caption retrieval of a CLIP on the Shapes validation split (the domain CLIP's acceptance number).

For each validation image, its full caption (the first of its three) is ranked against
``--candidates - 1`` captions of other images (drawn with a fixed seed; images with the very
same caption are never each other's negatives); the script reports top-1 and top-5 accuracy.

    python benchmarks/clip_retrieval.py                                  # runs/clip_shapes on data/shapes
    python benchmarks/clip_retrieval.py --clip ViT-B-32/openai           # any TextEncoder.load spec
    python benchmarks/clip_retrieval.py --train --config configs/clip/shapes.yaml     # train first, time it, then measure

Prints one JSON object (numbers, protocol, machine); ``--out FILE`` writes it too.
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

from machine import machine  # noqa: E402  (benchmarks/machine.py)


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
    args = ap.parse_args(argv)
    try:
        from layout2img.models.text import TextEncoder
        from layout2img.training.clip import caption_retrieval_accuracy, load_clip_config, load_clip_pairs, train_clip

        result: dict = {"benchmark": "clip_caption_retrieval", "machine": machine()}
        if args.train:
            cfg = load_clip_config(args.config, args.overrides)
            start = time.time()
            trained = train_clip(cfg)
            result["train"] = {"command": " ".join(["python", *sys.argv]), "wall_seconds": round(time.time() - start, 1),
                               **{k: trained.encoder.metadata[k] for k in ("load_seconds", "train_seconds", "step")},
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
                       "eval_seconds": round(time.time() - start, 1)})
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
