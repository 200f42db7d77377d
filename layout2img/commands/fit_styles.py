"""``layout2img fit-styles``: fit a checkpoint's per-class style clusters on its train split and save them.

    layout2img fit-styles --checkpoint runs/shapes_64          # the run's latest checkpoint, in place
    layout2img fit-styles --checkpoint runs/shapes_64/checkpoints/latest --out runs/shapes_64_styled

The train split comes from the checkpoint's run config (``out_dir/config.yaml``, or ``--config``,
with ``key=value`` overrides such as ``data.root=DIR``); its first ``--max-images`` images are
encoded and k-means'd per class (:func:`~layout2img.training.styles.fit_style_clusters`). In
place, the checkpoint folder is rewritten atomically with every other file in it (a training
checkpoint's ``training_state.*``) kept; ``--out`` writes a model folder of its own.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Iterable


def add_parser(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("fit-styles", help="fit a checkpoint's per-class style clusters (for --style cluster)",
                       description="Encode the objects of a checkpoint's train split, k-means their style codes "
                                   "per class and save the clusters in the checkpoint, so generate, evaluate and "
                                   "serve can draw appearances like the data's (--style cluster).")
    f.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a run folder (its checkpoints/latest)")
    f.add_argument("--config", default=None,
                   help="run config (default: the out_dir/config.yaml the trainer wrote beside the checkpoints)")
    f.add_argument("--max-images", type=int, default=2000, metavar="N",
                   help="encode the first N train images (default 2000)")
    f.add_argument("--seed", type=int, default=None, help="k-means seed (default: the run config's seed)")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--out", default=None,
                   help="write the fitted model to this folder (default: rewrite the checkpoint in place)")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    f.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. data.root=DIR)")
    f.set_defaults(func=run)
    return f


def fit_checkpoint_styles(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, *,
                          config: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                          max_images: int = 2000, seed: int | None = None, batch_size: int = 32,
                          device: str = "auto", progress: bool = True) -> tuple[Path, dict]:
    """Fit the style clusters of ``checkpoint`` (see the module doc) and save the model to ``out``
    (None: the checkpoint folder itself). Returns (the folder written, the fit's summary with
    ``seed`` and ``k`` added)."""
    from ..config import to_container
    from ..data.build import build_dataset
    from ..devices import resolve_device
    from ..errors import ConfigError
    from ..pipeline import SceneGraphToImage
    from ..training.runs import load_run_config, resolve_checkpoint
    from ..training.styles import fit_style_clusters

    if not isinstance(max_images, int) or max_images < 1:
        raise ConfigError(f"--max-images must be a positive integer, got {max_images!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    source = resolve_checkpoint(checkpoint).resolve()  # a `latest` link: write the folder it points at
    target = source if out is None else Path(out).resolve()
    if target != source and target.exists() and (not target.is_dir() or any(target.iterdir())) \
            and not (target / "config.json").is_file():
        raise ConfigError(f"--out {out}: exists and is not a checkpoint folder (give a new or empty folder)")
    model = SceneGraphToImage.from_pretrained(source, map_location=resolve_device(device))
    if model.style_clusters is None:
        raise ConfigError(f"{source}: this model has no style codes (style_dim 0): nothing to cluster")
    cfg, cfg_path = load_run_config(source, config, overrides)
    dataset = build_dataset(to_container(cfg.data), "train", seed=int(cfg.get("seed", 0)))
    if tuple(dataset.vocab.object_names) != tuple(model.vocab.object_names):
        raise ConfigError(f"{cfg_path}: the dataset's vocabulary ({dataset.vocab.name}, {dataset.vocab.num_objects} "
                          f"objects) is not the checkpoint's ({model.vocab.name}, {model.vocab.num_objects})")
    if getattr(dataset, "image_size", model.image_size) != model.image_size:
        raise ConfigError(f"{cfg_path}: the dataset makes {dataset.image_size} px images, the checkpoint "
                          f"{model.image_size} px (set data.image_size={model.image_size})")
    seed = int(cfg.get("seed", 0)) if seed is None else int(seed)
    summary = fit_style_clusters(model, dataset, max_images=max_images, batch_size=batch_size, seed=seed,
                                 progress=progress)
    summary.update(seed=seed, k=model.style_clusters.k)
    metadata = {**model.metadata, "style_clusters": dict(summary)}
    if target == source:
        save_in_place(model, source, metadata)
    else:
        model.save_pretrained(target, metadata=metadata)
    return target, summary


def save_in_place(model, folder: Path, metadata: dict) -> None:
    """Rewrite the model files of ``folder`` and keep the others (e.g. a training checkpoint's
    state): the new folder is built beside it and swapped in, so a crash leaves the old one."""
    from ..io import atomic_dir

    with atomic_dir(folder, overwrite=True) as tmp:
        written = model.save_pretrained(tmp / "model", metadata=metadata)
        for path in written.iterdir():
            os.replace(path, tmp / path.name)
        written.rmdir()
        for path in folder.iterdir():
            if not (tmp / path.name).exists():
                if path.is_dir():
                    shutil.copytree(path, tmp / path.name, symlinks=True)
                else:
                    shutil.copy2(path, tmp / path.name, follow_symlinks=False)


def run(args) -> int:
    folder, s = fit_checkpoint_styles(args.checkpoint, args.out, config=args.config, overrides=args.overrides,
                                      max_images=args.max_images, seed=args.seed, batch_size=args.batch_size,
                                      device=args.device)
    print(f"fitted style clusters (k={s['k']}, seed {s['seed']}) on {s['objects']} objects of {s['images']} "
          f"train images, {s['classes']} classes -> {folder}")
    return 0
