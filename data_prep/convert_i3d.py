"""Convert Kinetics-400 I3D weights (the pytorch-i3d ``i3d_pretrained_400.pt`` of VideoGPT,
TATS and DIGAN, or a TorchScript archive with the same tensor names) into vidgan's checked
``.pt``, which records the batch-norm eps next to the weights:

    python -m data_prep.convert_i3d --weights i3d_pretrained_400.pt --out i3d_kinetics400.pt

``vidgan.metrics.i3d.load_i3d("i3d_kinetics400.pt")`` then reads a plain state dict with its eps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidgan.metrics.i3d import load_i3d, save_i3d


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.convert_i3d",
                                     description="Convert Kinetics-400 I3D weights to a .pt.")
    parser.add_argument("--weights", required=True,
                        help="i3d_pretrained_400.pt, or a TorchScript archive with its names")
    parser.add_argument("--out", required=True, help="output .pt, e.g. i3d_kinetics400.pt")
    parser.add_argument("--eps", type=float, default=None,
                        help="batch-norm eps (default: the file's; 1e-5 for "
                             "i3d_pretrained_400.pt; needed for an archive that shows none)")
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == Path(args.weights).resolve():
        print(f"error: --out {args.out} is the input file; choose another name", file=sys.stderr)
        return 2
    try:
        model = load_i3d(args.weights, eps=args.eps)  # checks the layout
        path = save_i3d(model, args.out, source={"weights": Path(args.weights).name})
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} (batch-norm eps {model.eps:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
