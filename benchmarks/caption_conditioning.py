"""Does a caption steer generation? Colour accuracy of the objects a caption names, with and without it.

For each of the first ``--num-images`` Shapes validation scenes, the scene graph is its objects,
relations and ground-truth boxes (no descriptions), and its full caption ("a large black star
to the left of a white square, on grass in front of a wall") names two things by colour and
shape. The objects it names are those whose ground-truth description is that colour and shape.
Each scene is generated with the same seed under several conditions and every named object's
colour is judged as in ``benchmarks/editing.py`` (``--judge``: by default the Shapes colour most
pixels inside the object's generated mask are nearest to) - independently of any CLIP:

- ``no_text``: no caption (the text-free behaviour of the model);
- ``caption``: the true caption (accuracy = judged colour == the caption's colour);
- ``wrong_caption``: every named colour swapped for another (fixed seed); ``follows_text`` is
  the share judged as the *swapped* colour, ``matches_truth`` the share still judged as the
  true one;
- ``caption_film_only``: the true caption with the text style prior switched off (FiLM and the
  graph encoder only), to show which part carries the effect;
- ``descriptions``: no caption, the named objects' ground-truth descriptions in the graph
  (open-vocabulary style: "a black star" given to the object itself).

    python benchmarks/caption_conditioning.py --checkpoint runs/shapes_text_64/checkpoints/latest \\
        --num-images 200 --out runs/bench/caption_conditioning.json

Checks first that the machine is quiet (``benchmarks/machine.py``; ``--allow-busy`` to override).
Prints the JSON report (results, protocol, machine), then one markdown row per condition for
docs/BENCHMARKS.md. A seconds-long run: a tiny text model, a small ``--data`` and ``--num-images 2``.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from editing import (COLORS, JUDGE_PROTOCOL, JUDGES, REPO, item_graph, parse_description, to_unit,  # noqa: E402
                     val_set)
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402
from timing import FIGURE_HEADER, figure_row  # noqa: E402

sys.path.insert(0, str(REPO))
from layout2img.errors import Layout2ImgError  # noqa: E402
from layout2img.vocab import SHAPES_THINGS  # noqa: E402

MENTION = re.compile(r"\b(" + "|".join(COLORS) + r") (" + "|".join(SHAPES_THINGS) + r")\b")


def swap_colors(caption: str, rng: random.Random) -> tuple[str, dict[str, str]]:
    """Each colour the caption names -> another one (two named colours stay distinct)."""
    named = list(dict.fromkeys(m.group(1) for m in MENTION.finditer(caption)))
    mapping: dict[str, str] = {}
    for c in named:
        mapping[c] = rng.choice([o for o in COLORS if o not in named and o not in mapping.values()])
    text = MENTION.sub(lambda m: f"{mapping[m.group(1)]} {m.group(2)}", caption)
    return text, mapping


def judge(model, graph: dict, seed: int, named: list[int], min_pixels: int, color_of=JUDGES["pixel_vote"],
          **kwargs) -> list[str | None]:
    out = model.generate(graph, seed=seed, return_output=True, **kwargs)
    image = to_unit(out.images[0])
    w = out.layout.geometry.weights
    return [color_of(image, w[k] > 0.5) if int((w[k] > 0.5).sum()) >= min_pixels else None for k in named]


def figure_rows(report: dict) -> list[str]:
    """One markdown row per condition: its colour accuracy over the judged objects."""
    command, line = report["machine"]["command"], machine_line(report["machine"])
    rows = []
    for cond, r in report["results"].items():
        if cond == "wrong_caption":
            value = (f"follows the text {100 * r['follows_text']:.1f} %, "
                     f"keeps the truth {100 * r['matches_truth']:.1f} %")
        else:
            value = f"{100 * r['color_accuracy']:.1f} %"
        rows.append(figure_row(f"caption conditioning, {cond}, {r['objects']} objects of {report['num_scenes']} scenes",
                               f"{value} (one run, fixed seeds)", command, line))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_text_64/checkpoints/latest")
    ap.add_argument("--data", default="data/shapes")
    ap.add_argument("--num-images", type=int, default=200)
    ap.add_argument("--min-pixels", type=int, default=16, help="objects with a smaller mask are not judged")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--judge", default="pixel_vote", choices=sorted(JUDGES), help="the colour judge (see editing.py)")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    guard = guard_from_args(args)
    try:
        from layout2img.generate import load_model

        model = load_model(args.checkpoint, args.device).eval()
        if model.text_encoder is None:
            raise Layout2ImgError(f"{args.checkpoint}: this model has no text encoder")
        dataset = val_set(args.data)
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    conditions = ("no_text", "caption", "wrong_caption", "caption_film_only", "descriptions")
    tallies = {c: {"right": 0, "truth": 0, "judged": 0} for c in conditions}
    t0 = time.perf_counter()
    used = 0
    conditioner = model.text_conditioner
    prior = conditioner.style_prior
    for index in range(min(args.num_images, len(dataset))):
        item = dataset[index]
        caption = dataset.captions_of(item["image_id"])[0]
        graph = item_graph(item, model.vocab)
        descs = [parse_description(d) for d in item["descriptions"][:-1]]
        mentions = {(m.group(1), m.group(2)) for m in MENTION.finditer(caption)}
        named = [k for k, d in enumerate(descs) if d is not None and d in mentions]
        if not named:
            continue
        used += 1
        seed = args.seed + index
        truth = [descs[k][0] for k in named]
        wrong_text, mapping = swap_colors(caption, random.Random(f"caption:{args.seed}:{index}"))
        wrong = [mapping[c] for c in truth]
        with_desc = dict(graph, descriptions=[item["descriptions"][k] if k in named else None
                                              for k in range(len(graph["objects"]))])
        results = {
            "no_text": (judge(model, graph, seed, named, args.min_pixels, JUDGES[args.judge]), truth),
            "caption": (judge(model, graph, seed, named, args.min_pixels, JUDGES[args.judge], text=caption), truth),
            "wrong_caption": (judge(model, graph, seed, named, args.min_pixels, JUDGES[args.judge], text=wrong_text), wrong),
            "descriptions": (judge(model, with_desc, seed, named, args.min_pixels, JUDGES[args.judge]), truth),
        }
        if prior is not None:
            conditioner.style_prior = None  # FiLM (and the graph encoder) alone
            try:
                results["caption_film_only"] = (judge(model, graph, seed, named, args.min_pixels, JUDGES[args.judge], text=caption), truth)
            finally:
                conditioner.style_prior = prior
        for cond, (got, ref) in results.items():
            t = tallies[cond]
            for g, r, tr in zip(got, ref, truth):
                if g is None:
                    continue
                t["judged"] += 1
                t["right"] += g == r
                t["truth"] += g == tr
        if used % 20 == 0:
            acc = {c: round(t["right"] / max(t["judged"], 1), 3) for c, t in tallies.items()}
            print(f"{used} scenes: {acc}", file=sys.stderr, flush=True)
    summary = {}
    for cond, t in tallies.items():
        if t["judged"] == 0:
            continue
        entry = {"objects": t["judged"]}
        if cond == "wrong_caption":
            entry["follows_text"] = t["right"] / t["judged"]
            entry["matches_truth"] = t["truth"] / t["judged"]
        else:
            entry["color_accuracy"] = t["right"] / t["judged"]
        summary[cond] = entry
    report = {
        "benchmark": "caption_conditioning",
        "results": summary,
        "num_scenes": used,
        "seconds_total": round(time.perf_counter() - t0, 1),
        "protocol": {
            "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
            "text_encoder": model.config.get("text_encoder"), "data": str(args.data), "split": "val",
            "num_images": args.num_images, "min_pixels": args.min_pixels, "seed": "seed + val index",
            "judge": f"{args.judge}: {JUDGE_PROTOCOL[args.judge]}",
            "named_objects": "those whose GT description (colour + shape) the full caption mentions",
            "chance": 1 / len(COLORS), "device": args.device,
        },
        "machine": machine(guard=guard),
    }
    print(json.dumps(report, indent=1))
    print(FIGURE_HEADER)
    print("\n".join(figure_rows(report)))
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
