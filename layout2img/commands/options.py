"""The CLI options several subcommands share, declared once: ``add_model_args(parser, ...)``."""
from __future__ import annotations

import argparse

from ..config.choices import STYLE_CHOICES

#: ``--checkpoint``'s help: a command that loads the model reads a model folder; one that reads the
#: run too (its config, its data) also takes the run folder.
CHECKPOINT_HELP = "a checkpoint folder (e.g. runs/NAME/checkpoints/latest)"
RUN_CHECKPOINT_HELP = "a checkpoint folder, or a run folder (uses its checkpoints/latest)"


def add_model_args(parser: argparse.ArgumentParser, *, checkpoint: bool | str = True, device: bool = True,
                   style: bool = False, run_folder: bool = False) -> None:
    """Add the shared ``--checkpoint`` / ``--device`` / ``--style`` options.

    ``checkpoint``: True = required, ``"optional"`` = default None, False = not added;
    ``run_folder``: the command also takes a run folder for ``--checkpoint`` (said in its help).
    """
    if checkpoint:
        required = checkpoint is True
        text = RUN_CHECKPOINT_HELP if run_folder else CHECKPOINT_HELP
        parser.add_argument("--checkpoint", required=required, default=None,
                            help=text if required else f"{text}; optional")
    if device:
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    if style:
        parser.add_argument("--style", default="auto", choices=STYLE_CHOICES,
                            help="appearance codes: cluster = the fitted per-class style clusters (`layout2img "
                                 "fit-styles`), sample = N(0, I), auto = clusters when fitted, else sample "
                                 "(default)")
