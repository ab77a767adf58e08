"""CPU time of one training iteration (``Trainer.train_step``) under settings that differ only
in overrides, measured in one process per setting and interleaved A B C A B C, so a change of
the training step is timed against the one before on the same machine at the same time.

    python -m benchmarks.bench_step --config demo --rounds 3 --steps 20 \\
        --variant official --variant d_first train.step_order=d_first [key=value ...]

Each measurement is the process CPU time (``time.process_time``, one thread) of ``--steps``
iterations after ``--warmup`` ones, on the config's own data; CPU time rather than wall time
because these machines are shared. Prints the median s/it per variant and its ratio to the
first variant.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(config: str, overrides: list, steps: int, warmup: int) -> float:
    """CPU seconds per iteration of one fresh Trainer (in this process)."""
    import time

    import torch
    from vidgan.config import load_config
    from vidgan.train import Trainer
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(config, [f"train.out_dir={out}", "data.num_workers=0",
                                   "train.device=cpu", *overrides])
        trainer = Trainer(cfg)
        batches = iter(trainer.loader)
        for _ in range(warmup):
            trainer.train_step(batches)
        start = time.process_time()
        for _ in range(steps):
            trainer.train_step(batches)
        return (time.process_time() - start) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--variant", nargs="+", action="append", required=True,
                        help="LABEL [key=value ...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--one", nargs="*", help=argparse.SUPPRESS)  # a child: measure, print
    parser.add_argument("overrides", nargs="*", help="overrides for every variant")
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.config, args.one, args.steps, args.warmup)))
        return
    times = {v[0]: [] for v in args.variant}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(args.rounds):
        for label, *overrides in args.variant:
            cmd = [sys.executable, "-m", "benchmarks.bench_step", "--config", args.config,
                   "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--variant", label, "--one", *args.overrides, *overrides]
            out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True).stdout
            times[label].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(times[args.variant[0][0]])
    print(f"{args.config}: {args.steps} iterations after {args.warmup}, {args.rounds} rounds, "
          f"CPU seconds per iteration (one thread)")
    print("| variant | s/it (median) | rounds | / first |")
    print("|---|---|---|---|")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"| {label} | {med:.3f} | {', '.join(f'{v:.3f}' for v in values)} | "
              f"{med / base:.2f} |")


if __name__ == "__main__":
    main()
