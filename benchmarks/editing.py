"""Text-guided colour edits on Shapes, judged by pixel statistics (not by the CLIP that guided them).

For each of the first validation scenes that has a thing (circle, square, ...) covering at least
``--min-pixels`` pixels of the generated layout, the largest such thing is the target:

1. the scene graph is the val image's objects, relations and ground-truth boxes (masks are
   predicted, as `layout2img generate` does with boxes); case ``i`` uses seed ``i``;
2. ``original = model.generate(graph, seed)``; its current colour is the Shapes colour
   that most pixels inside the object's mask (the generated layout's visible weight > 0.5) are
   nearest to (``pixel_vote_color``; ``layout2img.data.shapes_render.COLOR_RGB``);
3. the target colour is drawn (fixed seed) among the 7 others; the text is "a <colour> <shape>";
4. ``edit_image(model, graph, seed=seed, target=object, text=...)`` guided by ``--clip``;
5. success: the same judge, on the same mask of the edited image, names the target colour (also
   reported: the judge "nearest to the mean RGB", which dark outlines pull towards black). Change outside: mean |edited - original| over the pixels outside the
   object's mask (images in [0, 1], all three channels), i.e. the feathered ring of the
   composite mask counts as outside; also reported over the pixels outside the composite mask
   (0 by construction).

As a check on the judges, each is applied to the *real* val images with their ground-truth masks
and descriptions (``judge_accuracy_on_real``).

Time per edit: each ``edit_image`` call's wall seconds (``time.perf_counter``; meaningful on a
quiet machine only: the record is stamped "busy" otherwise) and its CPU seconds
(``time.process_time``, all threads summed; comparable between settings on a busy machine);
the report gives their medians and the median number of steps run.

``--grid 6x50 2x50 3x30:p2 2x30:p2:s8`` runs the same cases once per setting (RESTARTSxSTEPS,
then optional ``:pN`` patience, ``:sN`` screened starts, ``:aN`` views, ``:lrX`` learning rate;
the other flags apply to every setting) and reports success against time per edit for each.
Pick settings on one range of scenes (``--start 0``), then confirm the pick on scenes used
for nothing else (``--start 200``).

    python benchmarks/editing.py --checkpoint runs/shapes_64/checkpoints/latest --clip runs/clip_shapes \\
        --num-cases 50 --out runs/bench/editing.json --examples runs/bench/editing_examples.png

Prints one JSON object (numbers, protocol, machine); ``--out`` writes it too; a grid also
prints one markdown row per setting.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from layout2img.data.shapes_render import COLOR_RGB  # noqa: E402
from layout2img.errors import Layout2ImgError  # noqa: E402
from layout2img.io import IMAGE_SUFFIXES, atomic_write_text  # noqa: E402
from layout2img.vocab import SHAPES_THINGS  # noqa: E402
from machine import check_quiet, machine, machine_line  # noqa: E402  (benchmarks/machine.py)

COLORS = list(COLOR_RGB)
PALETTE = torch.tensor([COLOR_RGB[c] for c in COLORS], dtype=torch.float32) / 255.0  # (8, 3) in [0, 1]


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], quantised to 8 bits as a saved PNG would be."""
    return torch.round((image.float().clamp(-1, 1) + 1) * 127.5) / 255.0


def mean_rgb(image01: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    return (image01 * m[None]).sum(dim=(1, 2)) / m.sum().clamp(min=1)


def nearest_color(rgb: torch.Tensor) -> str:
    return COLORS[int(((PALETTE - rgb[None].cpu()) ** 2).sum(dim=1).argmin())]


def pixel_vote_color(image01: torch.Tensor, mask: torch.Tensor) -> str:
    """The Shapes colour that most pixels inside ``mask`` are nearest to (the primary judge: on
    real val images it names the described colour more often than the mean does, since dark
    outlines and shading pull a mean towards black)."""
    pixels = image01[:, mask].T.cpu()  # (N, 3)
    nearest = ((pixels[:, None, :] - PALETTE[None]) ** 2).sum(dim=2).argmin(dim=1)
    return COLORS[int(torch.bincount(nearest, minlength=len(COLORS)).argmax())]


def mean_rgb_color(image01: torch.Tensor, mask: torch.Tensor) -> str:
    """The Shapes colour nearest to the mean RGB inside ``mask`` (the second judge)."""
    return nearest_color(mean_rgb(image01, mask))


#: Colour judges, none of them a CLIP: name -> f(image in [0, 1] (3, H, W), bool mask (H, W)) -> colour.
JUDGES = {"pixel_vote": pixel_vote_color, "mean_rgb": mean_rgb_color}
JUDGE_PROTOCOL = {
    "pixel_vote": "each pixel inside the object's generated mask (visible weight > 0.5) takes the nearest of the 8 "
                  "Shapes colours (COLOR_RGB); the most frequent wins; images quantised to 8 bit",
    "mean_rgb": "the nearest of the 8 Shapes colours to the mean RGB inside the mask",
}


def parse_description(text: str | None) -> tuple[str, str] | None:
    """'a red circle' -> ('red', 'circle'); anything else -> None."""
    if not text:
        return None
    words = text.split()
    if len(words) >= 2 and words[-2] in COLOR_RGB and words[-1] in SHAPES_THINGS:
        return words[-2], words[-1]
    return None


def item_graph(item: dict, vocab) -> dict:
    """A val item as an sg2im dict with its ground-truth boxes (no __image__, no __in_image__)."""
    objs = item["objs"].tolist()[:-1]
    rels = [[s, vocab.predicate_names[p], o] for s, p, o in item["triples"].tolist() if p != 0]
    return {"objects": [vocab.object_names[o] for o in objs], "relationships": rels,
            "boxes": [[round(float(v), 6) for v in b] for b in item["boxes"][:-1].tolist()]}


def val_set(data_root: str):
    from layout2img.config import load_config
    from layout2img.data.build import build_dataset

    cfg = load_config(None, [f"data.root={data_root}"])
    return build_dataset(dict(cfg.data), "val", seed=int(cfg.seed))


def judge_on_real(dataset, limit: int) -> dict:
    """Each judge's accuracy on real images with GT masks and descriptions."""
    from layout2img.models.layout import boxes_to_masks_full

    right, total = dict.fromkeys(JUDGES, 0), 0
    for index in range(min(limit, len(dataset))):
        item = dataset[index]
        img = (item["image"].float() + 1) / 2
        full = boxes_to_masks_full(item["boxes"].float(), item["masks"].float(), img.shape[-2], img.shape[-1])
        for k, d in enumerate(item["descriptions"]):
            parsed = parse_description(d)
            if parsed is None or (full[k] > 0.5).sum() < 16:
                continue
            total += 1
            for name, judge in JUDGES.items():
                right[name] += judge(img, full[k] > 0.5) == parsed[0]
    return {"objects": total, **{f"accuracy_{name}": r / max(total, 1) for name, r in right.items()}}


#: A grid setting: RESTARTSxSTEPS, then optional :pN (patience), :sN (screen), :aN (augment), :lrX.
SETTING = re.compile(r"^(\d+)x(\d+)((?::(?:p|s|a)\d+|:lr[0-9.eE+-]+)*)$")
SETTING_KEYS = {"p": "patience", "s": "screen", "a": "augment", "lr": "lr"}


def parse_setting(spec: str) -> dict:
    """'2x30:p2:s8' -> {'restarts': 2, 'steps': 30, 'patience': 2, 'screen': 8}."""
    m = SETTING.match(spec.strip())
    if not m:
        raise ValueError(f"--grid {spec!r}: expected RESTARTSxSTEPS[:pN][:sN][:aN][:lrX], e.g. 2x30:p2")
    setting = {"restarts": int(m.group(1)), "steps": int(m.group(2))}
    for part in filter(None, m.group(3).split(":")):
        key = "lr" if part.startswith("lr") else part[0]
        value = part[len(key):]
        setting[SETTING_KEYS[key]] = float(value) if key == "lr" else int(value)
    return setting


@dataclass
class Case:
    """One edit to make: a val scene's graph, the target object, its mask and colours, the text."""

    val_index: int
    image_id: int
    seed: int
    graph: dict
    k: int
    hard: torch.Tensor  # (H, W) bool: the object's generated mask
    original: torch.Tensor  # (3, H, W) in [0, 1], 8-bit
    current: str
    target: str
    gt_color: str | None

    @property
    def text(self) -> str:
        return f"a {self.target} {self.graph['objects'][self.k]}"


def find_cases(model, dataset, args) -> list[Case]:
    """The first ``--num-cases`` val scenes from ``--start`` with a thing of ``--min-pixels``."""
    cases = []
    for index in range(args.start, len(dataset)):
        if len(cases) >= args.num_cases:
            break
        item = dataset[index]
        graph = item_graph(item, model.vocab)
        seed = len(cases)
        out = model.generate(graph, seed=seed, return_output=True)
        weights = out.layout.geometry.weights
        things = [k for k, name in enumerate(graph["objects"]) if name in SHAPES_THINGS]
        sizes = {k: int((weights[k] > 0.5).sum()) for k in things}
        big = [k for k in things if sizes[k] >= args.min_pixels]
        if not big:
            continue
        k = max(big, key=lambda j: sizes[j])
        hard = weights[k] > 0.5
        original = to_unit(out.images[0])
        current = pixel_vote_color(original, hard)
        rng = random.Random(f"edit:{args.seed}:{len(cases)}")
        target = rng.choice([c for c in COLORS if c != current])
        gt = parse_description(item["descriptions"][k])
        cases.append(Case(index, item["image_id"], seed, graph, k, hard, original, current, target,
                          gt[0] if gt else None))
    return cases


def run_edits(model, clip, cases: list[Case], setting: dict, args, examples: list | None = None) -> list[dict]:
    """Each case edited with ``setting`` (edit_image keywords over the flags'), judged and timed."""
    from layout2img.editing import edit_image

    cfg = {"steps": args.steps, "lr": args.lr, "strength": args.strength, "preserve_weight": args.preserve_weight,
           "modulation": args.modulation, "modulation_at": args.modulation_at, "augment": args.augment,
           "jitter": args.jitter, "restarts": args.restarts, "patience": args.patience, "screen": args.screen,
           "cluster_starts": args.cluster_starts, "auto_negatives": args.auto_negatives, **setting}
    results = []
    t0 = time.perf_counter()
    for case in cases:
        if args.max_seconds and time.perf_counter() - t0 > args.max_seconds:
            break
        shape = case.graph["objects"][case.k]
        negatives = [f"a {c} {shape}" for c in COLORS if c != case.target] if args.negatives else []
        ts, cpu = time.perf_counter(), time.process_time()
        res = edit_image(model, case.graph, seed=case.seed, target=case.k, text=case.text, negatives=negatives,
                         clip=clip, progress=False, **cfg)
        seconds, cpu_seconds = time.perf_counter() - ts, time.process_time() - cpu
        edited = to_unit(res.image)
        assert torch.equal(to_unit(res.original), case.original)
        got = pixel_vote_color(edited, case.hard)
        got_mean = mean_rgb_color(edited, case.hard)
        diff = (edited - case.original).abs()
        out_comp = res.mask == 0
        results.append({
            "val_index": case.val_index, "image_id": case.image_id, "seed": case.seed, "object": case.k,
            "shape": shape, "pixels": int(case.hard.sum()), "gt_color": case.gt_color,
            "original_color": case.current, "target": case.target, "result_color": got, "success": got == case.target,
            "result_color_mean_rgb": got_mean, "success_mean_rgb": got_mean == case.target,
            "mean_abs_change_outside_object": float(diff[:, ~case.hard].mean()),
            "mean_abs_change_outside_composite_mask": float(diff[:, out_comp].mean()) if out_comp.any() else 0.0,
            "mean_abs_change_inside_object": float(diff[:, case.hard].mean()),
            "clip_before": res.clip_before, "clip_after": res.clip_after, "improved": res.improved,
            "steps_run": len(res.history), "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        })
        c = results[-1]
        print(f"case {len(results):3d} val {case.val_index:4d} {shape:8s} {case.current:>6s} -> {case.target:6s}: "
              f"got {got:6s} {'ok ' if c['success'] else 'MISS'} outside {c['mean_abs_change_outside_object']:.4f} "
              f"clip {res.clip_before:.3f}->{res.clip_after:.3f} ({seconds:.1f}s, {c['steps_run']} steps)",
              file=sys.stderr, flush=True)
        if examples is not None and len(examples) < 8:
            examples.append([res.original.cpu(), res.image.cpu()])
    return results


def summarize_edits(cases: list[dict]) -> dict:
    """Success (both judges), change outside and inside, time and steps per edit."""
    n = len(cases)
    per_target, per_class, confusion = {}, {}, {}
    for c in cases:
        for table, key in ((per_target, c["target"]), (per_class, c["shape"])):
            s = table.setdefault(key, [0, 0])
            s[0] += c["success"]
            s[1] += 1
        row = confusion.setdefault(c["target"], {})
        row[c["result_color"]] = row.get(c["result_color"], 0) + 1
    return {
        "success_rate": sum(c["success"] for c in cases) / n,
        "success_rate_mean_rgb_judge": sum(c["success_mean_rgb"] for c in cases) / n,
        "median_seconds_per_edit": statistics.median(c["seconds"] for c in cases),
        "median_cpu_seconds_per_edit": statistics.median(c["cpu_seconds"] for c in cases),
        "median_steps_per_edit": statistics.median(c["steps_run"] for c in cases),
        "nothing_better": sum(not c["improved"] for c in cases),
        "mean_abs_change_outside_object": sum(c["mean_abs_change_outside_object"] for c in cases) / n,
        "max_abs_change_outside_object_per_case": max(c["mean_abs_change_outside_object"] for c in cases),
        "mean_abs_change_outside_composite_mask": sum(c["mean_abs_change_outside_composite_mask"] for c in cases) / n,
        "mean_abs_change_inside_object": sum(c["mean_abs_change_inside_object"] for c in cases) / n,
        "original_color_matches_description": (sum(c["original_color"] == c["gt_color"] for c in cases)
                                               / max(1, sum(c["gt_color"] is not None for c in cases))),
        "success_by_target_color": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_target.items())},
        "success_by_class": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_class.items())},
        "confusion_asked_to_got": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "num_cases": n,
    }


GRID_HEADER = ("| setting (restarts x steps[:patience:screen:views:lr]) | success (pixel vote) | median s / edit "
               "| median CPU s / edit | median steps | cases | machine |\n|---|---|---|---|---|---|---|")


def grid_row(label: str, summary: dict, line: str) -> str:
    return (f"| {label} | {100 * summary['success_rate']:.1f} % | {summary['median_seconds_per_edit']:.2f} "
            f"| {summary['median_cpu_seconds_per_edit']:.2f} | {summary['median_steps_per_edit']:g} "
            f"| {summary['num_cases']} | {line} |")


def confusion_table(summary: dict) -> str:
    """The confusion of a summary as markdown: one row per colour asked, one column per colour got."""
    table = summary["confusion_asked_to_got"]
    got = sorted({g for row in table.values() for g in row})
    lines = ["| asked \\ got | " + " | ".join(got) + " | success |", "|---" * (len(got) + 2) + "|"]
    for asked, row in table.items():
        lines.append(f"| {asked} | " + " | ".join(str(row.get(g, 0)) for g in got)
                     + f" | {summary['success_by_target_color'][asked]} |")
    return "\n".join(lines)


def check_args(args) -> None:
    """ValueError (one line naming the option) for values that would fail later, after a model load."""
    if args.examples is not None and Path(args.examples).suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--examples {args.examples}: expected an image file name ending in "
                         f"{', '.join(IMAGE_SUFFIXES)} (the grid of the first 8 cases is written there)")
    for name in ("num_cases", "steps", "restarts", "augment"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.start < 0 or args.min_pixels < 1:
        raise ValueError("--start must be >= 0 and --min-pixels >= 1")


def main(argv=None) -> int:
    from layout2img.editing import EditSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_64/checkpoints/latest")
    ap.add_argument("--clip", default="runs/clip_shapes", help="the guiding CLIP (TextEncoder.load spec)")
    ap.add_argument("--data", default="data/shapes", help="the Shapes dataset folder")
    ap.add_argument("--num-cases", type=int, default=50)
    ap.add_argument("--start", type=int, default=0, help="the first val index to consider (a held-out set: 100)")
    ap.add_argument("--min-pixels", type=int, default=48, help="smallest target (pixels of its mask)")
    # edit_image's own defaults (EditSettings), so the benchmark measures what users get
    ap.add_argument("--steps", type=int, default=EditSettings.steps)
    ap.add_argument("--lr", type=float, default=EditSettings.lr)
    ap.add_argument("--strength", type=float, default=EditSettings.strength)
    ap.add_argument("--preserve-weight", type=float, default=EditSettings.preserve_weight)
    ap.add_argument("--modulation", default=EditSettings.modulation, action=argparse.BooleanOptionalAction,
                    help="edit_image(modulation=...)")
    ap.add_argument("--modulation-at", default=EditSettings.modulation_at, choices=("rgb", "output", "decoder"))
    ap.add_argument("--augment", type=int, default=EditSettings.augment, help="CLIP views per step")
    ap.add_argument("--restarts", type=int, default=EditSettings.restarts)
    ap.add_argument("--patience", type=int, default=EditSettings.patience,
                    help="end a run after this many checks without improvement (0: never)")
    ap.add_argument("--screen", type=int, default=EditSettings.screen,
                    help="random starts scored before the later runs, which start from the best of them")
    ap.add_argument("--jitter", type=float, default=EditSettings.jitter, help="view jitter (fraction of the box)")
    ap.add_argument("--cluster-starts", default=EditSettings.cluster_starts, action=argparse.BooleanOptionalAction,
                    help="edit_image(cluster_starts=...): the class's style clusters scored as starts")
    ap.add_argument("--auto-negatives", default=EditSettings.auto_negatives, action=argparse.BooleanOptionalAction,
                    help="edit_image(auto_negatives=...): the other colours as negatives when none are given")
    ap.add_argument("--negatives", action="store_true",
                    help="pass the other 7 colours of the same shape as negatives (contrastive guidance)")
    ap.add_argument("--grid", nargs="+", default=None, metavar="RxS[:pN][:sN][:aN][:lrX]",
                    help="run the cases once per setting and report success against time per edit")
    ap.add_argument("--seed", type=int, default=0, help="target colours are drawn with this seed")
    ap.add_argument("--examples", default=None, metavar="FILE.png",
                    help="an image FILE (.png, .jpg, ...) to write with the first 8 cases (original | edited)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="start no new case after this long, per setting (0: no limit)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    args = ap.parse_args(argv)
    try:
        grid = [(spec, parse_setting(spec)) for spec in args.grid] if args.grid else [("flags", {})]
        check_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from layout2img.generate import load_model
        from layout2img.models.text import TextEncoder

        model = load_model(args.checkpoint, args.device).eval()
        clip = TextEncoder.load(args.clip)
        dataset = val_set(args.data)
        guard = check_quiet(allow_busy=True)  # times are stamped "busy" when measured beside other work
        t0 = time.perf_counter()
        cases = find_cases(model, dataset, args)
        if not cases:
            print("error: no val scene has a large enough thing", file=sys.stderr)
            return 2
        examples: list = []
        runs = []
        for label, setting in grid:
            edits = run_edits(model, clip, cases, setting, args, examples if not runs else None)
            runs.append((label, setting, edits))
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    protocol = {
        "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
        "clip": str(args.clip), "data": str(args.data), "split": "val", "start": args.start,
        "min_pixels": args.min_pixels, "steps": args.steps, "lr": args.lr, "strength": args.strength,
        "preserve_weight": args.preserve_weight, "modulation": args.modulation, "modulation_at": args.modulation_at,
        "augment": args.augment, "jitter": args.jitter, "restarts": args.restarts, "patience": args.patience,
        "screen": args.screen, "negatives": "the 7 other colours, same shape" if args.negatives else None,
        "cluster_starts": args.cluster_starts, "auto_negatives": args.auto_negatives,
        "seed": args.seed, "judge": JUDGE_PROTOCOL["pixel_vote"], "second_judge": JUDGE_PROTOCOL["mean_rgb"],
        "outside": "mean |edited - original| in [0, 1] over pixels outside the object's mask (3 channels)",
        "time": "per edit_image call: wall (perf_counter) and CPU (process_time, all threads) seconds",
    }
    record = machine(guard=guard)
    if args.grid:
        report = {"benchmark": "editing_grid", "grid": [{"setting": label, **setting, **summarize_edits(edits)}
                                                         for label, setting, edits in runs],
                  "seconds_total": round(time.perf_counter() - t0, 1), "protocol": protocol, "machine": record,
                  "cases": {label: edits for label, _, edits in runs}}
    else:
        edits = runs[0][2]
        report = {"benchmark": "editing", **summarize_edits(edits),
                  "judge_accuracy_on_real": judge_on_real(dataset, 200),
                  "seconds_total": round(time.perf_counter() - t0, 1), "protocol": protocol, "machine": record,
                  "cases": edits}
    if args.examples:
        from layout2img.visualize import save_grid

        save_grid(args.examples, examples)
    text = json.dumps(report, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=1))
    if not args.grid:
        print(confusion_table(report))
    if args.grid:
        print(GRID_HEADER)
        print("\n".join(grid_row(g["setting"], g, machine_line(record)) for g in report["grid"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
