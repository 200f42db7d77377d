#!/usr/bin/env python
"""Visual Genome -> HDF5 + vocab.json: the same as ``layout2img prepare vg`` (layout2img/data/prepare_vg.py)."""
import sys

from layout2img.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "vg", *sys.argv[1:]]))
