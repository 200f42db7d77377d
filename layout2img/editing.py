"""Text-guided editing: change one object (or a box, or the whole picture) to match a text.

    layout2img edit --checkpoint runs/shapes_64/checkpoints/latest --graph scene.json --object 0 \\
        --text "a green circle" --out edited.png --seed 3 --clip runs/clip_shapes

The edit starts from exactly the image ``layout2img generate scene.json --seed 3`` makes: the
style codes ``generate`` drew are taken from its output and fed back as fixed codes, so step 0
reproduces it bit for bit. Then the chosen object's style code (the model's only noise input)
is optimised with Adam - with ``modulation`` also a per-channel scale and shift of the
generator's last features inside the region (and on text models the caption embedding FiLM
reads) - to raise the CLIP similarity between the region and the text, while an L1 term keeps the generator's output outside the region where it was. The result is the masked
composite ``mask * edited + (1 - mask) * original``, the mask being the object's soft layout
mask (or the box) grown by ``grow`` pixels and feathered, so pixels outside it are the original
ones exactly.

From Python::

    from layout2img.editing import edit_image
    result = edit_image(model, graph, seed=3, target=0, text="a green circle", clip="runs/clip_shapes")
    result.image      # (3, H, W) in [-1, 1]; result.original, result.mask, result.history
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DataError, GraphError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MODULATION_SITES = ("rgb", "output", "decoder")
SELECT_EVERY = 10  # steps between comparisons of the current edit with the best so far


@dataclass
class EditResult:
    """What :func:`edit_image` returns (images (3, H, W) in [-1, 1], masks (H, W) in [0, 1])."""

    image: Any  # the masked composite: the edit inside the mask, the original outside
    original: Any  # the image ``model.generate(graph, seed)`` makes
    mask: Any  # the composite's mask (region grown and feathered)
    region: Any  # the region itself: the object's layout mask, the box, or all ones
    edited: Any  # the generator's raw output for the chosen codes (before compositing)
    style_codes: Any  # (num_objects, style_dim) the codes of the result (None: style_dim 0)
    history: list[dict] = field(default_factory=list)  # per step: loss, clip, preserve
    clip_before: float = math.nan  # CLIP similarity of the region with the text, before / after
    clip_after: float = math.nan


def _guidance_encoder(model, clip):
    from .models.text import TextEncoder

    if clip is None:
        if model.text_encoder is None:
            raise ConfigError("edit: no CLIP to guide the edit: this model has no text encoder; pass clip=SPEC "
                              "(--clip runs/clip_shapes, the domain CLIP of `layout2img train-clip`)")
        return model.text_encoder
    if isinstance(clip, TextEncoder):
        return clip
    if isinstance(clip, (str, Path)):
        from .models.pipeline import TRAIN_CLIP_HINT, _looks_like_path

        spec = str(clip)
        if _looks_like_path(spec) and not Path(spec.partition("=")[2] or spec).expanduser().exists():
            raise ConfigError(f"--clip {spec}: no such CLIP folder or file; for the Shapes domain CLIP, "
                              f"{TRAIN_CLIP_HINT}")
        return TextEncoder.load(spec).freeze()
    raise ConfigError(f"edit: clip must be a TextEncoder, a spec string or None, got {type(clip).__name__}")


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'x0,y0,x1,y1' (normalised, origin top-left) -> a valid box, or a one-line ConfigError."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--box {text!r}: expected four numbers x0,y0,x1,y1 in [0, 1]")
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ConfigError(f"--box {text!r}: expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return values


def _box_mask(box, h: int, w: int, device):
    """(H, W) pixel coverage of a normalised box (fractional at its edges)."""
    import torch

    def cover(lo, hi, n):
        edges = torch.arange(n, dtype=torch.float32, device=device)
        return (torch.minimum(edges + 1, torch.tensor(hi * n, device=device))
                - torch.maximum(edges, torch.tensor(lo * n, device=device))).clamp(0, 1)

    x0, y0, x1, y1 = (float(v) for v in box)
    return cover(y0, y1, h)[:, None] * cover(x0, x1, w)[None, :]


def composite_mask(region, grow: int = 1, feather: int = 1):
    """The region (H, W) in [0, 1] grown by ``grow`` pixels (max filter) and softened by
    ``feather`` passes of a 3x3 box blur; every pixel the region touches stays at >= its value."""
    import torch
    import torch.nn.functional as F

    region = region[None, None].float()
    m = F.max_pool2d(region, 2 * grow + 1, stride=1, padding=grow) if grow > 0 else region
    for _ in range(max(0, feather)):
        m = F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return torch.maximum(m, region)[0, 0].clamp(0, 1)


def _modulation_site(generator, where: str):
    """The module whose input (first argument) the edit's feature modulation scales and shifts."""
    head = generator.enhancers[-1].to_rgb if generator.n_local_enhancers else generator.global_net.to_rgb
    if where == "output":
        return head
    if where == "rgb":  # the RGB head's tanh: its input is the image before the squashing
        return head[-1]
    up = generator.global_net.up
    return up[0] if len(up) else generator.global_net.to_rgb


def _site_channels(generator, site, layout_in) -> int:
    """Channels of the site's input, found by one forward pass."""
    import torch

    seen: list[int] = []
    hook = site.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape[1]))
    try:
        with torch.no_grad():
            generator(layout_in)
    finally:
        hook.remove()
    return seen[0]


def _one_graph(model, graph):
    from .graph import SceneGraph

    if isinstance(graph, SceneGraph):
        return graph
    if isinstance(graph, dict):
        return SceneGraph.from_dict(graph, model.vocab, source="<edit>", index=0)
    raise GraphError(f"edit: expected one SceneGraph or sg2im dict, got {type(graph).__name__}")


def edit_image(model, graph, *, text: str, seed: int = 0, target: int | Sequence[float] | None = None,
               steps: int = 50, lr: float = 0.1, strength: float = 1.0, preserve_weight: float = 1.0,
               code_weight: float = 0.0, modulation: bool = False, clip=None, grow: int = 1, feather: int = 1,
               augment: int = 4, jitter: float = 0.1, negatives: Sequence[str] = (),
               modulation_at: str = "rgb", restarts: int = 6, init_scale: float = 1.0,
               progress: bool = True) -> EditResult:
    """Edit the image ``model.generate(graph, seed=seed)`` makes so its region matches ``text``.

    ``target``: an object index of the graph (its layout mask is the region; its style code is
    optimised), a box ``(x0, y0, x1, y1)`` (the codes of the objects visible in it), or None (the
    whole image from a caption: every code). ``steps`` Adam steps at ``lr``; the loss is
    ``strength * (1 - cos(CLIP(crop), text)) + preserve_weight * mean |edited - original|``
    outside the mask ``+ code_weight * mean(code**2)`` (a pull towards the N(0, I) prior).
    ``modulation`` also optimises the generator's modulation: a per-channel scale and shift of
    one of its feature maps, applied inside the mask (``modulation_at='rgb'``, the default: the
    RGB head's output before the tanh, a colour transform of the region - the best site for colour
    edits in the editing benchmark; ``'output'``: the last features before the RGB head, which can
    also change texture; ``'decoder'``: the input of the decoder, after the residual blocks - the
    later layers keep colours like the data's), and for models with ``text_dim > 0``
    an offset to the caption embedding that drives FiLM. ``clip``: the guiding CLIP (a :class:`TextEncoder` or a spec such as
    ``runs/clip_shapes``; default the model's own text encoder). The CLIP term averages over
    ``augment`` views of the region (the crop and ``augment - 1`` copies jittered by up to
    ``jitter`` of its size, drawn from ``seed``). ``negatives``: texts the region should *not*
    match ("a blue circle"); the CLIP term then adds the cross-entropy of ``text`` against them.
    Every ``SELECT_EVERY`` steps (and at the last) the current state is scored on one fixed set
    of views, and the best-scoring state is kept (step 0 = the original). ``restarts`` > 1 runs
    the optimisation again from random starts near the original (N(0, ``init_scale``) code
    offsets, half that for the modulation; drawn from ``seed``) and keeps the best over all runs. Deterministic on CPU for a given
    seed.
    """
    import torch
    from tqdm.auto import tqdm

    from .data.batch import collate
    from .models.layout import crop_boxes
    from .models.text import CROP_MARGIN

    if not isinstance(text, str) or not text.strip():
        raise ConfigError("edit: text must be a non-empty string")
    if isinstance(negatives, str) or not all(isinstance(t, str) and t.strip() for t in negatives):
        raise ConfigError("edit: negatives must be a list of non-empty strings")
    if modulation_at not in MODULATION_SITES:
        raise ConfigError(f"edit: modulation_at must be one of {', '.join(MODULATION_SITES)}, got {modulation_at!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ConfigError(f"edit: restarts must be a positive integer, got {restarts!r}")
    if not isinstance(augment, int) or augment < 1:
        raise ConfigError(f"edit: augment must be a positive integer, got {augment!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"edit: steps must be a non-negative integer, got {steps!r}")
    for name, v in (("lr", lr), ("strength", strength), ("preserve_weight", preserve_weight),
                    ("code_weight", code_weight)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"edit: {name} must be a finite number >= 0, got {v!r}")
    if model.style_dim == 0 and not modulation:
        raise ConfigError("edit: this model has no style codes (style_dim=0); only modulation=True can edit it")
    graph = _one_graph(model, graph)
    n = graph.num_objects
    encoder = _guidance_encoder(model, clip)

    was_training = model.training
    model.eval()
    try:
        device = model.device
        encoder.to(device)
        out = model.generate(graph, seed=seed, return_output=True)
        original = out.images[0].detach()
        h, w = original.shape[-2:]
        batch = collate([graph.to_item(model.vocab)]).to(device)
        texts = model.encode_texts(batch) if model.text_encoder is not None else None
        weights = out.layout.geometry.weights.detach()  # (O, H, W) visible share of each object

        # -- the region, the crop CLIP looks at, and the codes that may change -----------------
        if target is None:
            region = torch.ones(h, w, device=device)
            crop_box = None
            rows = list(range(n))
        elif isinstance(target, int) and not isinstance(target, bool):
            if not 0 <= target < n:
                raise DataError(f"--object {target}: the graph has {n} objects (0-{n - 1})")
            region = weights[target]
            crop_box = out.boxes[target].detach().float()
            rows = [target]
        else:
            box = parse_box(",".join(str(v) for v in target)) if not isinstance(target, str) else parse_box(target)
            region = _box_mask(box, h, w, device)
            crop_box = torch.tensor(box, dtype=torch.float32, device=device)
            inside = (weights[:n] * region).sum(dim=(1, 2))
            rows = [i for i in range(n) if inside[i] > 0.05 * float(region.sum())] or \
                   [int(inside.argmax())]
        mask = region.clone() if target is None else composite_mask(region, grow, feather)
        text_emb = encoder.encode_text([" ".join(text.split())]).to(device)
        neg_emb = encoder.encode_text([" ".join(t.split()) for t in negatives]).to(device) if negatives else None
        scale = getattr(encoder.model, "logit_scale", None)
        logit_scale = float(scale.exp()) if isinstance(scale, torch.Tensor) else 100.0

        base_codes = out.style_codes.detach().float() if out.style_codes is not None else None
        layout = out.layout
        semantic_edges = torch.cat([layout.semantic, layout.edges.to(layout.semantic.dtype)], 1).detach()
        geometry = layout.geometry
        channels_last = model._wants_channels_last()
        if texts is not None and bool(texts.text_mask.any()):
            cap_emb, cap_mask = texts.text_emb, texts.text_mask
        else:
            cap_emb = torch.zeros(1, model.text_dim, device=device) if model.text_dim else None
            cap_mask = None

        # what may change: the codes of the chosen rows; with ``modulation`` also a per-channel
        # scale and shift of the generator's last features inside the region, and (text models)
        # an offset to the caption embedding that FiLM reads
        def layout_input(codes):
            """The generator's input: the fixed layout channels and the style map of ``codes``."""
            parts = [semantic_edges]
            if codes is not None and model.style_dim > 0:
                parts.append(geometry.spread(codes.to(geometry.weights.dtype)).to(semantic_edges.dtype))
            layout_in = torch.cat(parts, 1)
            return layout_in.contiguous(memory_format=torch.channels_last) if channels_last else layout_in

        state: dict[str, torch.Tensor] = {}
        if model.style_dim > 0:
            state["codes"] = torch.zeros(len(rows), model.style_dim, device=device, requires_grad=True)
        site = _modulation_site(model.generator, modulation_at) if modulation else None
        if modulation:
            state["gamma"] = torch.zeros(_site_channels(model.generator, site, layout_input(base_codes)),
                                         device=device, requires_grad=True)
            state["beta"] = torch.zeros_like(state["gamma"], requires_grad=True)
            if model.text_dim > 0:
                state["film"] = torch.zeros(1, model.text_dim, device=device, requires_grad=True)
        params = list(state.values())
        row_index = torch.tensor(rows, dtype=torch.long, device=device)

        def render(values: dict):
            codes = base_codes
            if "codes" in values:
                codes = base_codes.index_add(0, row_index, values["codes"])
            layout_in = layout_input(codes)
            hook = None
            if "gamma" in values:
                def modulate(_module, inputs):
                    h = inputs[0]
                    m = mask.to(h.dtype)
                    if tuple(m.shape) != tuple(h.shape[-2:]):  # the region at the features' resolution
                        m = torch.nn.functional.interpolate(m[None, None], size=h.shape[-2:], mode="area")[0, 0]
                    g, b = values["gamma"].to(h.dtype)[None, :, None, None], values["beta"].to(h.dtype)[None, :, None, None]
                    return (h * (1 + m * g) + m * b, *inputs[1:])

                hook = site.register_forward_pre_hook(modulate)
            try:
                if "film" in values:  # the offset switches FiLM on even for an image without a caption
                    image = model._run_generator(layout_in, cap_emb + values["film"], None, "full")
                else:
                    image = model._run_generator(layout_in, cap_emb if cap_mask is not None else None, cap_mask,
                                                 "full")
            finally:
                if hook is not None:
                    hook.remove()
            return image[0].float().clamp(-1, 1), codes

        full_box = torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
        view_box = crop_box if crop_box is not None else full_box
        jitter_rng = torch.Generator(device="cpu").manual_seed(int(seed))

        def views(count: int) -> torch.Tensor:
            """The crop box, then ``count - 1`` jittered copies (shifted and scaled by up to
            ``jitter`` of its size): the similarity is averaged over them, so the edit cannot
            win by an adversarial pattern that only works for one exact crop."""
            boxes = view_box[None].repeat(count, 1)
            if count > 1:
                size = (view_box[2:] - view_box[:2]).repeat(2)
                noise = (torch.rand(count - 1, 4, generator=jitter_rng) * 2 - 1).to(device) * jitter * size
                boxes[1:] = boxes[1:] + noise
                lo = boxes[:, :2].clamp(0, 1)
                hi = torch.maximum(boxes[:, 2:].clamp(0, 1), lo + 1e-3)
                boxes = torch.cat([lo, hi], dim=1)
            return boxes

        def embed_views(image, boxes):
            margin = CROP_MARGIN if crop_box is not None else 0.0  # object crops as the CLIP saw them in training
            crops = crop_boxes(image[None], boxes, torch.zeros(len(boxes), dtype=torch.long, device=device),
                               encoder.image_size, margin=margin)
            return encoder.encode_image(crops)

        def similarity(image):
            return (embed_views(image, views(1)) @ text_emb[0]).mean()

        def guidance(image, boxes):
            """(CLIP term, similarity) over crops at ``boxes``: 1 - cos, plus with negatives the
            cross-entropy of the text against them at the CLIP's own temperature."""
            emb = embed_views(image, boxes)
            sim = (emb @ text_emb[0]).mean()
            if neg_emb is None:
                return 1 - sim, sim
            logits = logit_scale * emb @ torch.cat([text_emb, neg_emb]).T
            return 1 - sim - torch.log_softmax(logits, dim=1)[:, 0].mean(), sim

        def losses(edited, codes, boxes):
            comp = mask * edited + (1 - mask) * original
            term, sim = guidance(comp, boxes)
            outside = ((edited - original).abs() * (1 - mask)[None]).mean()
            total = strength * term + preserve_weight * outside
            if code_weight > 0 and codes is not None:
                total = total + code_weight * codes[row_index].square().mean()
            return total, sim, outside

        # Candidates are compared on one fixed set of views: picking the lowest of the noisy
        # per-step losses (fresh jitter each step) would favour lucky views, not better edits.
        select_boxes = views(max(8, augment))
        history: list[dict] = []
        best_loss, best = math.inf, {}
        init_rng = torch.Generator(device="cpu").manual_seed(int(seed) + 1)
        runs = restarts if steps > 0 and params else 1  # steps=0: the original, nothing else
        bar = tqdm(total=runs * (steps + 1), desc="edit", unit="step", disable=not progress or None, leave=False)
        for restart in range(runs):
            if restart > 0:  # a fresh start near the original (the first one starts at it)
                with torch.no_grad():
                    for name, p in state.items():
                        scale = init_scale if name == "codes" else 0.5 * init_scale
                        p.copy_(torch.randn(p.shape, generator=init_rng).to(device) * scale)
            optimiser = torch.optim.Adam(params, lr=lr) if params else None
            for step in range(steps + 1):
                with torch.enable_grad():
                    edited, codes = render(state)
                    total, sim, outside = losses(edited, codes, views(augment))
                record = {"restart": restart, "step": step, "loss": float(total.detach()),
                          "clip": float(sim.detach()), "preserve": float(outside.detach())}
                history.append(record)
                bar.update(1)
                bar.set_postfix(clip=f"{record['clip']:.3f}", refresh=False)
                if step % SELECT_EVERY == 0 or step == steps or optimiser is None:
                    with torch.no_grad():
                        selection_loss = float(losses(edited, codes, select_boxes)[0])
                    record["selection_loss"] = selection_loss
                    if selection_loss < best_loss:
                        best_loss, best = selection_loss, {k: v.detach().clone() for k, v in state.items()}
                if step == steps or optimiser is None:
                    break
                grads = torch.autograd.grad(total, params)  # the model's own weights get no gradient
                for p, g in zip(params, grads):
                    p.grad = g
                optimiser.step()
            if optimiser is None:
                break
        bar.close()

        with torch.no_grad():
            edited, codes = render(best)
            image = (mask * edited + (1 - mask) * original).clamp(-1, 1)
            clip_before = float(similarity(original))
            clip_after = float(similarity(image))
        return EditResult(image=image, original=original, mask=mask, region=region.detach(), edited=edited,
                          style_codes=codes[:n].detach() if codes is not None else None, history=history,
                          clip_before=clip_before, clip_after=clip_after)
    finally:
        model.train(was_training)


# -- the command -------------------------------------------------------------------------------
def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("edit", help="edit one object (or a box, or the whole image) of a generated image with text",
                       description="Start from the image `layout2img generate GRAPH --seed S` makes and change "
                                   "one object, a box or the whole image to match a text, keeping the rest.")
    e.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. runs/NAME/checkpoints/latest)")
    e.add_argument("--graph", required=True, help="a scene-graph JSON file (as for generate)")
    e.add_argument("--graph-index", type=int, default=0,
                   help="which graph of a list (default 0); it is drawn with seed + index, as generate does")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--object", type=int, default=None, metavar="I", help="edit object I of the graph")
    where.add_argument("--box", default=None, metavar="x0,y0,x1,y1", help="edit a box (normalised coordinates)")
    e.add_argument("--text", required=True, help='what the region should show, e.g. "a green circle" '
                                                 "(without --object/--box: a caption for the whole image)")
    e.add_argument("--out", required=True, help="the edited image (.png or .jpg)")
    e.add_argument("--seed", type=int, default=0, help="the seed given to generate (default 0)")
    e.add_argument("--steps", type=int, default=50, help="optimisation steps (default 50)")
    e.add_argument("--lr", type=float, default=0.1, help="Adam learning rate on the style code (default 0.1)")
    e.add_argument("--strength", type=float, default=1.0, help="weight of the CLIP term (default 1)")
    e.add_argument("--preserve-weight", type=float, default=1.0,
                   help="weight of the L1 term that keeps the outside unchanged (default 1)")
    e.add_argument("--modulation", action="store_true",
                   help="also optimise the generator's modulation: a per-channel scale and shift inside the "
                        "region (see --modulation-at; on text models also the caption embedding that drives FiLM)")
    e.add_argument("--modulation-at", default="rgb", choices=MODULATION_SITES,
                   help="where --modulation acts: rgb (the RGB head before the tanh: a colour transform, "
                        "default), output (the last features: colour and texture), decoder (after the "
                        "residual blocks)")
    e.add_argument("--restarts", type=int, default=6,
                   help="optimisation runs (the first from the original, the others from random starts "
                        "near it); the best is kept (default 6)")
    e.add_argument("--negative", action="append", default=[], metavar="TEXT",
                   help='a text the region should not match, e.g. "a red circle" (repeatable)')
    e.add_argument("--clip", default=None, metavar="SPEC",
                   help="the CLIP that guides the edit (default: the model's text encoder), e.g. runs/clip_shapes")
    e.add_argument("--save-original", default=None, metavar="PATH", help="also write the unedited image")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    e.set_defaults(func=run)
    return e


def run(args) -> int:
    from .generate import load_model, read_graphs, to_image
    from .visualize import save_image

    for name, path in (("--out", args.out), ("--save-original", args.save_original)):
        if path is not None and Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{name} {path}: expected an image file name (.png or .jpg)")
    if args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.restarts < 1:
        raise ConfigError(f"--restarts must be >= 1, got {args.restarts}")
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
                        negatives=args.negative, clip=args.clip, progress=True)
    try:
        save_image(args.out, to_image(result.image.cpu()))
        if args.save_original:
            save_image(args.save_original, to_image(result.original.cpu()))
    except OSError as e:
        raise DataError(f"{args.out}: cannot write ({e.strerror or e})") from None
    what = f"object {args.object} ({graph.objects[args.object]})" if args.object is not None else \
        (f"box {args.box}" if box is not None else "the whole image")
    print(f"edited {what}: CLIP similarity {result.clip_before:.3f} -> {result.clip_after:.3f}; wrote {args.out}")
    return 0
