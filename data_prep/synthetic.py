"""Write the embedded demo dataset (moving shapes) up front; training writes it on first use.

    python -m data_prep.synthetic --root data/synthetic [--per-class 64 --frames 32 --size 64]
"""
from __future__ import annotations

import argparse

from vidgan.data.synthetic import CLASSES, write_dataset


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_dataset(args.root, args.per_class, args.frames, args.size, seed=args.seed)
    print(f"wrote {args.per_class * len(CLASSES)} clips to {args.root}")


if __name__ == "__main__":
    main()
