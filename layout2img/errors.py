"""One exception family for everything a user can get wrong.

The CLI catches ``Layout2ImgError``, prints ``str(err)`` (one line) and exits 2; anything else
is a bug in layout2img and keeps its traceback.
"""
from __future__ import annotations


class Layout2ImgError(Exception):
    """Base of every error caused by input, configuration or files (never by a bug)."""


class GraphError(Layout2ImgError, ValueError):
    """A scene graph is malformed (file, graph index, object or relation index in the message)."""


class VocabError(Layout2ImgError, KeyError):
    """A name is not in the vocabulary, or a vocabulary file is malformed."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain line
        return str(self.args[0]) if self.args else ""


class DataError(Layout2ImgError):
    """A dataset file or folder is missing or malformed."""


class ConfigError(Layout2ImgError, ValueError):
    """A configuration value is missing or invalid."""


class CheckpointError(Layout2ImgError):
    """A checkpoint folder is missing, incomplete or inconsistent."""


class EditCancelled(Layout2ImgError):
    """A text-guided edit was stopped by its progress callback (restart and step in the message)."""
