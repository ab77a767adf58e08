"""Step-time overhead of the memory frame discriminator against the plain 2D frame head.

    python -m benchmarks.bench_memory [--config demo_memory.yaml] [--steps 20] [--rounds 3]
        [key=value ...]

Both runs are the same config except ``model.frame_discriminator`` (memory vs resnet2d); one
full ``train_step`` (D step with R1 and the memory writes, G step, EMA) on random uint8
batches, so the data loader is not involved. The two alternate in rounds inside one run;
the ratio is what to read (memoryGAN §4.5 reports +8.9% on images).
"""
from __future__ import annotations

import argparse
import time

import torch

from vidgan.config import load_config
from vidgan.train import Trainer


def _batches(cfg, device):
    m, t = cfg.model, cfg.train
    while True:
        video = torch.randint(0, 256, (t.batch_size, 3, m.n_frames, m.resolution, m.resolution),
                              dtype=torch.uint8, device=device)
        yield video, torch.zeros(t.batch_size, dtype=torch.long), []


def _seconds_per_step(trainer: Trainer, steps: int) -> float:
    batches = _batches(trainer.cfg, trainer.device)
    trainer.train_step(batches)  # warm-up
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batches)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo_memory.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    base = list(args.overrides) + ["train.out_dir=/tmp/bench_memory", "data.num_workers=0"]
    trainers = {kind: Trainer(load_config(args.config, base + [
        f"model.frame_discriminator={kind}"])) for kind in ("memory", "resnet2d")}
    times = {kind: [] for kind in trainers}
    for _ in range(args.rounds):
        for kind, trainer in trainers.items():
            times[kind].append(_seconds_per_step(trainer, args.steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device "
          f"{trainers['memory'].device}, config {args.config} {' '.join(args.overrides)}")
    for kind, values in times.items():
        print(f"  {kind:9s} {sum(values) / len(values):.4f} s/step  (rounds: "
              f"{', '.join(f'{v:.4f}' for v in values)})")
    ratios = [m / r for m, r in zip(times["memory"], times["resnet2d"])]
    print(f"  memory / resnet2d: {sum(ratios) / len(ratios):.3f} (per round: "
          f"{', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
