"""Training speed: seconds per full ``Trainer.train_step`` (D step with R1, G step, EMA) and peak
memory, per config, precision and convolution path, on synthetic uint8 batches already on the
device (the data loader is not timed; benchmarks/bench_data.py times it); and the wall time of
the tgan2 evaluation protocol.

    python -m benchmarks.bench_train --configs ucf101_st4,ucf101_st2,ucf101_naive \\
        --amp fp32,bf16 --batch 32 --conv fast,plain [--channels-last] [--cudnn-benchmark] \\
        [--max-batch ucf101_naive] [--eval-protocol]

On the CPU, pass smaller sizes as overrides (e.g. ``model.ch=8 model.dis_ch=8``). Every cell
runs ``--warmup`` steps (cuDNN autotuning, allocator) and then ``--iterations`` timed steps
with one device sync at each end, so the host syncs inside the step count as they would in
training.
"""
from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from vidgan.config import load_config
from vidgan.models.conv import fast_convolutions


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


def build_trainer(config: str, batch: int, amp: str, work: Path, overrides: List[str],
                  channels_last: bool):
    """A Trainer on a 4-clip synthetic dataset at the config's resolution (it must exist for
    the Trainer to start; the timed steps never read it). The scratch dataset's keys come
    after ``overrides``: a data.root there must not receive it."""
    from vidgan.train import Trainer
    base = load_config(config, overrides)
    cfg = load_config(config, [
        *overrides, "data.dataset=synthetic", f"data.root={work / 'data'}",
        "data.num_workers=0", "data.synthetic_videos_per_class=1",
        f"data.synthetic_frames={base.model.n_frames * base.data.frame_stride}",
        f"train.out_dir={work / 'run'}", f"train.batch_size={batch}",
        f"train.amp={'bf16' if amp == 'bf16' else 'none'}", "eval.metrics=[]",
        "eval.sample_interval=0"])
    trainer = Trainer(cfg, overwrite=True)
    if channels_last:
        for net in (trainer.G, trainer.D, trainer.G_ema):
            net.to(memory_format=torch.channels_last_3d)
    return trainer


def time_steps(trainer, warmup: int, iterations: int) -> Dict[str, float]:
    """s/it over ``iterations`` train_steps after ``warmup``, and peak device memory (GiB)."""
    cfg, device = trainer.cfg, trainer.device
    m = cfg.model
    video = torch.randint(0, 256, (cfg.train.batch_size, 3, m.n_frames, m.resolution,
                                   m.resolution), dtype=torch.uint8, device=device)
    y = torch.randint(max(m.n_classes, 1), (cfg.train.batch_size,))
    batches = itertools.repeat((video, y, []))
    for _ in range(warmup):
        trainer.train_step(batches)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.train_step(batches)
    _sync(device)
    seconds = (time.perf_counter() - start) / iterations
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return {"s_per_it": seconds, "peak_gib": peak}


def step_without_finite_check(opt, model, loss) -> bool:
    """``Trainer._step_if_finite`` without its ``isfinite`` (a host sync per phase): for
    timing what that sync costs, never for training."""
    from vidgan import distributed
    distributed.average_gradients(model.parameters(), loss)
    opt.step()
    return True


def measure(config: str, batch: int, amp: str, conv: str, args, overrides: List[str]) -> Dict:
    with tempfile.TemporaryDirectory() as work, fast_convolutions(conv == "fast"):
        trainer = build_trainer(config, batch, amp, Path(work), overrides, args.channels_last)
        if args.no_finite_check:
            trainer._step_if_finite = step_without_finite_check
        try:
            return time_steps(trainer, args.warmup, args.iterations)
        finally:
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def largest_batch(config: str, amp: str, conv: str, args, overrides: List[str],
                  start: int) -> Optional[int]:
    """The largest batch (doubling from ``start``, then halving the gap) whose steps fit."""
    fits, fails = None, None
    b = start
    while fails is None or fails - fits > max(1, start // 8):
        try:
            one = argparse.Namespace(**{**vars(args), "warmup": 1, "iterations": 1})
            measure(config, b, amp, conv, one, overrides)
            fits = b
        except RuntimeError as err:
            if not _is_oom(err):
                raise
            fails = b
        if fails is None:
            b *= 2
        elif fits is None:
            if b <= 1:
                return None
            b //= 2
        else:
            b = (fits + fails) // 2
    return fits


def time_evaluation(config: str, overrides: List[str], device: torch.device, n_samples: int,
                    repeats: int, batch: int) -> float:
    """Wall seconds of the tgan2 protocol (``repeats`` x ``n_samples`` clips, IS + FID + DDM)
    with the config's generator and C3D at random weights (the speed does not depend on them)
    and real statistics from random features."""
    from vidgan.metrics.evaluation import RealStats, generated_clips, run_protocol
    from vidgan.metrics import C3D
    from vidgan.models import build_generator
    from vidgan.metrics.stats import mean_cov
    cfg = load_config(config, overrides)
    G = build_generator(cfg).to(device)
    c3d = C3D().to(device).eval()
    rng = torch.Generator().manual_seed(0)
    feats = torch.randn(n_samples, 4096, generator=rng, dtype=torch.float64).numpy()
    mu, cov = mean_cov(feats)
    stats = RealStats(mu=mu, cov=cov,
                      test_logits=torch.randn(n_samples, 101, generator=rng).numpy())
    _sync(device)
    start = time.perf_counter()
    run_protocol(lambda r: generated_clips(G, n_samples, batch, device, seed=r),
                 c3d, metrics=["is", "fid", "ddm"], repeats=repeats, device=device,
                 real_stats=stats)
    _sync(device)
    return time.perf_counter() - start


def _versions(device: torch.device) -> str:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    return f"{name}; torch {torch.__version__}, cuDNN {cudnn}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="ucf101_st4,ucf101_st2,ucf101_naive")
    p.add_argument("--amp", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--conv", default="fast,plain",
                   help="the discriminator's Conv3d: fast (vidgan.models.conv) and/or plain")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--channels-last", action="store_true", help="models in channels_last_3d")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--no-finite-check", action="store_true",
                   help="time the step without its per-phase isfinite host sync (timing only)")
    p.add_argument("--max-batch", default="", help="configs to find the largest batch for")
    p.add_argument("--eval-protocol", action="store_true",
                   help="also time the tgan2 evaluation protocol with the first config's G")
    p.add_argument("--eval-samples", type=int, default=2048)
    p.add_argument("--eval-repeats", type=int, default=10)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = p.parse_args(argv)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = list(args.overrides) + [f"train.device={device.type}"]
    print("command:", shlex.join([sys.executable, "-m", "benchmarks.bench_train"] +
                                 (sys.argv[1:] if argv is None else list(argv))))
    print(f"{_versions(device)}; cudnn.benchmark {args.cudnn_benchmark}, channels_last_3d "
          f"{args.channels_last}, finite check {not args.no_finite_check}; {args.warmup} "
          f"warm-up + {args.iterations} timed steps")
    print("\n| config | batch | precision | D convolutions | s/it | it/s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for config, amp, conv in itertools.product(args.configs.split(","), args.amp.split(","),
                                               args.conv.split(",")):
        try:
            r = measure(config, args.batch, amp, conv, args, overrides)
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            print(f"| {config} | {args.batch} | {amp} | {conv} | {r['s_per_it']:.3f} | "
                  f"{1 / r['s_per_it']:.2f} | {peak} |", flush=True)
        except RuntimeError as err:
            if not _is_oom(err):
                raise
            print(f"| {config} | {args.batch} | {amp} | {conv} | out of memory | | |", flush=True)
    for config in filter(None, args.max_batch.split(",")):
        for amp in args.amp.split(","):
            conv = args.conv.split(",")[0]
            fits = largest_batch(config, amp, conv, args, overrides, args.batch)
            line = f"| {config} | largest: {fits} | {amp} | {conv} |"
            if fits is not None:
                r = measure(config, fits, amp, conv, args, overrides)
                line += f" {r['s_per_it']:.3f} | {1 / r['s_per_it']:.2f} | {r['peak_gib']:.1f} |"
            print(line, flush=True)
    if args.eval_protocol:
        config = args.configs.split(",")[0]
        seconds = time_evaluation(config, overrides, device, args.eval_samples,
                                  args.eval_repeats, args.eval_batch)
        print(f"\ntgan2 protocol ({args.eval_repeats} x {args.eval_samples} clips, IS + FID "
              f"+ DDM, {config}'s G at random weights): {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
