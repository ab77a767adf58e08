"""Mode coverage of each discriminator on the modes dataset: train every config with every
seed for the same iterations, score the final EMA generator with the analytic mode
classifier, report mean +- sd over the seeds.

    python -m benchmarks.bench_modes [--configs modes_st4,modes_3d2d,modes_memory,modes_mocogan]
        [--seeds 0,1,2] [--iterations 1000] [--n-samples 2048] [--jobs 1]
        [--out runs/bench_modes] [--extend-from DIR] [--rescore] [key=value ...]

Each run is ``train.py`` then ``python -m vidgan.evaluate --metrics modes`` in a subprocess
(``--jobs`` of them at a time, the CPU threads split between them). Results accumulate in
``<out>/results.json``: a run already there is not repeated, so an interrupted benchmark
continues where it stopped. s/it is the median of the run's logged it/s, inverted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

REPO = Path(__file__).resolve().parent.parent
SCORES = ("modes_covered", "modes_kl", "modes_valid", "modes_shapes", "modes_colours",
          "modes_directions")


def seconds_per_iteration(tb_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tb_dir)).Reload()
    rates = [e.value for e in events.Scalars("it_per_s")]
    return 1.0 / statistics.median(rates[1:] or rates)  # the first includes start-up


def run_one(config: str, seed: int, args, threads: int) -> dict:
    """Train ``config`` with ``seed``, evaluate the final checkpoint; the result record."""
    run = Path(args.out) / f"{config}_seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    start = "--overwrite"
    if args.extend_from:  # continue the shorter run: resume is exact, so this is the long run
        shorter = Path(args.extend_from) / f"{config}_seed{seed}"
        if not (shorter / "checkpoints").is_dir():
            raise FileNotFoundError(f"--extend-from: no run {shorter}")
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(shorter, run)
        start = "--resume"
    train = [sys.executable, "train.py", "--config", config, start,
             f"train.seed={seed}", f"train.iterations={args.iterations}",
             f"train.out_dir={run}", f"train.checkpoint_interval={args.iterations}",
             "eval.interval=0", "eval.sample_interval=0", *args.overrides]
    with open(Path(args.out) / f"{config}_seed{seed}.log", "w") as log:
        subprocess.run(train, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
        ckpt = run / "checkpoints" / f"ckpt_{args.iterations:08d}.pt"
        scores = run / "modes.json"
        subprocess.run([sys.executable, "-m", "vidgan.evaluate", "--checkpoint", str(ckpt),
                        "--metrics", "modes", "--n-samples", str(args.n_samples),
                        "--seed", str(1000 + seed), "--device", "cpu", "--out", str(scores)],
                       cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    record = json.loads(scores.read_text())["scores"]
    return {"config": config, "seed": seed, "iterations": args.iterations,
            "n_samples": args.n_samples, "overrides": args.overrides,
            "s_per_it": seconds_per_iteration(run / "tb"), **latent_spread(ckpt),
            **{k: v["mean"] for k, v in record.items() if k.startswith("modes_")}}


def clip_motion(video: torch.Tensor, early: int = 3) -> dict:
    """How much (n, 3, T, H, W) clips in grey levels (0-255) differ across the batch and move:
    the per-pixel std across the clips (``spread_*``) and the mean absolute change from the
    previous frame (``change_*``), averaged over frames 1..``early`` (``*_early``; change from
    frame 2) and over the frames after (``*_late``), with both curves over t."""
    std = video.std(dim=0).mean(dim=(0, 2, 3))  # (T,)
    change = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))  # (T - 1,)
    return {"spread_early": float(std[:early].mean()), "spread_late": float(std[early:].mean()),
            "change_early": float(change[:early - 1].mean()),
            "change_late": float(change[early - 1:].mean()),
            # the curves over t, for benchmarks/plot_temporal.py
            "spread_curve": [round(float(v), 3) for v in std],
            "change_curve": [round(float(v), 3) for v in change]}


@torch.no_grad()
def latent_spread(checkpoint: Path, n: int = 16, seed: int = 123, early: int = 3) -> dict:
    """``clip_motion`` of the EMA generator's clips for ``n`` fixed latents. A generator whose
    frames stop following z after a few steps has spread_late << spread_early; one whose
    clips freeze, change_late << change_early."""
    from vidgan.checkpoint import load_generator
    G = load_generator(checkpoint, device="cpu").G
    z = G.sample_z(n, generator=torch.Generator().manual_seed(seed))
    return clip_motion((G(z) + 1) * 127.5, early)


def real_clips(config: str, n: int, seed: int = 0) -> torch.Tensor:
    """(n, T, H, W, 3) uint8 clips of the modes dataset (random modes, drawn with ``seed``),
    rendered at the config's resolution and length."""
    import numpy as np
    from vidgan.config import load_config
    from vidgan.data.modes import N_MODES, render_clip
    cfg = load_config(config)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([
        render_clip(int(m), cfg.model.n_frames, cfg.model.resolution, rng)
        for m in rng.integers(0, N_MODES, n)]))


def real_motion(config: str, n: int = 256) -> dict:
    """``clip_motion`` of ``n`` ``real_clips``: the reference a generator's numbers are read
    against (a real clip's object moves by 1-2 px per frame, so its change per frame is
    small)."""
    return clip_motion(real_clips(config, n).float().permute(0, 4, 1, 2, 3))


def _top_reason(rows: list) -> str:
    """The test that turns away most clips, with its mean share over the seeds."""
    keys = [k for k in rows[0] if k.startswith("modes_invalid_")]
    if not keys or not all(k in r for r in rows for k in keys):
        return "-"
    share = {k: statistics.mean(r[k] for r in rows) for k in keys}
    top = max(share, key=share.get)
    return f"{top[len('modes_invalid_'):].replace('_', ' ')} ({share[top]:.2f})"


def cell(values, digits) -> str:
    """mean ± sd (one value: itself)."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(results: list, configs: list) -> str:
    lines = ["| config | seeds | modes covered (of 128) | KL(p_gen ‖ U) | fraction valid | "
             "shapes / colours / directions | most clips invalid for | s/it |",
             "|---|---|---|---|---|---|---|---|"]
    for config in configs:
        rows = [r for r in results if r["config"] == config]
        if not rows:
            continue

        def col(key):
            return [r[key] for r in rows]
        factors = " / ".join(f"{statistics.mean(col(k)):.1f}"
                             for k in ("modes_shapes", "modes_colours", "modes_directions"))
        lines.append(f"| {config} | {len(rows)} | {cell(col('modes_covered'), 1)} | "
                     f"{cell(col('modes_kl'), 3)} | {cell(col('modes_valid'), 3)} | {factors} | "
                     f"{_top_reason(rows)} | {cell(col('s_per_it'), 3)} |")
    return "\n".join(lines)


def factor_table(results: list, configs: list) -> str:
    """Each factor read on its own: the share of clips where it reads, the values covered
    and KL(p || uniform) over those clips, mean ± sd over the seeds (runs scored before the
    factor scores existed are left out)."""
    names = ("shape", "colour", "direction")
    lines = ["| config | seeds | " + " | ".join(
        f"{n} read / covered / KL" for n in names) + " |", "|---|---|---|---|---|"]
    for config in configs:
        rows = [r for r in results if r["config"] == config and "modes_shape_read" in r]
        if not rows:
            continue
        cells = [" / ".join((cell([r[f"modes_{n}_read"] for r in rows], 2),
                             cell([r[f"modes_{n}_covered"] for r in rows], 1),
                             cell([r[f"modes_{n}_kl"] for r in rows], 2))) for n in names]
        lines.append(f"| {config} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(results: list, configs: list, real: Optional[dict] = None) -> str:
    """``latent_spread`` of the final EMA generators, mean ± sd over the seeds; ``real``
    (``real_motion``) as the first row."""
    lines = ["| config | seeds | spread across z, frames 1-3 | frames 4-16 | "
             "change per frame, frames 2-3 | frames 4-16 |", "|---|---|---|---|---|---|"]
    if real:
        lines.append("| real clips (the dataset) | - | " + " | ".join(
            f"{real[k]:.1f}" for k in ("spread_early", "spread_late", "change_early",
                                       "change_late")) + " |")
    for config in configs:
        rows = [r for r in results if r["config"] == config and "change_late" in r]
        if rows:
            lines.append(f"| {config} | {len(rows)} | " + " | ".join(
                cell([r[k] for r in rows], 1) for k in ("spread_early", "spread_late",
                                                        "change_early", "change_late")) + " |")
    return "\n".join(lines)


def reason_table(results: list, configs: list) -> str:
    """The share of clips each classifier test turns away first, mean over the seeds."""
    keys = [k for k in (results[0] if results else {}) if k.startswith("modes_invalid_")]
    lines = ["| config | " + " | ".join(k[len("modes_invalid_"):].replace("_", " ")
                                       for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for config in configs:
        rows = [r for r in results if r["config"] == config and all(k in r for k in keys)]
        if rows and keys:
            lines.append(f"| {config} | " + " | ".join(
                f"{statistics.mean(r[k] for r in rows):.3f}" for k in keys) + " |")
    return "\n".join(lines)


def load_results(out: Path) -> list:
    """The records in ``<out>/results.json`` (creating ``out``), [] for a new benchmark."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []


def run_pending(todo: list, run, describe, results: list, out: Path, jobs: int) -> int:
    """``run(item, threads)`` for every item, ``jobs`` at a time with the CPU threads split
    between them; each record is appended to ``results`` and ``<out>/results.json`` as soon
    as it is done (an interrupted benchmark keeps what finished) and ``describe(item,
    record)`` printed. Returns the threads each run had."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()

    def task(item):
        record = run(item, threads)
        with lock:
            results.append(record)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            print(describe(item, record), flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(task, todo))
    return threads


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="modes_st4,modes_3d2d,modes_memory,modes_mocogan")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--n-samples", type=int, default=2048)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_modes")
    parser.add_argument("--extend-from", default="",
                        help="a bench_modes directory holding shorter runs of the same configs "
                             "and seeds: each run resumes from its final checkpoint instead of "
                             "starting over (resume is bitwise exact, so the result is the "
                             "long run's); s/it is the median over both parts")
    parser.add_argument("--rescore", action="store_true",
                        help="measure latent_spread again on the stored final checkpoints")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    results = load_results(out)
    if args.rescore:
        for r in results:
            ckpt = (out / f"{r['config']}_seed{r['seed']}" / "checkpoints"
                    / f"ckpt_{r['iterations']:08d}.pt")
            if ckpt.is_file():
                r.update(latent_spread(ckpt))
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    done = {(r["config"], r["seed"], r["iterations"]) for r in results}
    todo = [(c, s) for c in configs for s in seeds if (c, s, args.iterations) not in done]

    def describe(item, record):
        return (f"{item[0]} seed {item[1]}: covered {record['modes_covered']:.0f}, "
                f"KL {record['modes_kl']:.3f}, valid {record['modes_valid']:.3f}, "
                f"spread {record['spread_early']:.1f} / {record['spread_late']:.1f}, "
                f"{record['s_per_it']:.3f} s/it")
    threads = run_pending(todo, lambda item, th: run_one(*item, args, th), describe, results,
                          out, args.jobs)
    current = [r for r in results if r["iterations"] == args.iterations]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.jobs} job(s) x {threads} "
          f"thread(s); {args.iterations} iterations, {args.n_samples} clips scored per run")
    print(table(current, configs))
    print()
    print(reason_table(current, configs))
    print()
    print(factor_table(current, configs))
    print()
    print(spread_table(current, configs, real_motion(configs[0])))


if __name__ == "__main__":
    main()
