"""Evaluate a checkpoint on a dataset split: generate, save PNGs, compute metrics, write a report.

    report = evaluate("runs/shapes_64/checkpoints/latest", "eval/report.json",
                      metrics="fid,kid,object-acc,layout,diversity", samples_per_layout=2,
                      classifier="runs/classifier")

What happens:

1. the checkpoint's run config (``out_dir/config.yaml``, or ``config`` given) names the dataset;
   its ``split`` is built with :func:`layout2img.data.build.build_dataset` (first ``max_images``);
2. every scene graph is rendered ``samples_per_layout`` times with the ground-truth layout
   (``layout='gt'``: GT boxes and masks) or the predicted one (``'pred'``: boxes and masks from
   the graph alone), styles sampled (or drawn from fitted clusters) from a generator seeded by
   ``seed``; real and generated images are saved as PNG under ``<out stem>_images/{real,fake}/``
   (the folder is replaced as a whole);
3. the metrics (:data:`METRICS`) are computed by the metric objects of :mod:`layout2img.metrics`
   (updated batch by batch as the images are made), FID/KID/diversity from the PNGs read back;
4. the JSON report (protocol + numbers; a metric that cannot run says why under ``skipped``) is
   written atomically to ``out``.

A metric asked for explicitly (``metrics`` given) that cannot run is an error (exit 2 on the
command line) before anything is generated; with the default (all) it is reported as skipped.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .config import STYLE_CHOICES
from .errors import CheckpointError, ConfigError, DataError
from .training.runs import load_run_config, resolve_checkpoint
from .metrics.report import METRICS, finite_or_none, parse_metrics, summary_line
from .version import __version__

LAYOUT_CHOICES = ("gt", "pred")


def _save_png(path: Path, image: torch.Tensor) -> None:
    from .errors import WriteError
    from .visualize import to_pil

    try:  # into the temporary images folder (atomic as a whole): a failure names the file
        to_pil(image).save(path, format="PNG")
    except OSError as e:
        raise WriteError.from_exception(path, e) from None


def _clip_encoder(model, cfg, clip, device) -> tuple[Any, str | None, str | None]:
    """(encoder, what it is, why there is none): ``clip`` given, else the model's, else the config's."""
    from .errors import Layout2ImgError

    if clip is None and model.text_encoder is not None:
        return model.text_encoder, "the model's text encoder", None
    spec = clip if clip is not None else (cfg.get("text_encoder") or cfg.model.get("text_encoder"))
    if not spec:
        return None, None, None
    from .models.text import TextEncoder

    try:
        return TextEncoder.load(str(spec), device=device).eval(), str(spec), None
    except Layout2ImgError as e:
        if clip is not None:
            raise
        return None, None, f"the configured text encoder {spec!r} cannot be loaded: {e}"


# -- the evaluation ------------------------------------------------------------------------------
@dataclass
class _Measures:
    """The metric objects one evaluation updates while it generates (None: that metric does not run)."""

    layout: Any = None
    acc_real: Any = None
    acc_fake: Any = None
    clip_real: Any = None
    clip_fake: Any = None
    lpips: Any = None
    image_ids: list = field(default_factory=list)


def one_writer_of_out(evaluate_fn: Callable) -> Callable:
    """Two evaluations writing the same report would replace each other's images under it and
    report FIDs of the other's images: the second is refused while the first runs."""
    @functools.wraps(evaluate_fn)
    def wrapper(checkpoint, out="report.json", **options):
        from .io import exclusive_output

        with exclusive_output(out, "--out"):
            return evaluate_fn(checkpoint, out, **options)
    return wrapper


@one_writer_of_out
def evaluate(checkpoint: str | os.PathLike, out: str | os.PathLike = "report.json", *,
             config: str | os.PathLike | None = None, overrides: Iterable[str] = (), split: str = "val",
             metrics: str | Sequence[str] | None = None, samples_per_layout: int = 1, layout: str = "gt",
             style: str = "auto", max_images: int | None = None, seed: int = 0, batch_size: int = 16,
             refine: bool | None = None, device: str = "auto", classifier: str | os.PathLike | None = None,
             inception: str | os.PathLike | None = None, feature_cache: str | os.PathLike | None | bool = True,
             clip: str | None = None, kid_subsets: int = 100,
             kid_subset_size: int = 1000, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Evaluate ``checkpoint`` (see the module doc); returns the report that was written to ``out``.

    ``feature_cache``: where the real images' Inception features are kept between runs (True: the
    default place, :func:`~layout2img.metrics.fid.default_feature_cache`; None / False: recompute)."""
    from .config import to_container
    from .data.build import build_dataset
    from .devices import resolve_device
    from .io import atomic_write_text
    from .metrics.accuracy import ObjectAccuracy
    from .metrics.clip_score import CLIPScore, clip_unavailable_reason
    from .metrics.diversity import INCEPTION_DISTANCE, LPIPS, LpipsDiversity, lpips_unavailable_reason
    from .metrics.fid import IS_UNAVAILABLE, InceptionFeatureExtractor, default_feature_cache
    from .metrics.layout import LayoutMetrics
    from .models.classifier import ObjectClassifier
    from .pipeline import SceneGraphToImage
    from .pipeline.inputs import resolve_style_source

    requested = parse_metrics(metrics)
    strict = requested is not None
    wanted = list(requested or METRICS)
    if layout not in LAYOUT_CHOICES:
        raise ConfigError(f"--layout: expected gt or pred, got {layout!r}")
    if style not in STYLE_CHOICES:
        raise ConfigError(f"--style: expected {', '.join(STYLE_CHOICES)}, got {style!r}")
    k_samples = int(samples_per_layout)
    if k_samples < 1:
        raise ConfigError(f"--samples-per-layout must be at least 1, got {samples_per_layout}")
    if max_images is not None and int(max_images) < 1:
        raise ConfigError(f"--max-images must be at least 1, got {max_images}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise ConfigError(f"--out {out}: the report is a .json file (images go beside it)")
    dev = resolve_device(device)

    # -- model, config, data -------------------------------------------------------------------
    ckpt = resolve_checkpoint(checkpoint)
    model = SceneGraphToImage.from_pretrained(ckpt, map_location=dev).eval()
    style_source = resolve_style_source(model, style, ckpt)
    cfg, cfg_path = load_run_config(ckpt, config, overrides)
    data_cfg = to_container(cfg.data)
    data_seed = int(cfg.get("seed", 0))
    dataset = build_dataset(data_cfg, split, seed=data_seed)
    if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names):
        raise ConfigError(f"{cfg_path}: the dataset's vocabulary ({dataset.vocab.name}, {dataset.vocab.num_objects} "
                          f"objects) is not the checkpoint's ({model.vocab.name}, {model.vocab.num_objects})")
    n_layouts = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n_layouts < 1:
        raise DataError(f"{split} split of {data_cfg.get('dataset')} is empty")
    if getattr(dataset, "image_size", model.image_size) != model.image_size:
        raise ConfigError(f"the dataset makes {dataset.image_size} px images, the checkpoint {model.image_size} px "
                          f"(set data.image_size={model.image_size})")
    # predicted layouts are evaluated as `generate` makes them: refined when the model refines by default
    refine = (model.refines_by_default if refine is None else bool(refine)) and layout == "pred"

    # -- what can run ---------------------------------------------------------------------------
    skipped: dict[str, str] = {}
    clf = None
    if "object-acc" in wanted:
        if classifier is None:
            skipped["object-acc"] = ("no object classifier given (train one with `layout2img train-classifier` "
                                     "and pass --classifier DIR)")
        else:
            try:
                clf = ObjectClassifier.from_pretrained(classifier, map_location=dev)
            except CheckpointError as e:
                raise CheckpointError(f"--classifier: {e} (make one with `layout2img train-classifier`)") from None
            if tuple(clf.vocab.object_names) != tuple(model.vocab.object_names):
                raise ConfigError(f"--classifier {classifier}: trained on vocabulary {clf.vocab.name!r}, "
                                  f"the checkpoint uses {model.vocab.name!r}")
    if "is" in wanted:
        skipped["is"] = IS_UNAVAILABLE
    clip_encoder = clip_name = None
    if "clip" in wanted:
        clip_encoder, clip_name, load_error = _clip_encoder(model, cfg, clip, dev)
        if why := load_error or clip_unavailable_reason(clip_encoder):
            skipped["clip"] = why
    if "diversity" in wanted and k_samples < 2:
        skipped["diversity"] = "needs --samples-per-layout of 2 or more"
    for m in ("fid", "kid"):
        if m in wanted and n_layouts < 2:
            skipped[m] = f"needs at least 2 real and 2 generated images (have {n_layouts} layouts)"
    if strict and (bad := [m for m in wanted if m in skipped]):
        raise ConfigError(f"metric {bad[0]!r} cannot run: {skipped[bad[0]]}")
    run = [m for m in wanted if m not in skipped]
    lpips_reason = lpips_unavailable_reason() if "diversity" in run else None
    diversity_measure = LPIPS if "diversity" in run and lpips_reason is None else INCEPTION_DISTANCE
    need_inception = bool({"fid", "kid"} & set(run)) or ("diversity" in run and diversity_measure != LPIPS)
    extractor = InceptionFeatureExtractor(inception, device=dev, batch_size=max(batch_size, 16)) \
        if need_inception else None
    text_encoder = clip_encoder if "clip" in run else None
    measures = _Measures(
        layout=LayoutMetrics(model.image_size, model.stuff_classes) if "layout" in run else None,
        acc_real=ObjectAccuracy(clf) if clf is not None else None,
        acc_fake=ObjectAccuracy(clf) if clf is not None else None,
        clip_real=CLIPScore(text_encoder) if text_encoder is not None else None,
        clip_fake=CLIPScore(text_encoder) if text_encoder is not None else None,
        lpips=LpipsDiversity(dev) if "diversity" in run and diversity_measure == LPIPS else None)

    cache_dir = default_feature_cache() if feature_cache is True else (Path(feature_cache) if feature_cache else None)

    # -- generate, then the metrics from the saved PNGs --------------------------------------------
    images_dir = out.parent / f"{out.stem}_images"
    _generate_and_measure(model, dataset, n_layouts, images_dir, measures, split=split, layout=layout,
                          style_source=style_source, k_samples=k_samples, seed=seed, batch_size=batch_size,
                          refine=refine, device=dev, progress=progress)
    results = _feature_metrics(run, extractor, images_dir, n_layouts, k_samples, kid_subsets, kid_subset_size,
                               seed, lpips_reason if diversity_measure == INCEPTION_DISTANCE else None, progress,
                               cache_dir)
    if "object-acc" in run:
        results["object-acc"] = {
            "generated": measures.acc_fake.compute(), "real": measures.acc_real.compute(),
            "crop_boxes": "ground-truth boxes" if layout == "gt" else "the predicted boxes each image was made from",
            "classifier": {"path": str(classifier), "crop_size": clf.crop_size,
                           "val_accuracy": clf.metadata.get("val_accuracy")},
        }
    if "layout" in run:
        results["layout"] = measures.layout.compute()
    if measures.lpips is not None:
        results["diversity"] = {"measure": LPIPS, "value": measures.lpips.compute()}
    if "clip" in run:
        results["clip"] = {"generated": measures.clip_fake.compute(), "real": measures.clip_real.compute(),
                           "encoder": clip_name, "definition": "100 * max(cos(image, text), 0), mean over images",
                           "texts": "captions where the dataset has them, else the scene graph as text"}
    for m, why in skipped.items():
        results[m] = {"skipped": why}
    ordered = {m: results[m] for m in METRICS if m in results}

    image_ids = measures.image_ids
    ids_text = json.dumps([str(i) for i in image_ids])
    protocol = {
        "dataset": str(data_cfg.get("dataset")), "data_root": str(data_cfg.get("root", "")) or None,
        "vocab": model.vocab.name, "split": split, "data_seed": data_seed,
        "num_layouts": n_layouts, "max_images": max_images, "image_ids": image_ids,
        "image_ids_sha1": hashlib.sha1(ids_text.encode()).hexdigest(),
        "resolution": model.image_size, "samples_per_layout": k_samples,
        "num_real_images": n_layouts, "num_generated_images": n_layouts * k_samples,
        "layout_source": layout, "keep_known_boxes": layout == "gt", "refine_layout": refine,
        "style_source": style_source,
        "seed": int(seed), "batch_size": int(batch_size),
        "feature_extractor": extractor.protocol() if extractor is not None else None,
        "real_feature_cache": str(cache_dir) if cache_dir is not None and extractor is not None else None,
        "fid_definition": "pytorch-fid: PNG uint8 -> x/127.5-1 -> bilinear 299 -> pool3 2048-d; "
                          "|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) (scipy.linalg.sqrtm, eps 1e-6)",
        "text_conditioning": ("none: the model takes no text" if model.text_dim == 0 else
                              "not used: generated without text (text_emb=None)"),
        "checkpoint": str(ckpt), "training_step": (model.metadata or {}).get("training_step"),
        "config": str(cfg_path), "images": str(images_dir),
    }
    report = {
        "layout2img_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"device": str(dev), "torch": torch.__version__, "platform": platform.platform()},
        "protocol": protocol,
        "metrics": ordered,
        "skipped": skipped,
    }
    report = finite_or_none(report)
    atomic_write_text(out, json.dumps(report, indent=1, default=str) + "\n")
    log(summary_line(report))
    return report


def _generate_and_measure(model, dataset, n_layouts: int, images_dir: Path, measures: _Measures, *, split: str,
                          layout: str, style_source: str, k_samples: int, seed: int, batch_size: int,
                          refine: bool, device, progress: bool) -> None:
    """Render every layout ``k_samples`` times; save real and generated PNGs under ``images_dir``
    (replaced as a whole) and update ``measures`` with the 8-bit images the PNGs hold."""
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from .data.batch import collate
    from .io import atomic_dir
    from .metrics.clip_score import batch_texts
    from .metrics.fid import quantize

    width = max(6, len(str(n_layouts - 1)))
    rng = torch.Generator(device="cpu").manual_seed(int(seed))
    loader = DataLoader(Subset(dataset, range(n_layouts)), batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=0)
    wants_texts = measures.clip_real is not None
    with atomic_dir(images_dir, overwrite=True) as tmp:
        (tmp / "real").mkdir()
        (tmp / "fake").mkdir()
        index = 0
        bar = tqdm(total=n_layouts * k_samples, desc="generate", unit="img", disable=not progress,
                   dynamic_ncols=True)
        try:
            with torch.no_grad():
                for batch in loader:
                    batch = batch.to(device)
                    b = batch.num_images
                    if batch.images is None:
                        raise DataError(f"{split} split: the dataset gives no images to compare with")
                    if batch.images.shape[-1] != model.image_size:
                        raise ConfigError(f"the dataset makes {batch.images.shape[-1]} px images, the checkpoint "
                                          f"{model.image_size} px (set data.image_size={model.image_size})")
                    measures.image_ids.extend(batch.image_ids)
                    real = quantize(batch.images)
                    for i in range(b):
                        _save_png(tmp / "real" / f"{index + i:0{width}d}.png", real[i])
                    texts = batch_texts(batch, model.vocab) if wants_texts else None
                    if measures.acc_real is not None:
                        measures.acc_real.update(real, batch.boxes, batch.obj_to_img, batch.objs)
                    if measures.clip_real is not None:
                        measures.clip_real.update(real, texts)
                    samples = []
                    for k in range(k_samples):
                        res = model(batch, layout_source=layout, style_source=style_source, generator=rng,
                                    keep_known_boxes=layout == "gt", refine=refine)
                        fake = quantize(res.images)
                        samples.append(fake)
                        for i in range(b):
                            _save_png(tmp / "fake" / f"{index + i:0{width}d}_{k:02d}.png", fake[i])
                        if measures.acc_fake is not None:
                            measures.acc_fake.update(fake, res.boxes, batch.obj_to_img, batch.objs)
                        if measures.clip_fake is not None:
                            measures.clip_fake.update(fake, texts)
                        if k == 0 and measures.layout is not None:
                            measures.layout.update(batch, res.boxes_pred, torch.sigmoid(res.mask_logits.float()),
                                                   model.vocab.predicate_names)
                        bar.update(b)
                    if measures.lpips is not None:
                        stacked = torch.stack(samples, 1)  # (B, K, 3, H, W)
                        measures.lpips.update([stacked[i] for i in range(b)])
                    index += b
        finally:
            bar.close()


def _feature_metrics(run: Sequence[str], extractor, images_dir: Path, n_layouts: int, k_samples: int,
                     kid_subsets: int, kid_subset_size: int, seed: int, why_not_lpips: str | None,
                     progress: bool, cache_dir: Path | None = None) -> dict[str, Any]:
    """FID, KID and (when ``why_not_lpips`` says why LPIPS is not used) the Inception-feature
    diversity, from the features of the saved PNGs (the real ones' kept in ``cache_dir``)."""
    from .metrics.diversity import INCEPTION_DISTANCE, mean_pairwise_distance
    from .metrics.fid import FrechetInceptionDistance, KernelInceptionDistance

    results: dict[str, Any] = {}
    if extractor is None:
        return results
    feats_real = (extractor.folder(images_dir / "real", progress=progress, cache_dir=cache_dir)
                  if {"fid", "kid"} & set(run) else None)
    feats_fake = extractor.folder(images_dir / "fake", progress=progress)
    for name, metric in (("fid", FrechetInceptionDistance()),
                         ("kid", KernelInceptionDistance(kid_subsets, kid_subset_size, seed))):
        if name in run:
            metric.update(feats_real, real=True)
            metric.update(feats_fake, real=False)
            results[name] = metric.compute()
    if "diversity" in run and why_not_lpips is not None:
        groups = feats_fake.reshape(n_layouts, k_samples, -1)
        results["diversity"] = {"measure": INCEPTION_DISTANCE, "value": mean_pairwise_distance(list(groups)),
                                "why_not_lpips": why_not_lpips,
                                "definition": "mean pairwise L2 distance between the Inception pool "
                                              "features of the samples of one layout, averaged over layouts"}
    return results
