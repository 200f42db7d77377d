"""Text-guided colour edits on Shapes, judged by pixel statistics (not by the CLIP that guided them).

For each of the first validation scenes that has a thing (circle, square, ...) covering at least
``--min-pixels`` pixels of the generated layout, the largest such thing is the target:

1. the scene graph is the val image's objects, relations and ground-truth boxes (masks are
   predicted, as `layout2img generate` does with boxes); case ``i`` uses seed ``i``;
2. ``original = model.generate(graph, seed)``; its current colour is the Shapes colour
   that most pixels inside the object's mask (the generated layout's visible weight > 0.5) are
   nearest to (``pixel_vote_color``; ``layout2img.data.shapes.COLOR_RGB``);
3. the target colour is drawn (fixed seed) among the 7 others; the text is "a <colour> <shape>";
4. ``edit_image(model, graph, seed=seed, target=object, text=...)`` guided by ``--clip``;
5. success: the same judge, on the same mask of the edited image, names the target colour (also
   reported: the judge "nearest to the mean RGB", which dark outlines pull towards black). Change outside: mean |edited - original| over the pixels outside the
   object's mask (images in [0, 1], all three channels), i.e. the feathered ring of the
   composite mask counts as outside; also reported over the pixels outside the composite mask
   (0 by construction).

As a check on the judges, each is applied to the *real* val images with their ground-truth masks
and descriptions (``judge_accuracy_on_real``).

    python benchmarks/editing.py --checkpoint runs/shapes_64/checkpoints/latest --clip runs/clip_shapes \\
        --num-cases 50 --out runs/bench/editing.json --examples runs/bench/editing_examples.png

Prints one JSON object (numbers, protocol, machine); ``--out`` writes it too.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from layout2img.data.shapes import COLOR_RGB  # noqa: E402
from layout2img.errors import Layout2ImgError  # noqa: E402
from layout2img.io import atomic_write_text  # noqa: E402
from layout2img.vocab import SHAPES_THINGS  # noqa: E402
from machine import machine  # noqa: E402  (benchmarks/machine.py)

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/shapes_64/checkpoints/latest")
    ap.add_argument("--clip", default="runs/clip_shapes", help="the guiding CLIP (TextEncoder.load spec)")
    ap.add_argument("--data", default="data/shapes", help="the Shapes dataset folder")
    ap.add_argument("--num-cases", type=int, default=50)
    ap.add_argument("--start", type=int, default=0, help="the first val index to consider (a held-out set: 100)")
    ap.add_argument("--min-pixels", type=int, default=48, help="smallest target (pixels of its mask)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--preserve-weight", type=float, default=1.0)
    ap.add_argument("--modulation", action="store_true", help="edit_image(modulation=True)")
    ap.add_argument("--modulation-at", default="rgb", choices=("rgb", "output", "decoder"))
    ap.add_argument("--augment", type=int, default=4, help="CLIP views per step")
    ap.add_argument("--restarts", type=int, default=6)
    ap.add_argument("--jitter", type=float, default=0.1, help="view jitter (fraction of the box)")
    ap.add_argument("--negatives", action="store_true",
                    help="pass the other 7 colours of the same shape as negatives (contrastive guidance)")
    ap.add_argument("--seed", type=int, default=0, help="target colours are drawn with this seed")
    ap.add_argument("--examples", default=None, help="a PNG grid of the first 8 cases (original | edited)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--max-seconds", type=float, default=0, help="start no new case after this long (0: no limit)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    args = ap.parse_args(argv)
    try:
        from layout2img.editing import edit_image
        from layout2img.generate import load_model
        from layout2img.models.text import TextEncoder

        model = load_model(args.checkpoint, args.device).eval()
        clip = TextEncoder.load(args.clip)
        dataset = val_set(args.data)
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vocab = model.vocab
    cases, examples = [], []
    t0 = time.perf_counter()
    for index in range(args.start, len(dataset)):
        if len(cases) >= args.num_cases or (args.max_seconds and time.perf_counter() - t0 > args.max_seconds):
            break
        item = dataset[index]
        graph = item_graph(item, vocab)
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
        shape = graph["objects"][k]
        text = f"a {target} {shape}"
        ts = time.perf_counter()
        negatives = [f"a {c} {shape}" for c in COLORS if c != target] if args.negatives else []
        res = edit_image(model, graph, seed=seed, target=k, text=text, negatives=negatives, steps=args.steps, lr=args.lr,
                         strength=args.strength, preserve_weight=args.preserve_weight, modulation=args.modulation,
                         modulation_at=args.modulation_at, augment=args.augment, jitter=args.jitter, restarts=args.restarts, clip=clip,
                         progress=False)
        seconds = time.perf_counter() - ts
        edited = to_unit(res.image)
        assert torch.equal(to_unit(res.original), original)
        got = pixel_vote_color(edited, hard)
        got_mean = mean_rgb_color(edited, hard)
        diff = (edited - original).abs()
        out_obj = ~hard
        out_comp = res.mask == 0
        gt = parse_description(item["descriptions"][k])
        cases.append({
            "val_index": index, "image_id": item["image_id"], "seed": seed, "object": k, "shape": shape,
            "pixels": sizes[k], "gt_color": gt[0] if gt else None, "original_color": current, "target": target,
            "result_color": got, "success": got == target,
            "result_color_mean_rgb": got_mean, "success_mean_rgb": got_mean == target,
            "mean_abs_change_outside_object": float(diff[:, out_obj].mean()),
            "mean_abs_change_outside_composite_mask": float(diff[:, out_comp].mean()) if out_comp.any() else 0.0,
            "mean_abs_change_inside_object": float(diff[:, hard].mean()),
            "clip_before": res.clip_before, "clip_after": res.clip_after, "seconds": round(seconds, 2),
        })
        c = cases[-1]
        print(f"case {len(cases):3d} val {index:4d} {shape:8s} {current:>6s} -> {target:6s}: got {got:6s} "
              f"{'ok ' if c['success'] else 'MISS'} outside {c['mean_abs_change_outside_object']:.4f} "
              f"clip {res.clip_before:.3f}->{res.clip_after:.3f} ({seconds:.1f}s)", file=sys.stderr, flush=True)
        if len(examples) < 8:
            examples.append([res.original.cpu(), res.image.cpu()])
    n = len(cases)
    if n == 0:
        print("error: no val scene has a large enough thing", file=sys.stderr)
        return 2
    success = sum(c["success"] for c in cases) / n
    outside = sum(c["mean_abs_change_outside_object"] for c in cases) / n
    per_target = {}
    for c in cases:
        s = per_target.setdefault(c["target"], [0, 0])
        s[0] += c["success"]
        s[1] += 1
    report = {
        "benchmark": "editing",
        "success_rate": success,
        "success_rate_mean_rgb_judge": sum(c["success_mean_rgb"] for c in cases) / n,
        "mean_abs_change_outside_object": outside,
        "max_abs_change_outside_object_per_case": max(c["mean_abs_change_outside_object"] for c in cases),
        "mean_abs_change_outside_composite_mask": sum(c["mean_abs_change_outside_composite_mask"] for c in cases) / n,
        "mean_abs_change_inside_object": sum(c["mean_abs_change_inside_object"] for c in cases) / n,
        "original_color_matches_description": (sum(c["original_color"] == c["gt_color"] for c in cases)
                                               / max(1, sum(c["gt_color"] is not None for c in cases))),
        "success_by_target_color": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per_target.items())},
        "judge_accuracy_on_real": judge_on_real(dataset, 200),
        "num_cases": n,
        "seconds_total": round(time.perf_counter() - t0, 1),
        "protocol": {
            "checkpoint": str(args.checkpoint), "training_step": (model.metadata or {}).get("training_step"),
            "clip": str(args.clip), "data": str(args.data), "split": "val", "start": args.start, "min_pixels": args.min_pixels,
            "steps": args.steps, "lr": args.lr, "strength": args.strength, "preserve_weight": args.preserve_weight,
            "modulation": args.modulation, "modulation_at": args.modulation_at,
            "augment": args.augment, "jitter": args.jitter, "restarts": args.restarts, "negatives": "the 7 other colours, same shape" if args.negatives else None,
            "seed": args.seed, "judge": JUDGE_PROTOCOL["pixel_vote"], "second_judge": JUDGE_PROTOCOL["mean_rgb"],
            "outside": "mean |edited - original| in [0, 1] over pixels outside the object's mask (3 channels)",
        },
        "machine": machine(),
        "cases": cases,
    }
    if args.examples:
        from layout2img.visualize import save_grid

        save_grid(args.examples, examples)
    text = json.dumps(report, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "cases"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
