"""Every command README.md and datasets/README.md show in their ```bash blocks parses, flags included.

Each ``layout2img ...``, ``python train.py ...``, ``python datasets/*.py ...`` and ``torchrun ...``
line goes through the real argparse parser with its exact argv (``--help`` would skip flag
validation), so a renamed or removed flag fails here; training commands' ``--config`` and
``key=value`` overrides are loaded and checked against the schema too (no training). The scripts
are checked to forward to the CLI command the test assumes, and run once as scripts.
"""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from layout2img.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "datasets/README.md")
SCRIPTS = ("train.py", "datasets/prepare_coco_stuff.py", "datasets/prepare_vg.py")
# commands of other tools (installing, testing): not ours to check
FOREIGN = (("python3", "-m", "venv"), (".",), ("pip",), ("python", "-m", "pytest"), ("tensorboard",))


def _commands(doc: str) -> list[tuple[str, list[str]]]:
    """``(line as written, tokens)`` of every command of the doc's bash blocks; ``a && b`` is two."""
    text = (REPO / doc).read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = tokens.index("&&") if "&&" in tokens else len(tokens)
                out.append((line.strip(), tokens[:cut]))
                tokens = tokens[cut + 1:]
    return out


def _script_argv(script: str) -> list[str]:
    """The CLI argv prefix a wrapper script passes: ``main(["prepare", "vg", *sys.argv[1:]])``."""
    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "main" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.List) and isinstance(arg.elts[-1], ast.Starred):
                return [ast.literal_eval(e) for e in arg.elts[:-1]]
    raise AssertionError(f"{script}: no main([..., *sys.argv[1:]]) call")


def _cli_argv(tokens: list[str]) -> list[str] | None:
    """The ``layout2img`` argv a command amounts to; None for another tool's command."""
    if any(tuple(tokens[:len(f)]) == f for f in FOREIGN):
        return None
    if tokens[0] == "layout2img":
        return tokens[1:]
    if tokens[0] in ("python", "python3") and len(tokens) > 1 and tokens[1] in SCRIPTS:
        return _script_argv(tokens[1]) + tokens[2:]
    if tokens[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        ns = get_args_parser().parse_args(tokens[1:])  # torchrun's own flags are checked too
        if ns.module:
            assert ns.training_script == "layout2img.cli", ns.training_script
            return ns.training_script_args
        assert ns.training_script in SCRIPTS, ns.training_script
        return _script_argv(ns.training_script) + ns.training_script_args
    raise AssertionError(f"test_readme_commands does not know how to check {tokens[0]!r}: teach it")


CASES = [pytest.param(tokens, id=f"{doc}: {' '.join(tokens)[:70]}") for doc in DOCS for _, tokens in _commands(doc)]


def test_the_docs_show_commands():
    shown = [_cli_argv(t) for d in DOCS for _, t in _commands(d)]
    assert sum(a is not None for a in shown) >= 25
    assert {a[0] for a in shown if a} >= {"train", "prepare", "generate", "evaluate", "serve", "train-clip"}


@pytest.mark.parametrize("tokens", CASES)
def test_a_shown_command_parses(tokens, capsys):
    argv = _cli_argv(tokens)
    if argv is None:
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{' '.join(tokens)}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    if args.command in ("train", "train-classifier", "train-clip") and getattr(args, "checkpoint", None) is None:
        from layout2img.config import ClipRunConfig, RunConfig, load_config

        clip = args.command == "train-clip"
        load_config(args.config or ("clip/shapes" if clip else None), args.overrides,
                    schema=ClipRunConfig if clip else RunConfig)


def test_the_scripts_run_the_cli(tmp_path):
    """Each wrapper, run as a script from another folder, reaches its command (one-line errors)."""
    runs = {
        "train.py": (["bach_size=3"], 2, "unknown key 'bach_size'"),
        "datasets/prepare_coco_stuff.py": (["--root", str(tmp_path / "coco"), "--check"], 1, "MISSING"),
        "datasets/prepare_vg.py": (["--vg-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "vg")], 2,
                                   "Visual Genome folder not found"),
    }
    for script, (args, code, words) in runs.items():
        res = subprocess.run([sys.executable, str(REPO / script), *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == code and words in res.stdout + res.stderr, (script, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
