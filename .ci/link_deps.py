"""Hard-link a wheel's runtime requirements (and theirs) from this venv into another venv's
site-packages: the files `pip install` would unpack there (torch alone is ~5 GB, ~4 min on the CI
machine), in seconds. Only what the wheel's METADATA declares is linked, so an undeclared
dependency still fails the smoke test in the fresh venv. Used by .ci/wheel_smoke.sh.

    python .ci/link_deps.py TARGET_SITE_PACKAGES path/to/layout2img-*.whl
"""
from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _wanted(req: Requirement, extras: frozenset[str]) -> bool:
    """The requirement applies here, with none or any of ``extras`` asked for."""
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras))


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(zf.read(meta).decode("utf-8"))
    return [r for r in map(Requirement, headers.get_all("Requires-Dist") or []) if _wanted(r, frozenset())]


def closure(roots: list[Requirement]) -> list[md.Distribution]:
    """The installed distributions ``roots`` need, extras (e.g. torch's cuda-toolkit[cublas]) followed."""
    todo = [(r.name, frozenset(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    dists: dict[str, md.Distribution] = {}
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # pip installs it from the index afterwards
            continue
        dists[key[0]] = dist
        todo += [(r.name, frozenset(r.extras)) for r in map(Requirement, dist.requires or []) if _wanted(r, extras)]
    return list(dists.values())


def link(dist: md.Distribution, target: Path) -> int:
    site = Path(dist.locate_file(""))
    n = 0
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        rel = os.path.relpath(src, site)
        if rel.startswith("..") or not src.is_file():  # bin/ scripts name this venv's interpreter
            continue
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except FileExistsError:
            continue
        except OSError:  # another filesystem
            shutil.copy2(src, dst)
        n += 1
    return n


def main(target: str, wheel: str) -> int:
    dists = closure(wheel_requirements(Path(wheel)))
    n = sum(link(d, Path(target)) for d in dists)
    print(f"linked {len(dists)} distributions ({n} files) into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
