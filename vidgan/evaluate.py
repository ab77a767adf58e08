"""Score a generator with the registered metrics (vidgan.metrics.registry): C3D IS/FID/DDM
(tgan2 §5.7, TGAN §6.5), I3D FVD/KVD (StyleGAN-V's fvd2048_16f, DIGAN's KVD), the analytic
modes and synthetic scores.

    python -m vidgan.evaluate --checkpoint CKPT --c3d-weights W.npz --c3d-mean mean2.npz \
        --metrics is,fid,ddm --protocol tgan2
    python -m vidgan.evaluate --checkpoint CKPT --i3d-weights i3d_pretrained_400.pt \
        --metrics fvd2048_16f,kvd2048_16f
    python -m vidgan.evaluate --real --config ucf101_st4.yaml --c3d-weights c3d_ucf101.pt
    python -m vidgan.evaluate --save-stats --config ucf101_st4.yaml --c3d-weights c3d_ucf101.pt

A thin CLI over vidgan.metrics.evaluation (the protocols, the cached real references) and
the registry; ``torchrun ... -m vidgan.evaluate`` splits the clips over the processes and
gives the numbers one process gives.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from tqdm import tqdm

from vidgan import distributed
from vidgan.checkpoint import CheckpointError, load_generator
from vidgan.config import ConfigError, TrainConfig, config_from_dict, load_config, to_dict
from vidgan.device import resolve_device
from vidgan.metrics.evaluation import (PROTOCOLS, eval_dataset, generated_clips,
                                       load_classifier, load_real_stats, metric_groups,
                                       random_real_keys, real_clips, run_protocol)
from vidgan.metrics.registry import check_metric_names, classifiers_needed, metric_names

# ------------------------------------------------------------------ CLI
def _parse_metrics(text: str) -> List[str]:
    metrics = [m.strip() for m in text.split(",") if m.strip()]
    check_metric_names(metrics, "--metrics")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vidgan.evaluate",
        description="Score a checkpoint (or real clips) with the registered metrics: C3D "
                    "IS/FID/DDM, I3D FVD/KVD, the analytic modes and synthetic scores.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a vidgan checkpoint (ckpt_XXXXXXXX.pt)")
    source.add_argument("--real", action="store_true",
                        help="score real clips of --split instead (IS upper bound, TGAN §6.5)")
    p.add_argument("--config", help="config for the dataset (default: the checkpoint's)")
    p.add_argument("--c3d-weights", help="conv3d_deepnetA_ucf.npz or a converted .pt "
                                         "(default: eval.c3d_weights)")
    p.add_argument("--c3d-mean", help="mean2.npz (needed with the npz; default: eval.c3d_mean)")
    p.add_argument("--i3d-weights", help="i3d_pretrained_400.pt, StyleGAN-V's "
                                         "i3d_torchscript.pt or a converted .pt (default: "
                                         "eval.i3d_weights)")
    p.add_argument("--metrics", default="is,fid,ddm",
                   help=f"comma-separated, of: {', '.join(metric_names())} (README, Metrics)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help="default: modes (1 x 20000 clips) for --metrics modes, synthetic (1 x "
                        "256) for --metrics synthetic, fvd (1 set) when every metric fixes its "
                        "clip count (fvd2048_16f: 2048), else tgan2")
    p.add_argument("--n-samples", type=int,
                   help="clips per repeat (default: the protocol's); metrics that fix their "
                        "count keep it")
    p.add_argument("--repeats", type=int, help="repeats with fresh samples (default: protocol's)")
    p.add_argument("--batch-size", type=int,
                   help="clips per forward pass on each process (default: eval.batch_size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--collective-timeout", type=float,
                   default=TrainConfig.collective_timeout,
                   help="torchrun: seconds a process waits for another before it counts it as "
                        "lost and leaves (default: train.collective_timeout's, %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="repeat r samples with seed + r")
    p.add_argument("--no-ema", action="store_true", help="use G instead of the EMA weights G_ema")
    p.add_argument("--split", choices=("train", "test", "all"), default="train",
                   help="split scored by --real")
    p.add_argument("--save-stats", action="store_true",
                   help="compute and cache the real references the metrics need")
    p.add_argument("--stats-clips", type=int,
                   help="clips for the C3D references (default: one per video)")
    p.add_argument("--out", help="result JSON (default: next to the checkpoint, "
                                 "<stem>_eval_<protocol>.json)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. data.root=...")
    return p


def _default_protocol(metrics: Sequence[str]) -> str:
    from vidgan.metrics.registry import get_metric
    if len(metrics) == 1 and metrics[0] in PROTOCOLS:  # an analytic metric alone
        return metrics[0]
    if all(get_metric(m).n_samples for m in metrics):
        return "fvd"
    return "tgan2"


def load_classifiers(names: Sequence[str], cfg, args, device) -> dict:
    """The classifiers ``names`` (c3d, i3d) from the CLI's or the config's weight files."""
    out = {}
    if "c3d" in names:
        weights = args.c3d_weights or cfg.eval.c3d_weights
        mean = args.c3d_mean or cfg.eval.c3d_mean or None
        if not weights:
            raise ValueError("no C3D weights: pass --c3d-weights (conv3d_deepnetA_ucf.npz with "
                             "--c3d-mean mean2.npz, or a .pt from data_prep.convert_c3d) or set "
                             "eval.c3d_weights (only --metrics modes,synthetic work without "
                             "weights)")
        out["c3d"] = load_classifier("c3d", weights, device, mean)
    if "i3d" in names:
        weights = args.i3d_weights or cfg.eval.i3d_weights
        if not weights:
            raise ValueError("no I3D weights: pass --i3d-weights (i3d_pretrained_400.pt, "
                             "StyleGAN-V's i3d_torchscript.pt or a .pt from "
                             "data_prep.convert_i3d) or set eval.i3d_weights")
        out["i3d"] = load_classifier("i3d", weights, device)
    return out


def _run(args: argparse.Namespace) -> Optional[Path]:
    if not (args.checkpoint or args.real or args.save_stats):
        raise ValueError("nothing to do: give --checkpoint CKPT, --real or --save-stats")
    for name in ("n_samples", "repeats", "batch_size", "stats_clips"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}={value}: must be >= 1")
    metrics = _parse_metrics(args.metrics)
    if args.protocol is None:
        args.protocol = _default_protocol(metrics)
    protocol = PROTOCOLS[args.protocol]
    n_samples = args.n_samples or protocol.n_samples
    repeats = args.repeats or protocol.repeats
    if "fid" in metrics and n_samples < 2:
        raise ValueError(f"--n-samples={n_samples}: FID needs at least 2 samples")
    # torchrun: clips split over the processes, scores gathered
    if not args.collective_timeout > 0:
        raise ValueError(f"--collective-timeout={args.collective_timeout}: must be > 0")
    device = distributed.init_from_env(resolve_device(args.device), args.collective_timeout)
    main = distributed.is_main()

    model = None
    if args.checkpoint:
        try:  # the model always as trained: its config and weights come from the checkpoint
            model = load_generator(args.checkpoint, str(device), use_ema=not args.no_ema)
        except RuntimeError as err:  # a damaged or foreign file: a user error, not a bug
            raise ValueError(str(err)) from None
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif model is not None:
        cfg = config_from_dict(to_dict(model.cfg), args.overrides)
    else:
        raise ValueError("--real/--save-stats need --config to name the dataset")

    classifiers = load_classifiers(classifiers_needed(metrics), cfg, args, device)
    batch_size = args.batch_size or cfg.eval.batch_size

    real_stats = None
    if args.save_stats or args.checkpoint or args.real:
        with distributed.main_first():  # rank 0 fills the references' cache
            real_stats = load_real_stats(cfg, classifiers, metrics, device=device,
                                         batch_size=batch_size, n_clips=args.stats_clips,
                                         progress=main)
        if args.save_stats and main:
            print(f"real references cached under {cfg.eval.stats_dir}", file=sys.stderr)
    if not (args.checkpoint or args.real):
        return None

    groups = metric_groups(metrics, cfg.model.n_frames, n_samples)
    bar = tqdm(total=sum(n for _, n, _ in groups) * repeats,
               desc=f"evaluate ({args.protocol})", unit="clip", disable=not main)
    split = False
    record = {"protocol": args.protocol, "n_samples": n_samples, "repeats": repeats,
              "splits": protocol.splits, "seed": args.seed, "metrics": metrics,
              "clips": {",".join(names): {"frames": frames, "n_samples": n}
                        for frames, n, names in groups},
              "c3d_weights": str(args.c3d_weights or cfg.eval.c3d_weights)
              if "c3d" in classifiers else None,
              "c3d_mean": str(args.c3d_mean or cfg.eval.c3d_mean or "") or None
              if "c3d" in classifiers else None,
              "i3d_weights": str(args.i3d_weights or cfg.eval.i3d_weights)
              if "i3d" in classifiers else None}
    scores = {}
    with bar:
        for frames, n, names in groups:
            if args.real:
                dataset = eval_dataset(cfg, args.split, frames)

                def make_clips(r: int, dataset=dataset, n=n):
                    keys = random_real_keys(len(dataset), n, args.seed + r)
                    return real_clips(dataset, keys, batch_size, cfg.data.num_workers)
            else:
                G = model.G.requires_grad_(False)
                split = distributed.is_distributed()  # real clips: every process scores them all

                def make_clips(r: int, frames=frames, n=n):
                    return generated_clips(G, n, batch_size, device, args.seed + r,
                                           n_frames=frames, split=split)
            scores.update(run_protocol(make_clips, classifiers, metrics=names, repeats=repeats,
                                       device=device, real_stats=real_stats,
                                       splits=protocol.splits, progress=bar, split=split))
    if args.real:
        record.update(source="real", dataset=cfg.data.dataset, root=cfg.data.root,
                      split=args.split)
    else:
        record.update(source="generator", checkpoint=str(args.checkpoint),
                      step=model.step, weights=model.weights)
    record["scores"] = scores
    if not main:  # every process holds the scores; rank 0 writes them
        return None

    if args.out:
        out = Path(args.out)
    elif args.checkpoint:
        ckpt = Path(args.checkpoint)
        out = ckpt.with_name(f"{ckpt.stem}_eval_{args.protocol}.json")
    else:
        out = Path(cfg.eval.stats_dir) / (f"real_{cfg.data.dataset}_{args.split}_eval_"
                                          f"{args.protocol}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for frames, n, names in groups:
        print(f"{', '.join(names)}: {repeats} x {n} clips of {frames} frames")
    for name, s in record["scores"].items():
        print(f"{name}: {s['mean']:.4f} ± {s['std']:.4f}")
    print(f"wrote {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except distributed.PeerLostError as err:  # torchrun: another process is gone
        print(f"error: a peer process was lost during the evaluation: {err}. No scores were "
              f"written; run the same command again", file=sys.stderr)
        distributed.leave_now()  # the process group cannot be shut down cleanly
    except (CheckpointError, ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
