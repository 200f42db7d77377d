"""Appearance from a reference image (issue 24): codes encoded from the real picture vs drawn from clusters.

For each of the first ``--num`` scenes of a Shapes split (``--split val``), generated from its
ground-truth layout (boxes and masks, ``layout_source='gt'``, as ``layout2img evaluate --layout gt``):

* **encoded**: every object's style code encoded from the scene's own real image with
  ``model.encode_styles(image, graph)``, the graph holding the scene's objects and ground-truth
  boxes and no masks (so the masks the codes pool over are predicted, as a user's would be);
* **cluster**: codes drawn from the fitted per-class style clusters (``--style cluster``), batch
  ``b`` seeded ``seed + its first index``;
* **transfer**: the codes encoded from scene ``i`` carried onto scene ``j = (i + 1) mod N``'s layout
  by :meth:`ReferenceStyles.codes_for` (by class: the k-th object of a class takes the k-th
  reference object of that class, cycling; objects whose class scene ``i`` lacks are drawn from
  the clusters, seed ``seed + its first index``), as ``layout2img generate --style-from`` does.

Measured: FID from the GT layouts against the real images of the same scenes (pytorch-fid's
definition over the FID Inception, ``layout2img.metrics.fid``, as ``layout2img evaluate``; the
8-bit images a PNG would hold), and colour agreement per object: every thing (circle, square, ...)
with an annotated colour ("a red circle") whose visible mask (the GT layout's visible weight > 0.5)
covers at least ``--min-pixels`` pixels is judged by the pixel-vote judge of
``benchmarks/editing.py`` (the Shapes colour most of its pixels are nearest to) and compared with
its annotated colour; for **transfer**, with the annotated colour of the reference object whose
code it took (and, as a baseline, the cluster images' same objects against that same colour).
The floor: the same judge on the real images (its agreement with the annotations), and the
real-vs-real FID of 21.4 (1000 train vs 1000 val images of data/shapes, docs/BENCHMARKS.md,
"Default run"; not recomputed here).

    python benchmarks/appearance.py --checkpoint runs/shapes_64/checkpoints/latest --data data/shapes \\
        --split val --num 1000 --out runs/bench/appearance.json

Checks first that the machine is quiet (``benchmarks/machine.py``; ``--allow-busy`` to override).
Progress goes to stderr; prints the JSON report (protocol and machine included) and a markdown
table; ``--out`` writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from editing import COLORS, JUDGE_PROTOCOL, REPO, item_graph, parse_description, pixel_vote_color, to_unit  # noqa: E402
from machine import add_guard_args, guard_from_args, machine, machine_line, save_report  # noqa: E402

sys.path.insert(0, str(REPO))
from layout2img.errors import ConfigError, Layout2ImgError  # noqa: E402
from layout2img.vocab import SHAPES_THINGS  # noqa: E402

#: Real-vs-real FID of 1000 train vs 1000 val images of data/shapes (docs/BENCHMARKS.md, "Default run").
FID_FLOOR = 21.4
SETTINGS = ("encoded", "cluster")


def check_args(args) -> None:
    """ConfigError (one line naming the option) before anything is loaded."""
    for name in ("num", "batch_size", "min_pixels"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.out and Path(args.out).suffix.lower() != ".json":
        raise ConfigError(f"--out {args.out}: the report is a .json file")
    if not Path(args.data).is_dir():
        raise ConfigError(f"--data {args.data}: not a folder (a Shapes dataset: `layout2img prepare shapes`)")


def load(args):
    """(model, dataset) checked against each other: a model with an encoder and fitted clusters."""
    from layout2img.data.shapes import ShapesDataset
    from layout2img.generate import load_model
    from layout2img.pipeline.inputs import resolve_style_source

    model = load_model(args.checkpoint, args.device).eval()
    if model.encoder is None:
        raise ConfigError(f"{args.checkpoint}: this model has no appearance encoder (style_dim=0)")
    resolve_style_source(model, "cluster", args.checkpoint)
    dataset = ShapesDataset(args.data, args.split, image_size=model.image_size,
                            mask_size=model.config["layout"]["mask_size"])
    if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names):
        raise ConfigError(f"--data {args.data}: its vocabulary is not the checkpoint's")
    return model, dataset


def judged_things(image01: torch.Tensor, weights: torch.Tensor, objs: list[str], first: int,
                  min_pixels: int) -> dict[int, str]:
    """Object index (within its image) -> judged colour, for the things whose visible mask is big enough.
    ``weights``: the batch's visible weights, the image's objects starting at row ``first``."""
    out = {}
    for k, name in enumerate(objs):
        mask = weights[first + k] > 0.5
        if name in SHAPES_THINGS and int(mask.sum()) >= min_pixels:
            out[k] = pixel_vote_color(image01, mask)
    return out


class Agreement:
    """Judged colour vs the colour it should be, counted per expected colour."""

    def __init__(self):
        self.right, self.total = Counter(), Counter()

    def add(self, got: str, want: str) -> None:
        self.total[want] += 1
        self.right[want] += got == want

    def summary(self) -> dict:
        n = sum(self.total.values())
        return {"agreement": sum(self.right.values()) / n if n else None, "objects": n,
                "by_colour": {c: f"{self.right[c]}/{self.total[c]}" for c in COLORS if self.total[c]}}


@torch.no_grad()
def measure(model, dataset, args, extractor, log=lambda line: None) -> dict:
    from layout2img.data.batch import collate
    from layout2img.metrics.fid import to_uint8
    from layout2img.pipeline.appearance import ReferenceStyles
    from layout2img.pipeline.inputs import pack_style_codes

    names = model.vocab.object_names
    n = min(args.num, len(dataset))
    objects = {}  # scene -> object names, annotated colours, encoded codes
    features = {s: [] for s in ("real", *SETTINGS)}
    agree = {s: Agreement() for s in ("real", *SETTINGS, "transfer", "transfer_cluster")}
    cluster_colours: dict[tuple[int, int], str] = {}
    transfer_colours: dict[tuple[int, int], tuple[str, str]] = {}  # (j, k) -> (judged, reference colour)
    t0 = time.perf_counter()

    def scene(i: int):
        if i not in objects:
            item = dataset[i]
            objs = [names[int(o)] for o in item["objs"][:-1]]
            colours = [(parse_description(d) or (None,))[0] for d in item["descriptions"][:-1]]
            codes = model.encode_styles(item["image"], item_graph(item, model.vocab))
            objects[i] = (item, objs, colours, codes)
        return objects[i]

    for start in range(0, n, args.batch_size):
        idx = list(range(start, min(n, start + args.batch_size)))
        scenes = [scene(i) for i in idx]
        batch = collate([s[0] for s in scenes]).to(model.device)
        rows, _ = pack_style_codes([s[3] for s in scenes], [s[0] for s in scenes], 1, model.style_dim)
        out = {"encoded": model(batch, layout_source="gt", style_source="cluster", style_codes=rows.to(model.device)),
               "cluster": model(batch, layout_source="gt", style_source="cluster",
                                generator=torch.Generator().manual_seed(args.seed + start))}
        weights = out["encoded"].layout.geometry.weights  # the GT layout: the same for every setting
        images = {"real": batch.images, **{s: out[s].images for s in SETTINGS}}
        if extractor is not None:
            for s, x in images.items():
                features[s].append(extractor(list(to_uint8(x.float().cpu())), total=len(idx)))
        first = 0
        for b, (i, (_, objs, colours, _)) in enumerate(zip(idx, scenes)):
            for s, x in images.items():
                for k, got in judged_things(to_unit(x[b]), weights, objs, first, args.min_pixels).items():
                    if colours[k] is not None:
                        agree[s].add(got, colours[k])
                    if s == "cluster":
                        cluster_colours[(i, k)] = got
            first += len(objs) + 1

        # transfer: scene i's codes onto scene j = i + 1's layout, by class
        pairs = [(i, (i + 1) % n) for i in idx]
        targets = [scene(j) for _, j in pairs]
        codes, taken = [], []
        for (i, _), (_, objs_j, _, _) in zip(pairs, targets):
            _, objs_i, _, codes_i = objects[i]
            codes.append(ReferenceStyles(objs_i, codes_i).codes_for(objs_j))
            which = ReferenceStyles(objs_i, torch.arange(len(objs_i), dtype=torch.float32)[:, None])
            taken.append({k: int(r) for k, r in which.codes_for(objs_j).items()})
        tbatch = collate([t[0] for t in targets]).to(model.device)
        trows, known = pack_style_codes(codes, [t[0] for t in targets], 1, model.style_dim)
        tout = model(tbatch, layout_source="gt", style_source="cluster", style_codes=trows.to(model.device),
                     style_known=None if known is None else known.to(model.device),
                     generator=torch.Generator().manual_seed(args.seed + start))
        first = 0
        for b, ((i, j), (_, objs_j, _, _), ref) in enumerate(zip(pairs, targets, taken)):
            ref_colours = objects[i][2]
            judged = judged_things(to_unit(tout.images[b]), tout.layout.geometry.weights, objs_j, first,
                                   args.min_pixels)
            for k, r in ref.items():
                if k in judged and ref_colours[r] is not None:
                    transfer_colours[(j, k)] = (judged[k], ref_colours[r])
            first += len(objs_j) + 1
        log(f"{idx[-1] + 1}/{n} scenes, {time.perf_counter() - t0:.0f} s: colour agreement encoded "
            f"{_pct(agree['encoded'])}, cluster {_pct(agree['cluster'])}, real {_pct(agree['real'])}")

    for (j, k), (got, want) in transfer_colours.items():
        agree["transfer"].add(got, want)
        if (j, k) in cluster_colours:  # the cluster images judged the same object of scene j
            agree["transfer_cluster"].add(cluster_colours[(j, k)], want)
    return {"num_images": n, "features": {s: np.concatenate(f) for s, f in features.items() if f},
            "agreement": {s: a.summary() for s, a in agree.items()}}


def _pct(a: Agreement) -> str:
    s = a.summary()
    return "-" if s["agreement"] is None else f"{100 * s['agreement']:.1f} % of {s['objects']}"


def fid_results(features: dict) -> dict:
    from layout2img.metrics.fid import fid_from_features, small_sample_note

    out = {}
    for s in SETTINGS:
        if s in features and min(len(features[s]), len(features["real"])) >= 2:
            out[s] = {"value": fid_from_features(features["real"], features[s])}
            if note := small_sample_note(len(features["real"]), len(features[s])):
                out[s]["warning"] = note
    return out


def table(report: dict) -> list[str]:
    a, fid = report["colour_agreement"], report["fid"]

    def pct(s):
        return "-" if a[s]["agreement"] is None else f"{100 * a[s]['agreement']:.1f} % ({a[s]['objects']})"

    def f(s):
        return f"{fid[s]['value']:.1f}" if s in fid else "-"

    n = report["num_images"]
    return [
        f"| codes ({n} {report['protocol']['split']} scenes, GT layouts) | FID (floor {FID_FLOOR}) "
        f"| colour agreement, pixel vote (objects) |",
        "|---|---|---|",
        f"| real images (the judge's floor) | {FID_FLOOR} (1000 train vs 1000 val, cited) | {pct('real')} |",
        f"| encoded from the scene's own picture (GT boxes, predicted masks) | {f('encoded')} | {pct('encoded')} |",
        f"| fitted clusters (`--style cluster`) | {f('cluster')} | {pct('cluster')} |",
        f"| transfer: scene i's codes by class on scene i+1's layout, vs the reference object's colour | - "
        f"| {pct('transfer')} |",
        f"| the same objects with cluster codes, vs that reference colour (chance) | - | {pct('transfer_cluster')} |",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_64/checkpoints/latest",
                    help="a checkpoint folder whose model has an appearance encoder and fitted style clusters")
    ap.add_argument("--data", default="data/shapes", help="the Shapes dataset folder")
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--num", type=int, default=1000, metavar="N", help="the first N scenes of the split")
    ap.add_argument("--seed", type=int, default=0, help="cluster draws: seed + each batch's first index")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--min-pixels", type=int, default=16, help="things with a smaller visible mask are not judged")
    ap.add_argument("--no-fid", action="store_true", help="colour agreement only (no Inception features)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--out", default=None, help="also write the JSON report here (.json)")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    try:
        check_args(args)
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    guard = guard_from_args(args)
    t0 = time.perf_counter()
    try:
        from layout2img.devices import resolve_device
        from layout2img.metrics.fid import INPUT_MAPPING, RESIZE, InceptionFeatureExtractor

        model, dataset = load(args)
        extractor = None if args.no_fid else InceptionFeatureExtractor(device=resolve_device(args.device))
        measured = measure(model, dataset, args, extractor, log=lambda line: print(line, file=sys.stderr, flush=True))
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {
        "benchmark": "appearance",
        "num_images": measured["num_images"],
        "fid": fid_results(measured["features"]),
        "colour_agreement": measured["agreement"],
        "seconds_total": round(time.perf_counter() - t0, 1),
        "protocol": {
            "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
            "style_clusters": (model.metadata or {}).get("style_clusters"), "data": str(args.data),
            "split": args.split, "num": args.num, "resolution": model.image_size,
            "layout": "ground truth (boxes and masks), layout_source='gt', as `layout2img evaluate --layout gt`",
            "settings": {
                "encoded": "model.encode_styles(the scene's real image, its objects and GT boxes; masks predicted)",
                "cluster": "a fitted cluster centre of each object's class, drawn with its share "
                           "(generator seeded seed + the batch's first index)",
                "transfer": "scene i's encoded codes on scene (i + 1) mod N's layout by ReferenceStyles.codes_for "
                            "(by class, cycling); objects of classes scene i lacks: cluster codes as above"},
            "seed": args.seed, "batch_size": args.batch_size, "min_pixels": args.min_pixels,
            "judge": f"pixel_vote: {JUDGE_PROTOCOL['pixel_vote']}; on the GT layout's visible masks",
            "truth": "the object's annotated colour (its description); for transfer, the annotated colour of the "
                     "reference object whose code it took",
            "fid": None if args.no_fid else {
                "definition": f"pytorch-fid: uint8 images -> {INPUT_MAPPING} -> {RESIZE} -> pool3 2048-d; "
                              "|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) (layout2img.metrics.fid)",
                "real": f"the same {measured['num_images']} scenes' real images, one generated image each",
                "feature_extractor": extractor.protocol()},
            "fid_floor": f"{FID_FLOOR}: real vs real, 1000 train vs the first 1000 val images of data/shapes "
                         "(docs/BENCHMARKS.md, 'Default run'); cited, not recomputed",
            "device": args.device,
        },
        "machine": machine(guard=guard),
    }
    print(json.dumps(report, indent=1))
    print("\n".join(table(report)))
    print(f"command: {report['machine']['command']}\nmachine: {machine_line(report['machine'])}")
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
