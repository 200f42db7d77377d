"""``layout2img vocab``: print a vocabulary's object, predicate and attribute names."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    vb = sub.add_parser("vocab", help="print a vocabulary's object and predicate names")
    vb.add_argument("name", help="coco-stuff | vg | shapes | PATH to vocab.json")
    vb.set_defaults(func=run)
    return vb


def run(args) -> int:
    from ..vocab import Vocab

    vocab = Vocab.by_name(args.name)
    print(f"# {vocab.name}: {vocab.num_objects} objects, {vocab.num_predicates} predicates")
    print("objects:")
    for i, n in enumerate(vocab.object_names):
        print(f"  {i}\t{n}")
    print("predicates:")
    for i, n in enumerate(vocab.predicate_names):
        print(f"  {i}\t{n}")
    if vocab.attribute_names:
        print("attributes:")
        for i, n in enumerate(vocab.attribute_names):
            print(f"  {i}\t{n}")
    return 0
