"""Write the mode-coverage dataset (128 known modes of moving shapes) up front; training
writes it on first use (data.dataset=modes).

    python -m data_prep.modes --root data/modes64 [--per-mode 8 --frames 16 --size 64]
    python -m data_prep.modes --root data/modes32 --size 32
"""
from __future__ import annotations

import argparse

from vidgan.data.modes import DATA_SEED, N_MODES, write_dataset


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/modes64")
    parser.add_argument("--per-mode", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=DATA_SEED)
    args = parser.parse_args(argv)
    write_dataset(args.root, args.per_mode, args.frames, args.size, seed=args.seed)
    print(f"wrote {args.per_mode * N_MODES} clips ({N_MODES} modes) to {args.root}, "
          f"their modes in {args.root}/modes.json")


if __name__ == "__main__":
    main()
