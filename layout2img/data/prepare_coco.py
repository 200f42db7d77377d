"""Download COCO 2017 + COCO-Stuff 2017 and lay them out the way ``CocoSceneGraphDataset`` expects
(``layout2img prepare coco-stuff``; ``datasets/prepare_coco_stuff.py`` is the same command).

Run it on your own machine (it needs the internet and ~21 GB of disk for train+val: 19 GB of
images, ~0.7 GB of annotation zips, and the extracted files)::

    layout2img prepare coco-stuff --root data/coco                 # everything
    layout2img prepare coco-stuff --root data/coco --splits val    # val only (~1.7 GB)
    layout2img prepare coco-stuff --root data/coco --check --stats val

Sources (the official zips; see https://cocodataset.org/#download and the COCO-Stuff README at
https://github.com/nightrome/cocostuff#downloads):

=========================================  =====================================================
``zips/train2017.zip``, ``zips/val2017.zip``  the images (18 GB, 1 GB)
``annotations/annotations_trainval2017.zip``  ``instances_*2017.json`` + ``captions_*2017.json``
``annotations/stuff_annotations_trainval2017.zip``
                                           ``stuff_*2017.json`` (RLE, ids 92-182 + 183 "other")
                                           and ``deprecated-challenge2017/{train,val}-ids.txt``,
                                           the image ids of the 2017 stuff challenge (40k train /
                                           5k val) that sg2im and LostGAN trained on
=========================================  =====================================================

Result::

    ROOT/images/train2017/*.jpg      ROOT/images/val2017/*.jpg
    ROOT/annotations/instances_{train,val}2017.json
    ROOT/annotations/captions_{train,val}2017.json
    ROOT/annotations/stuff_{train,val}2017.json
    ROOT/annotations/deprecated-challenge2017/{train,val}-ids.txt

Downloads resume (``*.part`` files) and every output is written under a temporary name and
renamed into place when complete, so an interrupted run leaves nothing half-written; a second run
skips what is already there. The zips are deleted after extraction unless ``keep_zips``.
"""
from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from ..io import atomic_dir, atomic_path

COCO = "http://images.cocodataset.org"
# The COCO-Stuff GitHub README's copy of the stuff JSONs (no deprecated-challenge id lists inside).
CALVIN_STUFF = "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuff_trainval2017.zip"

ZIPS = {
    "train_images": (f"{COCO}/zips/train2017.zip", 18.0),  # url, approximate GB
    "val_images": (f"{COCO}/zips/val2017.zip", 0.8),
    "annotations": (f"{COCO}/annotations/annotations_trainval2017.zip", 0.25),
    "stuff": (f"{COCO}/annotations/stuff_annotations_trainval2017.zip", 0.4),
}
SPLITS = ("train", "val")
STUFF_MIRRORS = ("coco", "calvin")


def parse_splits(text: str) -> list[str]:
    """``"train,val"`` -> ``["train", "val"]``; anything but train and/or val is an error."""
    splits = [s.strip() for s in text.split(",") if s.strip()]
    if not splits or any(s not in SPLITS for s in splits):
        raise ConfigError(f"--splits must list train and/or val, got {text!r}")
    return splits


def annotation_files(splits: Sequence[str]) -> dict[str, list[str]]:
    """zip name -> the files it provides under ROOT/annotations."""
    return {
        "annotations": [f"{kind}_{s}2017.json" for s in splits for kind in ("instances", "captions")],
        "stuff": [f"stuff_{s}2017.json" for s in splits] + challenge_id_files(splits),
    }


def challenge_id_files(splits: Sequence[str]) -> list[str]:
    """Optional: only the cocodataset.org stuff zip has them."""
    return [f"deprecated-challenge2017/{s}-ids.txt" for s in splits]


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); return ``dest``."""
    from tqdm import tqdm

    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already complete
            part.replace(dest)
            return dest
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: cannot connect ({e})") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name
        ) as bar:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise DataError(f"{url}: download ended early ({part.stat().st_size} of {total} bytes); run again to resume")
    if not zipfile.is_zipfile(part):
        raise DataError(f"{part}: not a zip file; delete it and run again")
    part.replace(dest)
    return dest


def extract_images(zip_path: Path, split_dir: Path) -> None:
    """``train2017/*.jpg`` members -> ``split_dir`` (built under a temporary name)."""
    from tqdm import tqdm

    prefix = split_dir.name + "/"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise DataError(f"{zip_path}: no {prefix}* files inside; is it the right zip?")
            with atomic_dir(split_dir) as tmp:
                for m in tqdm(members, desc=f"extract {split_dir.name}", unit="img"):
                    target = tmp / m.filename[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(target, "wb") as dst:  # zipfile checks each CRC
                        shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as e:
        raise DataError(f"{zip_path}: damaged zip ({e}); delete it and run again") from None


def extract_files(zip_path: Path, wanted: Sequence[str], ann_dir: Path) -> list[str]:
    """Extract the members whose path ends with each ``wanted`` name; return the names not found."""
    missing = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            for rel in wanted:
                target = ann_dir / rel
                if target.is_file():
                    continue
                member = next((n for n in names if n == rel or n.endswith("/" + rel)), None)
                if member is None:
                    missing.append(rel)
                    continue
                with atomic_path(target) as tmp, zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                print(f"  {target}")
    except zipfile.BadZipFile as e:
        raise DataError(f"{zip_path}: damaged zip ({e}); delete it and run again") from None
    return missing


def check(root: Path, splits: Sequence[str], images: bool = True) -> int:
    """Print which outputs are present; 0 when every required one is, else 1."""
    root = Path(root)
    optional = {root / "annotations" / f for f in challenge_id_files(splits)}
    paths = [root / "images" / f"{s}2017" for s in splits] if images else []
    for files in annotation_files(splits).values():
        paths += [root / "annotations" / f for f in files]
    missing = 0
    for path in paths:
        state = "ok" if path.exists() else ("absent (optional)" if path in optional else "MISSING")
        missing += state == "MISSING"
        print(f"  {state:<18} {path}")
    if missing:
        print(f"{missing} missing; run without --check to download them")
    return 1 if missing else 0


def stats(root: Path, split: str, challenge_ids: bool) -> None:
    """Build the dataset with the default protocol and print what it keeps."""
    from .coco import CocoSceneGraphDataset

    ann = Path(root) / "annotations"
    ids = ann / "deprecated-challenge2017" / f"{split}-ids.txt" if challenge_ids else None
    ds = CocoSceneGraphDataset(
        Path(root) / "images" / f"{split}2017", ann / f"instances_{split}2017.json",
        ann / f"stuff_{split}2017.json", ann / f"captions_{split}2017.json", image_ids_file=ids,
    )
    print(ds)


def prepare_coco_stuff(root: str | Path, splits: Sequence[str] = SPLITS, *, skip_images: bool = False,
                       stuff_mirror: str = "coco", keep_zips: bool = False) -> int:
    """Download and extract what ``root`` lacks (module doc); then :func:`check`'s status (0 = complete)."""
    if stuff_mirror not in STUFF_MIRRORS:
        raise ConfigError(f"stuff mirror {stuff_mirror!r}: expected one of {', '.join(STUFF_MIRRORS)}")
    root = Path(root)
    downloads = root / "downloads"
    ann_dir = root / "annotations"
    # zip + extracted copy of every missing part, roughly
    parts = ["annotations", "stuff"] + ([] if skip_images else [
        f"{s}_images" for s in splits if not (root / "images" / f"{s}2017").is_dir()])
    need_gb = 2 * sum(ZIPS[k][1] for k in parts)
    root.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(root).free / 2**30
    if free_gb < need_gb:
        print(f"warning: {free_gb:.0f} GB free under {root}, about {need_gb:.0f} GB needed", file=sys.stderr)

    wanted = annotation_files(splits)
    for key in ("annotations", "stuff"):
        optional = set(challenge_id_files(splits)) if stuff_mirror == "calvin" else set()
        if all((ann_dir / f).is_file() for f in wanted[key] if f not in optional):
            continue
        url = ZIPS[key][0] if key == "annotations" or stuff_mirror == "coco" else CALVIN_STUFF
        zip_path = download(url, downloads / url.rsplit("/", 1)[1])
        print(f"extracting {zip_path.name}")
        for rel in extract_files(zip_path, wanted[key], ann_dir):
            print(f"warning: {zip_path.name} has no {rel}", file=sys.stderr)
        if not keep_zips:
            zip_path.unlink()
    if not skip_images:
        for s in splits:
            split_dir = root / "images" / f"{s}2017"
            if split_dir.is_dir():
                continue
            url = ZIPS[f"{s}_images"][0]
            zip_path = download(url, downloads / url.rsplit("/", 1)[1])
            extract_images(zip_path, split_dir)
            if not keep_zips:
                zip_path.unlink()
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return check(root, splits, images=not skip_images)
