"""C3D throughput (clips/s) with random weights and the real architecture (docs/FIDELITY.md,
Evaluation).

    python benchmarks/bench_c3d.py [--device cpu] [--batch 8] [--iters 3] [--size 192]

The official evaluation took ~4 h per snapshot on a GPU; this tells what one repeat of the
tgan2 protocol (2048 clips) costs here.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from vidgan.metrics import C3D


def clips_per_second(read, x: torch.Tensor, iters: int, warmup: int = 1) -> float:
    """Clips per second of ``read(x)`` on the batch ``x``, after ``warmup`` untimed calls
    (CUDA synchronised before and after the timed ones)."""
    cuda = x.is_cuda
    with torch.inference_mode():
        for _ in range(warmup):
            read(x)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            read(x)
        if cuda:
            torch.cuda.synchronize()
        return len(x) * iters / (time.perf_counter() - start)


def bench(device: str, batch: int, iters: int, size: int, warmup: int = 1) -> float:
    """Clips per second of ``C3D.extract`` (preprocessing included) on (batch, 3, 16, size, size)."""
    model = C3D().to(device).eval()
    x = torch.rand(batch, 3, 16, size, size, device=device) * 2 - 1
    return clips_per_second(model.extract, x, iters, warmup)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--size", type=int, default=192, help="input H = W before the 112 resize")
    args = p.parse_args(argv)
    print("command:", shlex.join([sys.executable] + sys.argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    rate = bench(args.device, args.batch, args.iters, args.size)
    print(f"C3D batch {args.batch}, input {args.size}x{args.size}x16: {rate:.2f} clips/s; "
          f"one tgan2 repeat (2048 clips): {2048 / rate / 60:.1f} min; "
          f"full tgan2 protocol (10 x 2048): {20480 / rate / 3600:.2f} h of C3D time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
