"""The ``layout2img`` command line.

Every user error is a ``Layout2ImgError``: printed as one line on stderr, exit status 2 (1 when
an output could not be written: a ``WriteError``, e.g. disk full).
Each subcommand is a module with ``add_parser(sub)`` and ``run(args)`` (most in
:mod:`layout2img.commands`); the library does the work, so everything the CLI does is also
available from Python.
"""
from __future__ import annotations

import argparse
import sys

from .errors import Layout2ImgError, WriteError


def build_parser() -> argparse.ArgumentParser:
    # light modules: torch and the library load only when a command runs
    from .commands import (edit, evaluate, fid, fit_styles, generate, layout, prepare, train, train_classifier,
                           train_clip, validate, vocab)
    from .commands import check_data, serve

    p = argparse.ArgumentParser(prog="layout2img", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (validate, vocab, prepare, check_data, train, generate, layout, edit, serve, train_clip, evaluate,
                    fid, train_classifier, fit_styles):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WriteError as e:  # the input was fine; the disk (or its permissions) was not
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Layout2ImgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
