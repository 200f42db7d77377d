"""Layouts from graphs on Shapes val: relations kept, overlap and placement against the real layouts, seed diversity.

The first ``--max-images`` val graphs (default 1000) are laid out from the graph alone (every
box predicted, ``keep_known_boxes=False``) with layout seeds ``0 .. K-1`` (``--seeds K``, default
5; a regression predictor has one layout per graph, so it is drawn once), each graph's noise
block from ``torch.Generator().manual_seed(seed)`` as ``predict_layout`` / ``layout2img layout``
draw it, once as sampled and once refined (``layout.refine_steps`` projected gradient steps on
the free boxes, ``--refine-steps`` to override). Against the real val layouts
(:class:`layout2img.metrics.layout_realism.LayoutRealism`):

* relation satisfaction over every sample (sg2im's rules on mask centroids), and per seed;
* mean pairwise IoU between the things of one image, predicted vs real (and their ratio);
* total variation of per-class 2-D histograms of box centres and sizes (``--bins``);
* stuff placement: each stuff class's mean centre height, predicted vs real;
* seed diversity: a thing's mean pairwise box IoU over the K seeds (1: the same box every time);
* box IoU of seed 0's boxes with the real ones.

    python benchmarks/layouts.py --checkpoint runs/shapes_64_sampler/checkpoints/latest \\
        --max-images 1000 --seeds 5 --out runs/bench/layouts_sampler.json

The split (``--split``, default val) is the checkpoint's run config's (``--config`` to give one) or the Shapes folder
``--data DIR``. Checks first that the machine is quiet (``benchmarks/machine.py``; ``--allow-busy``
to override). Prints the JSON report, then one markdown row per setting for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from layout2img.errors import ConfigError, Layout2ImgError  # noqa: E402

SETTINGS = ("sampled", "refined")
TABLE_HEADER = ("| predictor | layouts | relations kept | thing IoU pred / real (ratio) | centre TV | size TV "
                "| seed IoU | box IoU vs GT | stuff mean y pred / real | command | machine |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


def load_split(checkpoint: str, config: str | None, data: str | None, split: str = "val"):
    """(model folder, Shapes ``split`` dataset): the folder ``data`` when given, else the run config's split."""
    from layout2img.config import to_container
    from layout2img.data.build import build_dataset
    from layout2img.data.shapes import ShapesDataset
    from layout2img.training.runs import load_run_config, resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    if data is not None and config is None:
        return folder, ShapesDataset(data, split)
    cfg, cfg_path = load_run_config(folder, config, [f"data.root={data}"] if data else [])
    if cfg.data.get("dataset") != "shapes":
        raise ConfigError(f"{cfg_path}: data.dataset is {cfg.data.get('dataset')!r}; this benchmark needs Shapes")
    return folder, build_dataset(to_container(cfg.data), split, seed=int(cfg.get("seed", 0)))


class RelationsPerSeed:
    """Relation satisfaction (on mask centroids) of each seed's layouts."""

    def __init__(self, num_seeds: int, predicate_names):
        self.counts = [[0, 0] for _ in range(num_seeds)]
        self.names = list(predicate_names)

    def update(self, k: int, boxes, centres, triples) -> None:
        from layout2img.metrics.layout import relation_satisfaction

        named = [(s, self.names[p], o) for s, p, o in triples.tolist()]
        s, c = relation_satisfaction(boxes, named, centres)
        self.counts[k][0] += s
        self.counts[k][1] += c

    def compute(self) -> list[float]:
        return [s / c if c else float("nan") for s, c in self.counts]


@torch.no_grad()
def measure(model, dataset, max_images: int, seeds: int, batch_size: int, bins: int,
            log=lambda line: None, start: int = 0) -> dict:
    """Every figure of the module doc for the sampled and the refined layouts."""
    from layout2img.data.batch import collate
    from layout2img.metrics.layout import box_iou
    from layout2img.metrics.layout_realism import LayoutRealism
    from layout2img.models.layout import mask_centroids

    vocab = model.vocab
    realism = {s: LayoutRealism.from_vocab(vocab, bins) for s in SETTINGS}
    per_seed = {s: RelationsPerSeed(seeds, vocab.predicate_names) for s in SETTINGS}
    gt_iou = {s: [] for s in SETTINGS}
    n = max(0, min(max_images, len(dataset) - start))
    for first in range(start, start + n, batch_size):
        items = [{**dataset[i], "image": None} for i in range(first, min(start + n, first + batch_size))]
        batch = collate(items).to(model.device)
        if batch.masks is None:
            raise ConfigError("the split has no masks: relations are judged on mask centroids")
        real_centres = mask_centroids(batch.boxes, batch.masks)
        texts = model.encode_texts(batch).as_kwargs() if model.text_encoder is not None else {}
        obj_vecs = model.object_vectors(batch, **texts)
        samples = {s: ([], []) for s in SETTINGS}
        for k in range(seeds):
            noise = model.layout_stage.noise(items, 1, k, model.device)
            for setting in SETTINGS:
                boxes, logits, _ = model.layout_stage.predict_boxes(batch, obj_vecs, keep_known_boxes=False,
                                                                    noise=noise, refine=setting == "refined")
                boxes, probs = boxes.float().cpu(), torch.sigmoid(logits.float()).cpu()
                centres = mask_centroids(boxes, probs)
                samples[setting][0].append(boxes)
                samples[setting][1].append(centres)
                per_seed[setting].update(k, boxes, centres, batch.triples.cpu())
        objs, obj_to_img, triples = batch.objs.cpu(), batch.obj_to_img.cpu(), batch.triples.cpu()
        keep = objs != 0
        for setting in SETTINGS:
            realism[setting].update_real(batch.boxes.cpu(), objs, obj_to_img, triples, real_centres.cpu())
            boxes, centres = torch.stack(samples[setting][0]), torch.stack(samples[setting][1])
            realism[setting].update(boxes, objs, obj_to_img, triples, centres, free=keep)
            gt_iou[setting].append(box_iou(boxes[0][keep], batch.boxes.cpu()[keep]))
        log(f"{min(n, first - start + batch_size)}/{n} graphs")
    results = {}
    for setting in SETTINGS:
        r = realism[setting].compute()
        r["relation_satisfaction_per_seed"] = per_seed[setting].compute()
        r["box_iou_vs_gt"] = float(torch.cat(gt_iou[setting]).mean()) if gt_iou[setting] else float("nan")
        results[setting] = r
    return {"results": results, "num_images": n}


def table_rows(report: dict) -> list[str]:
    """One markdown row per setting (see ``TABLE_HEADER``)."""
    command, line = report["machine"]["command"], machine_line(report["machine"])
    p = report["protocol"]
    rows = []
    for setting, r in report["results"].items():
        seeds = r["relation_satisfaction_per_seed"]
        worst = f", worst seed {100 * min(seeds):.1f} %" if len(seeds) > 1 else ""
        stuff = ", ".join(f"{c} {v['pred']:.2f}/{v['real']:.2f}" for c, v in r["stuff_mean_y"].items())
        label = p["predictor"]
        if setting == "refined":
            label += " + refine" + (f" (max thing IoU {p['refine_max_iou']:g})" if p.get("refine_max_iou", 1) < 1 else "")
        rows.append(
            f"| {label} | {p.get('split', 'val')} {p.get('start', 0)}-{p.get('start', 0) + report['num_images'] - 1} x {p['seeds']} | {100 * r['relation_satisfaction']:.1f} %"
            f"{worst} | {r['thing_pairwise_iou']:.3f} / {r['thing_pairwise_iou_real']:.3f} "
            f"({r['thing_pairwise_iou_ratio']:.2f}) | {r['centre_tv']:.3f} | {r['size_tv']:.3f} "
            f"| {r['seed_box_iou']:.3f} | {r['box_iou_vs_gt']:.3f} | {stuff} | `{command}` | {line} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_64/checkpoints/latest", help="a checkpoint (or run) folder")
    ap.add_argument("--config", default=None, help="run config (default: the checkpoint's)")
    ap.add_argument("--data", default=None, help="a Shapes folder instead of the run config's data.root")
    ap.add_argument("--max-images", type=int, default=1000, metavar="N", help="N val graphs from --start")
    ap.add_argument("--start", type=int, default=0, help="the first graph (tune on one range, report on another)")
    ap.add_argument("--split", default="val", choices=["train", "val"],
                    help="whose graphs and real layouts (tune on train, report on val)")
    ap.add_argument("--seeds", type=int, default=5, metavar="K", help="layout seeds 0..K-1 per graph (sampler)")
    ap.add_argument("--refine-steps", type=int, default=None, help="refinement steps (default: the model's)")
    ap.add_argument("--refine-max-iou", type=float, default=None,
                    help="largest IoU the refinement leaves between two things (default: the model's)")
    ap.add_argument("--bins", type=int, default=10, help="histogram bins per axis")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    guard = guard_from_args(args)
    try:
        from layout2img.generate import load_model

        if args.max_images < 1 or args.seeds < 1 or args.batch_size < 1 or args.bins < 1 or args.start < 0:
            raise ConfigError("--max-images, --seeds, --batch-size and --bins must be positive, --start >= 0")
        if args.refine_max_iou is not None and not 0 <= args.refine_max_iou <= 1:
            raise ConfigError(f"--refine-max-iou must be in [0, 1], got {args.refine_max_iou}")
        if args.refine_steps is not None and args.refine_steps < 0:
            raise ConfigError(f"--refine-steps must be >= 0, got {args.refine_steps}")
        folder, dataset = load_split(args.checkpoint, args.config, args.data, args.split)
        model = load_model(folder, args.device).eval()
        if args.refine_steps is not None:
            model.config["layout"]["refine_steps"] = args.refine_steps
        if args.refine_max_iou is not None:
            model.config["layout"]["refine_max_iou"] = args.refine_max_iou
        if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names):
            raise ConfigError(f"{folder}: the {args.split} split's vocabulary ({dataset.vocab.name}) is not the model's "
                              f"({model.vocab.name})")
        seeds = args.seeds if model.samples_layouts else 1
        t0 = time.perf_counter()
        measured = measure(model, dataset, args.max_images, seeds, args.batch_size, args.bins,
                           log=lambda line: print(line, file=sys.stderr, flush=True), start=args.start)
        if measured["num_images"] < 1:
            raise ConfigError(f"--start {args.start}: the {args.split} split has {len(dataset)} graphs")
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lay = model.config["layout"]
    report = {
        "benchmark": "layouts",
        "results": measured["results"],
        "num_images": measured["num_images"],
        "seconds_total": round(time.perf_counter() - t0, 1),
        "protocol": {
            "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
            "predictor": lay["predictor"], "placement": lay["placement"], "refine_steps": lay["refine_steps"],
            "refine_max_iou": lay.get("refine_max_iou", 1.0),
            "split": args.split, "data": str(args.data) if args.data else "the run config's data.root",
            "start": args.start, "max_images": args.max_images, "seeds": seeds,
            "layout": "every box predicted from the graph (keep_known_boxes=False)",
            "noise": "per graph and seed k, the first noise block of torch.Generator().manual_seed(k)",
            "relations": "sg2im's geometric rules on mask centroids of the predicted masks",
            "histograms": f"per class, {args.bins}x{args.bins} bins over [0, 1]^2, total variation",
            "batch_size": args.batch_size, "device": args.device,
        },
        "machine": machine(guard=guard),
    }
    print(json.dumps(report, indent=1))
    print(TABLE_HEADER)
    print("\n".join(table_rows(report)))
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
