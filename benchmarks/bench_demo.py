"""What the demo's samples show over training: train demo configs with several seeds, score
the EMA generator with vidgan.metrics.synthetic every --eval-interval iterations during
training (256 clips each), and report mean +- sd over the seeds at the chosen iterations.

    python -m benchmarks.bench_demo [--configs demo,demo_original] [--seeds 0,1,2]
        [--iterations 2000] [--at 300,600,1000,1500,2000] [--jobs 1] [--out runs/bench_demo]
        [--variant LABEL CONFIG [key=value ...]]... [key=value ...]

``--variant`` adds a config under its own label with its own overrides (e.g. a remedy:
``--variant 3d2d demo.yaml model.frame_discriminator=resnet2d``); ``train.iterations=N`` there
gives it its own length, which is how remedies that cost more per iteration are compared at
equal compute. Results accumulate in ``<out>/results.json``; a run already there (same
label, seed, iterations) is not repeated. s/it is the median of the logged it/s, inverted;
"minutes" is the training wall time to that iteration, evaluations included.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.bench_modes import cell, load_results, run_pending, seconds_per_iteration

REPO = Path(__file__).resolve().parent.parent
COLUMNS = (("synthetic_coherent", "coherent", 2), ("synthetic_classes", "classes", 1),
           ("synthetic_kl", "KL", 3), ("synthetic_colour_ratio", "colour / data", 2),
           ("synthetic_motion_ratio", "motion / data", 2),
           ("squares", "squares' share", 2))


def _curves(tb_dir: Path) -> dict:
    """{step: {score: value}} of the run's in-training evaluations, and minutes to each."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tb_dir)).Reload()
    start = events.Scalars("it_per_s")[0].wall_time
    out = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("eval/synthetic_"):
            for e in events.Scalars(tag):
                out.setdefault(e.step, {})[tag[len("eval/"):]] = e.value
                out[e.step]["minutes"] = (e.wall_time - start) / 60
    for scores in out.values():
        scores["squares"] = (scores.get("synthetic_share_square_horizontal", 0.0)
                             + scores.get("synthetic_share_square_vertical", 0.0))
    return out


def run_one(label: str, config: str, overrides: list, iterations: int, seed: int, args,
            threads: int) -> dict:
    run = Path(args.out) / f"{label}_seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    train = [sys.executable, "train.py", "--config", config, "--overwrite",
             f"train.seed={seed}", f"train.iterations={iterations}", f"train.out_dir={run}",
             f"train.checkpoint_interval={iterations}", "eval.metrics=[synthetic]",
             f"eval.interval={args.eval_interval}", "eval.n_samples=256",
             "eval.sample_interval=0", *args.overrides, *overrides]
    with open(Path(args.out) / f"{label}_seed{seed}.log", "w") as log:
        subprocess.run(train, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    return {"config": label, "seed": seed, "iterations": iterations, "source": config,
            "overrides": args.overrides + overrides,
            "s_per_it": seconds_per_iteration(run / "tb"),
            "curve": {str(k): v for k, v in sorted(_curves(run / "tb").items())}}


def table(results: list, configs: list, at: list) -> str:
    lines = ["| config | iterations | seeds | " + " | ".join(c[1] for c in COLUMNS) +
             " | minutes | s/it |", "|---" * (len(COLUMNS) + 5) + "|"]
    for config in configs:
        rows = [r for r in results if r["config"] == config]
        if not rows:
            continue
        steps = sorted({int(s) for r in rows for s in r["curve"]
                        if int(s) in at or int(s) == r["iterations"]})
        for step in steps:
            points = [r["curve"][str(step)] for r in rows if str(step) in r["curve"]]
            cols = [cell([p[key] for p in points if key in p], digits) if all(
                key in p for p in points) else "-" for key, _, digits in COLUMNS]
            lines.append(f"| {config} | {step} | {len(points)} | " + " | ".join(cols) +
                         f" | {statistics.mean(p['minutes'] for p in points):.1f} | "
                         f"{cell([r['s_per_it'] for r in rows], 3)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="demo,demo_original",
                        help="comma-separated config names, each its own label")
    parser.add_argument("--variant", nargs="+", action="append", default=[],
                        metavar="LABEL CONFIG [key=value", help="a labelled config + overrides")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--at", default="300,600,1000,1500,2000",
                        help="iterations reported in the table (and every config's last)")
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_demo")
    parser.add_argument("overrides", nargs="*", help="overrides for every run")
    args = parser.parse_args(argv)  # overrides for every run go before any --variant
    plan = [(name, name, []) for name in args.configs.split(",") if name]
    for variant in args.variant:
        if len(variant) < 2:
            parser.error(f"--variant {' '.join(variant)}: expected LABEL CONFIG [key=value ...]")
        plan.append((variant[0], variant[1], variant[2:]))

    def iterations_of(overrides):
        its = [o.split("=", 1)[1] for o in overrides if o.startswith("train.iterations=")]
        return int(its[-1]) if its else args.iterations
    plan = [(label, config, overrides, iterations_of(overrides))
            for label, config, overrides in plan]
    configs = [label for label, *_ in plan]
    seeds = [int(s) for s in args.seeds.split(",")]
    at = [int(s) for s in args.at.split(",")]
    out = Path(args.out)
    results = load_results(out)
    done = {(r["config"], r["seed"], r["iterations"]) for r in results}
    todo = [(*entry, s) for entry in plan for s in seeds
            if (entry[0], s, entry[3]) not in done]

    def describe(item, record):
        last = record["curve"][max(record["curve"], key=int)]
        return (f"{item[0]} seed {item[4]}: coherent {last['synthetic_coherent']:.2f}, "
                f"classes {last['synthetic_classes']:.0f}, KL {last['synthetic_kl']:.3f}, "
                f"{record['s_per_it']:.3f} s/it")
    threads = run_pending(todo, lambda item, th: run_one(*item, args, th), describe, results,
                          out, args.jobs)
    wanted = {(label, iterations) for label, _, _, iterations in plan}
    current = [r for r in results if (r["config"], r["iterations"]) in wanted]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.jobs} job(s) x {threads} "
          f"thread(s); synthetic metric on 256 clips every {args.eval_interval} iterations")
    print(table(current, configs, at))


if __name__ == "__main__":
    main()
