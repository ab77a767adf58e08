"""I3D throughput (clips/s) with random weights and the real architecture: what the FVD
protocols cost (vidgan.metrics.i3d; README, Metrics).

    python -m benchmarks.bench_i3d [--device cpu] [--batch 4] [--iters 2] [--size 128] [--frames 16]

A clip is read as the FVD reader reads it: uint8 quantisation, every frame resized to
224x224, the I3D forward. ``fvd2048_16f`` reads 2048 generated and (once, then cached) 2048
real clips; the projections below divide those counts by the measured rate.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from benchmarks.bench_c3d import clips_per_second
from vidgan.metrics.i3d import I3D, preprocess, to_uint8


def bench(device: str, batch: int, iters: int, size: int, frames: int,
          warmup: int = 1) -> float:
    """Clips per second of to_uint8 -> preprocess -> I3D on (batch, 3, frames, size, size)."""
    model = I3D().to(device).eval()
    x = torch.rand(batch, 3, frames, size, size, device=device) * 2 - 1
    return clips_per_second(lambda clips: model(preprocess(to_uint8(clips))), x, iters, warmup)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="input H = W before the 224 resize")
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args(argv)
    print("command:", shlex.join([sys.executable] + sys.argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    rate = bench(args.device, args.batch, args.iters, args.size, args.frames)
    print(f"I3D batch {args.batch}, input {args.size}x{args.size}x{args.frames}: "
          f"{rate:.2f} clips/s; projected from that rate: fvd2048_{args.frames}f's 2048 "
          f"generated clips {2048 / rate / 60:.1f} min (+ the same once for the real "
          f"reference), fvd256_{args.frames}f's 256 clips {256 / rate / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
