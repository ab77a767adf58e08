"""Convert the TGANv2 release C3D (``conv3d_deepnetA_ucf.npz`` + ``mean2.npz``) into one
PyTorch file that carries the weights and the mean offset (docs/FIDELITY.md, Evaluation):

    python -m data_prep.convert_c3d --weights conv3d_deepnetA_ucf.npz --mean mean2.npz \
        --out c3d_ucf101.pt

``vidgan.metrics.load_c3d("c3d_ucf101.pt")`` then needs no mean file and no numpy npz reading.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidgan.metrics.c3d import load_c3d, save_c3d


def convert(weights: str | Path, mean: str | Path, out: str | Path) -> Path:
    """Read and check the release files, write ``out``; returns its path."""
    model = load_c3d(weights, mean)
    return save_c3d(model, out, source={"weights": Path(weights).name, "mean": Path(mean).name})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.convert_c3d",
                                     description="Convert the TGANv2 C3D npz files to a .pt.")
    parser.add_argument("--weights", required=True, help="conv3d_deepnetA_ucf.npz")
    parser.add_argument("--mean", required=True, help="mean2.npz")
    parser.add_argument("--out", required=True, help="output .pt, e.g. c3d_ucf101.pt")
    args = parser.parse_args(argv)
    if Path(args.out).suffix == ".npz":
        print(f"error: --out {args.out}: the output is a PyTorch file; use a .pt name",
              file=sys.stderr)
        return 2
    try:
        path = convert(args.weights, args.mean, args.out)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
