"""``layout2img check-data [--config PATH_OR_NAME] [key=value ...]``: list every bad file of a run's dataset.

Reads every image and annotation of the config's splits once (:mod:`layout2img.data.check`) and
prints each problem on one line on stderr: exit 2 when there is any, else one summary line on
stdout. The config and overrides are the ones ``layout2img train`` takes, so the same command line
checks exactly what that run would read.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("check-data", description=__doc__.splitlines()[0],
                       help="read every image and annotation of a run config's dataset; list the bad ones")
    c.add_argument("--config", default=None,
                   help="the run config (a YAML file or a bundled config by name; default: shapes_64)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run)
    return c


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..config import load_config, to_container
    from ..data.check import check_data

    cfg = load_config(args.config, args.overrides)

    def show(line: str) -> None:
        tqdm.write(line, file=sys.stderr)  # above the progress bar, never through it

    report = check_data(to_container(cfg.data), progress=not args.no_progress, on_problem=show)
    where = cfg.get("config_path") or "config"
    if report.problems:
        print(f"check-data: {report.summary()} ({where})", file=sys.stderr)
        return 2
    print(f"check-data: {report.summary()} ({where})")
    return 0
