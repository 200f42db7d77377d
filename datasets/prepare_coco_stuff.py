#!/usr/bin/env python
"""Download COCO 2017 + COCO-Stuff: the same as ``layout2img prepare coco-stuff`` (layout2img/data/prepare_coco.py)."""
import sys

from layout2img.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "coco-stuff", *sys.argv[1:]]))
