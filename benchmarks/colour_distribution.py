"""Colours of generated Shapes objects under cluster and sampled styles, against the real objects' colours.

The first ``--max-images`` Shapes validation scenes are generated with their ground-truth layouts
(boxes and masks, ``layout_source='gt'``), once with style codes drawn from the fitted per-class
style clusters (``--style cluster``) and once from N(0, I) (``--style sample``), batch ``b``
seeded ``seed + b``'s first index in both. Every thing object (circle, square, ...) whose visible
mask (the layout's visible weight > 0.5) covers at least ``--min-pixels`` pixels is judged with
the pixel-vote colour judge of ``benchmarks/editing.py`` (the Shapes colour most of its pixels are
nearest to); the real val images' things are judged the same way on their ground-truth visible
masks (and the judge's agreement with their descriptions is reported, as a check on the judge).

Per class: the colour histograms (cluster, sample, real) and each setting's total variation
distance to real, TV = half the L1 distance of the normalised histograms (0: the same colours in
the same shares, 1: no colour in common); then the mean TV over the classes judged in both, and
the TV of the histograms pooled over all things.

    python benchmarks/colour_distribution.py --checkpoint runs/shapes_64/checkpoints/latest \\
        --max-images 1000 --out runs/bench/colour_distribution.json

The val split is the checkpoint's run config's (``--config`` to give one, ``--data DIR`` for
another Shapes folder). The model needs fitted style clusters (``layout2img fit-styles``). Checks
first that the machine is quiet (``benchmarks/machine.py``; ``--allow-busy`` to override). Prints
the JSON report, then one markdown row per setting and a per-class table for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from editing import COLORS, JUDGE_PROTOCOL, JUDGES, REPO, parse_description, to_unit  # noqa: E402
from layouts import load_split  # noqa: E402  (benchmarks/layouts.py)
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402
from timing import FIGURE_HEADER, figure_row  # noqa: E402

sys.path.insert(0, str(REPO))
from layout2img.errors import ConfigError, Layout2ImgError  # noqa: E402
from layout2img.vocab import SHAPES_THINGS  # noqa: E402

SETTINGS = ("cluster", "sample")


def total_variation(a: Counter, b: Counter) -> float | None:
    """Half the L1 distance of two colour histograms, each normalised; None if either is empty."""
    na, nb = sum(a.values()), sum(b.values())
    if na == 0 or nb == 0:
        return None
    return 0.5 * sum(abs(a[c] / na - b[c] / nb) for c in COLORS)


def judge_objects(image01: torch.Tensor, weights: torch.Tensor, obj_to_img: torch.Tensor, things: list[int],
                  min_pixels: int, color_of) -> dict[int, str]:
    """Object row -> judged colour, for the rows ``things`` whose visible mask is big enough."""
    judged = {}
    for k in things:
        mask = weights[k] > 0.5
        if int(mask.sum()) >= min_pixels:
            judged[k] = color_of(image01[int(obj_to_img[k])], mask)
    return judged


@torch.no_grad()
def measure(model, dataset, max_images: int, batch_size: int, seed: int, min_pixels: int, color_of,
            log=lambda line: None) -> dict:
    """Histograms ``{setting: {class: Counter}}`` for real, cluster and sample, and the judge's check."""
    from layout2img.data.batch import collate
    from layout2img.models.layout import compose

    names = model.vocab.object_names
    hist = {s: {c: Counter() for c in SHAPES_THINGS} for s in ("real", *SETTINGS)}
    described = agreed = 0
    n = min(max_images, len(dataset))
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))]).to(model.device)
        if batch.masks is None or batch.images is None:
            raise ConfigError("the val split has no masks or images: the real objects cannot be judged")
        things = [k for k, c in enumerate(batch.objs.tolist()) if names[c] in SHAPES_THINGS]
        real_weights = compose(batch.boxes.float(), batch.masks.float(), batch.obj_to_img, batch.num_images,
                               model.image_size, objs=batch.objs, stuff_classes=model.stuff_classes,
                               skip=batch.objs == 0, pooling=model.layout_stage.pooling).weights
        real = judge_objects(to_unit(batch.images), real_weights, batch.obj_to_img, things, min_pixels, color_of)
        for k, colour in real.items():
            hist["real"][names[int(batch.objs[k])]][colour] += 1
            truth = parse_description(batch.descriptions[k])
            if truth is not None:
                described += 1
                agreed += truth[0] == colour
        for setting in SETTINGS:
            rng = torch.Generator(device="cpu").manual_seed(seed + start)
            out = model(batch, layout_source="gt", style_source=setting, generator=rng)
            fake = judge_objects(to_unit(out.images), out.layout.geometry.weights, batch.obj_to_img, things,
                                 min_pixels, color_of)
            for k, colour in fake.items():
                hist[setting][names[int(batch.objs[k])]][colour] += 1
        log(f"{min(n, start + batch_size)}/{n} scenes")
    return {"histograms": hist, "num_images": n, "real_described": described,
            "judge_accuracy_on_real": agreed / described if described else None}


def summarise(hist: dict) -> dict:
    """Per setting: TV to real per class, their mean over classes judged in both, the pooled TV."""
    pooled = {s: sum(hist[s].values(), Counter()) for s in hist}
    results = {}
    for setting in SETTINGS:
        per_class = {c: total_variation(hist[setting][c], hist["real"][c]) for c in SHAPES_THINGS}
        known = [v for v in per_class.values() if v is not None]
        results[setting] = {
            "mean_tv": sum(known) / len(known) if known else None, "classes": len(known),
            "pooled_tv": total_variation(pooled[setting], pooled["real"]),
            "objects": sum(pooled[setting].values()), "tv_per_class": per_class,
        }
    return results


def figure_rows(report: dict) -> list[str]:
    """One markdown row per setting: mean TV to the real colours over classes, and pooled."""
    command, line = report["machine"]["command"], machine_line(report["machine"])
    rows = []
    for setting, r in report["results"].items():
        value = ("n/a (nothing judged)" if r["mean_tv"] is None else
                 f"mean TV to real {r['mean_tv']:.3f} over {r['classes']} classes, pooled {r['pooled_tv']:.3f} "
                 f"(one run, fixed seeds)")
        rows.append(figure_row(f"colour distribution, --style {setting}, {r['objects']} things of "
                               f"{report['num_images']} val scenes ({report['real']['objects']} real)",
                               value, command, line))
    return rows


def class_table(report: dict) -> list[str]:
    """Per class: objects judged and the commonest colours of real, cluster and sample; the two TVs."""
    def top(counter: dict) -> str:
        total = sum(counter.values())
        common = [(c, v) for c, v in Counter(counter).most_common(3) if v > 0]
        return ", ".join(f"{c} {100 * v / total:.0f} %" for c, v in common) if total else "-"

    def tv(v):
        return "-" if v is None else f"{v:.3f}"

    rows = ["| class | real (n, top colours) | cluster (top colours) | sample (top colours) | TV cluster | TV sample |",
            "|---|---|---|---|---|---|"]
    for c in SHAPES_THINGS:
        h = report["histograms"][c]
        rows.append(f"| {c} | {sum(h['real'].values())}: {top(h['real'])} | {top(h['cluster'])} | {top(h['sample'])} "
                    f"| {tv(report['results']['cluster']['tv_per_class'][c])} "
                    f"| {tv(report['results']['sample']['tv_per_class'][c])} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_64/checkpoints/latest",
                    help="a checkpoint (or run) folder whose model has fitted style clusters")
    ap.add_argument("--config", default=None, help="run config (default: the checkpoint's)")
    ap.add_argument("--data", default=None, help="a Shapes folder instead of the run config's data.root")
    ap.add_argument("--max-images", type=int, default=1000, metavar="N", help="the first N val scenes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--min-pixels", type=int, default=16, help="objects with a smaller visible mask are not judged")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge", default="pixel_vote", choices=sorted(JUDGES), help="the colour judge (see editing.py)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    guard = guard_from_args(args)
    try:
        from layout2img.generate import load_model
        from layout2img.pipeline.inputs import resolve_style_source

        if args.max_images < 1 or args.batch_size < 1:
            raise ConfigError("--max-images and --batch-size must be positive")
        folder, dataset = load_split(args.checkpoint, args.config, args.data)
        model = load_model(folder, args.device).eval()
        resolve_style_source(model, "cluster", folder)
        if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names) or \
                getattr(dataset, "image_size", model.image_size) != model.image_size:
            raise ConfigError(f"{folder}: the val split ({dataset.vocab.name}, {dataset.image_size} px) does not "
                              f"match the model ({model.vocab.name}, {model.image_size} px)")
        t0 = time.perf_counter()
        measured = measure(model, dataset, args.max_images, args.batch_size, args.seed, args.min_pixels,
                           JUDGES[args.judge], log=lambda line: print(line, file=sys.stderr, flush=True))
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hist = measured["histograms"]
    report = {
        "benchmark": "colour_distribution",
        "results": summarise(hist),
        "real": {"objects": sum(sum(h.values()) for h in hist["real"].values()),
                 "judge_accuracy_on_real": measured["judge_accuracy_on_real"],
                 "described_objects": measured["real_described"]},
        "histograms": {c: {s: {col: hist[s][c][col] for col in COLORS} for s in ("real", *SETTINGS)}
                       for c in SHAPES_THINGS},
        "num_images": measured["num_images"],
        "seconds_total": round(time.perf_counter() - t0, 1),
        "protocol": {
            "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
            "style_clusters": (model.metadata or {}).get("style_clusters"), "split": "val",
            "data": str(args.data) if args.data else "the run config's data.root", "max_images": args.max_images,
            "layout": "ground truth (boxes and masks)", "settings": {"cluster": "a fitted cluster centre of the object's "
                      "class, drawn with its share of the class's codes (uniformly if the "
                      "checkpoint has no shares)", "sample": "N(0, I)"},
            "seed": "seed + the batch's first val index, the same for both settings", "batch_size": args.batch_size,
            "min_pixels": args.min_pixels, "judge": f"{args.judge}: {JUDGE_PROTOCOL[args.judge]}",
            "real_masks": "ground-truth visible masks (GT boxes and masks composed as the model does)",
            "distance": "total variation: half the L1 distance of the normalised colour histograms",
            "device": args.device,
        },
        "machine": machine(guard=guard),
    }
    print(json.dumps(report, indent=1))
    print(FIGURE_HEADER)
    print("\n".join(figure_rows(report)))
    print()
    print("\n".join(class_table(report)))
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
