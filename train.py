"""``python train.py [--config PATH_OR_NAME] [key=value ...]`` = ``layout2img train`` (layout2img/commands/train.py); torchrun runs either."""
import sys

from layout2img.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
