"""The package's version: its installed metadata, whose one source is pyproject.toml.

Imports nothing of the package, so any module may import it at its top.
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path


def source_tree_version() -> str:
    """The version in pyproject.toml beside the package: a checkout on sys.path, never installed."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "0+unknown"


try:
    __version__: str = metadata.version("layout2img")
except metadata.PackageNotFoundError:
    __version__ = source_tree_version()
