"""Per-head diagnostics of finished runs, read from their TensorBoard logs: the median over
iteration windows of the gradient norm each D head sent G (``grad_G/<head>``, logged every
log interval with train.head_gradients) and of the memory head's read statistics
(``frame/*``).

    python -m benchmarks.head_diagnostics runs/bench26/modes_memory_seed0 [...] \
        [--windows 0,100,400,1000]

Prints one table per run; with several runs, also their mean per window.
"""
import argparse
import statistics
from pathlib import Path
from typing import Dict, List

TAGS = ["grad_G/L1", "grad_G/L2", "grad_G/L3", "grad_G/L4", "grad_G/frame",
        "frame/single_label_real", "frame/single_label_fake", "frame/clipped_fake",
        "frame/p_real", "frame/p_fake", "frame/cos_fake_queries", "frame/cos_real_keys",
        "frame/cos_sampled_keys", "loss/D_main"]


def read(run: Path) -> Dict[str, List]:
    """{tag: [(step, value), ...]} of the TAGS the run logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0}).Reload()
    have = set(events.Tags()["scalars"])
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in TAGS if tag in have}


def windowed(series: Dict[str, List], edges: List[int]) -> Dict[str, List[float]]:
    """{tag: [median in [edges[i], edges[i+1]) for each window]} (NaN for an empty one)."""
    out = {}
    for tag, points in series.items():
        out[tag] = []
        for lo, hi in zip(edges, edges[1:]):
            values = [v for s, v in points if lo <= s < hi or (hi == edges[-1] and s == hi)]
            out[tag].append(statistics.median(values) if values else float("nan"))
    return out


def show(title: str, table: Dict[str, List[float]], edges: List[int]) -> None:
    print(title)
    print("| tag | " + " | ".join(f"{a}-{b}" for a, b in zip(edges, edges[1:])) + " |")
    print("|---" * len(edges) + "|")
    for tag, values in table.items():
        print(f"| {tag} | " + " | ".join(f"{v:.3g}" for v in values) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--windows", default="0,100,400,1000",
                        help="window edges in iterations (default 0,100,400,1000)")
    args = parser.parse_args(argv)
    edges = [int(x) for x in args.windows.split(",")]
    tables = []
    for run in args.runs:
        tables.append(windowed(read(run), edges))
        show(f"\n{run}: median per window", tables[-1], edges)
    if len(tables) > 1:
        common = set.intersection(*(set(t) for t in tables))
        mean = {tag: [statistics.fmean(t[tag][i] for t in tables) for i in range(len(edges) - 1)]
                for tag in TAGS if tag in common}
        show(f"\nmean of the {len(tables)} runs' medians", mean, edges)


if __name__ == "__main__":
    main()
