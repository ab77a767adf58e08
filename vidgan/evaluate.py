"""Score a generator with the UCF101 C3D (tgan2 §5.7, TGAN §6.5, docs/FIDELITY.md).

    python -m vidgan.evaluate --checkpoint CKPT --c3d-weights W.npz --c3d-mean mean2.npz \
        --metrics is,fid,ddm --protocol tgan2
    python -m vidgan.evaluate --real --config ucf101_st4.yaml --c3d-weights c3d_ucf101.pt
    python -m vidgan.evaluate --save-stats --config ucf101_st4.yaml --c3d-weights c3d_ucf101.pt

Protocols: ``tgan2`` = 2048 samples, IS with splits=1, repeated 10 times with fresh samples,
mean ± std over the repeats; ``tgan`` = 10,000 samples, 4 repeats. FID compares fc7 features
with the training split's statistics, DDM compares logits with the test split's; both are
cached under ``eval.stats_dir`` keyed by a hash of what produced them (dataset, preprocessing,
C3D weights). The Python API (``evaluate_generator``, ``load_real_stats``) is what the training
loop calls; ``main`` is a thin CLI over it.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from vidgan import distributed
from vidgan.checkpoint import CheckpointError, load_generator
from vidgan.config import (ANALYTIC_METRICS, C3D_METRICS, METRICS, Config, ConfigError,
                           config_from_dict, load_config, to_dict)
from vidgan.device import resolve_device
from vidgan.lock import WRITE_LOCK, DirectoryLock
from vidgan.metrics import C3D, ddm, frechet_distance_to_features, inception_score, load_c3d
from vidgan.metrics.c3d import N_FRAMES
from vidgan.metrics.modes import ModePredictions, classify_modes, mode_scores
from vidgan.metrics.stats import mean_cov
from vidgan.metrics.synthetic import SyntheticReading, read_synthetic, synthetic_scores
from vidgan.video_io import to_uint8

# metrics scored against real data: FID and DDM (cached C3D statistics), synthetic (ratios)
REAL_DATA_METRICS = ("fid", "ddm", "synthetic")
STATS_VERSION = 1  # bump when the statistics' definition changes; old cache files are ignored
# data settings that change speed, not the clips; left out of the statistics' cache key
PERFORMANCE_KEYS = ("num_workers", "decode_threads", "index_workers", "manifest",
                    "max_bad_fraction")


@dataclass(frozen=True)
class Protocol:
    n_samples: int
    repeats: int
    splits: int = 1


PROTOCOLS = {
    "tgan2": Protocol(n_samples=2048, repeats=10),  # tgan2 §5.7 / official evaluation code
    # TGAN §6.5 sample counts, with the TGANv2 preprocessing above. TGAN's own evaluation code
    # (pfnet-research/tgan evaluation/calc_inception.py) resized differently (bicubic to 128,
    # centre 112 crop, eps 1e-7), so its Table 4 numbers are comparable only approximately.
    "tgan": Protocol(n_samples=10_000, repeats=4),
    # mode coverage on the modes dataset (vidgan.metrics.modes): 20K clips for 128 modes
    "modes": Protocol(n_samples=20_000, repeats=1),
    # the demo's samples (vidgan.metrics.synthetic): 256 clips
    "synthetic": Protocol(n_samples=256, repeats=1),
}


@dataclass
class RealStats:
    """What FID and DDM compare against: training-split fc7 (mean, covariance) (FID) and
    test-split logits (DDM). A field is None when no requested metric needs it."""
    mu: Optional[np.ndarray] = None  # (4096,) float64
    cov: Optional[np.ndarray] = None  # (4096, 4096) float64
    test_logits: Optional[np.ndarray] = None  # (N_test, 101) float32
    # the synthetic metric's scores of real training clips: its colour spread and motion
    # are reported as ratios to these
    synthetic: Optional[Dict[str, float]] = None
    # device copies of the arrays above, made once per device (the covariance is 134 MB)
    _on_device: Dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False,
                                                  compare=False)

    def on(self, name: str, device: torch.device) -> torch.Tensor:
        """Field ``name`` as a tensor on ``device`` (float64 for mu and cov), cached."""
        key = (name, str(device))
        if key not in self._on_device:
            value = torch.as_tensor(getattr(self, name))
            self._on_device[key] = value.to(device, torch.float64 if name != "test_logits"
                                            else value.dtype)
        return self._on_device[key]


# ------------------------------------------------------------------ clips -> scores
@torch.inference_mode()
def classify(c3d: C3D, clips: Iterable[torch.Tensor], device: torch.device,
             progress: Optional[tqdm] = None):
    """(fc7 features (N, 4096), fc8 logits (N, 101)) as float32 tensors on ``device`` for
    batches of clips in [-1, 1], (B, 3, 16, H, W).

    They stay on the device (no copy, no sync per batch): the statistics that follow run
    there too."""
    features, logits = [], []
    for x in clips:
        f, y = c3d.extract(x.to(device, non_blocking=True))
        features.append(f)
        logits.append(y)
        if progress is not None:
            progress.update(len(x))
    return torch.cat(features), torch.cat(logits)


def check_metrics(metrics: Sequence[str], real_stats: Optional[RealStats]) -> None:
    """Fail before any sampling when a metric is unknown or its real statistics are missing."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics {list(metrics)}: expected a non-empty subset of "
                         f"{', '.join(METRICS)}")
    if "fid" in metrics and (real_stats is None or real_stats.mu is None):
        raise ValueError("FID needs the real training-split statistics (real_stats.mu, "
                         "real_stats.cov); get them with load_real_stats")
    if "ddm" in metrics and (real_stats is None or real_stats.test_logits is None):
        raise ValueError("DDM needs the real test-split logits (real_stats.test_logits); "
                         "get them with load_real_stats")


def compute_scores(features, logits, metrics: Sequence[str],
                   real_stats: Optional[RealStats] = None, splits: int = 1) -> Dict[str, float]:
    """The requested C3D metrics of one set of samples (others in ``metrics`` are skipped);
    ``features`` and ``logits`` are tensors (FID and DDM run on their device) or arrays."""
    check_metrics(metrics, real_stats)
    features, logits = torch.as_tensor(features), torch.as_tensor(logits)
    out = {}
    if "is" in metrics:
        # softmax in fp32, then float64, as the official inception_score
        probs = F.softmax(logits.float(), dim=1).double().cpu().numpy()
        out["is"] = inception_score(probs, splits=splits)[0]
    if "fid" in metrics:
        out["fid"] = frechet_distance_to_features(real_stats.on("mu", features.device),
                                                  real_stats.on("cov", features.device),
                                                  features)
    if "ddm" in metrics:
        out["ddm"] = ddm(real_stats.on("test_logits", logits.device), logits)
    return out


def generated_clips(G: nn.Module, n_samples: int, batch_size: int, device: torch.device,
                    seed: int, n_classes: Optional[int] = None,
                    n_frames: int = N_FRAMES, split: bool = False) -> Iterator[torch.Tensor]:
    """``n_samples`` dense clips (B, 3, n_frames, H, W) clipped to [-1, 1].

    z ~ U[-1,1] and, for a conditional G, labels uniform over the classes: the class prior of
    TGAN §6.5, which turns the conditional generator into one of the data distribution.
    ``n_frames`` is 16 for C3D whatever the training length (the ConvLSTM rolls on; the GRU's
    latent is drawn with motion noise for ``n_frames``). ``split`` (torchrun): this process
    renders only batches i with i % N == rank, from the same z as one process would draw
    (``score_clips`` gathers them back in order).
    """
    n_classes = G.n_classes if n_classes is None else n_classes
    rng = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    try:
        with torch.inference_mode():
            for i, start in enumerate(range(0, n_samples, batch_size)):
                b = min(batch_size, n_samples - start)
                z = G.sample_z(b, generator=rng, n_frames=n_frames).to(device)
                y = torch.randint(n_classes, (b,), generator=rng).to(device) if n_classes else None
                if split and i % distributed.world_size() != distributed.rank():
                    continue  # another process renders it; its z and y were drawn all the same
                yield G(z, y, n_frames=n_frames).float().clamp_(-1.0, 1.0)
    finally:
        G.train(was_training)


def read_batch(x: torch.Tensor, c3d: Optional[C3D], metrics: Sequence[str],
               device: torch.device) -> Dict[str, object]:
    """One batch of clips in [-1, 1] read by what ``metrics`` need: C3D's fc7 features and
    logits (left on the device), the analytic mode classifier, the synthetic reader."""
    out: Dict[str, object] = {}
    if "modes" in metrics or "synthetic" in metrics:
        video = to_uint8(x)
        if "modes" in metrics:
            out["modes"] = classify_modes(video)
        if "synthetic" in metrics:
            out["reading"] = read_synthetic(video)
    if any(m in C3D_METRICS for m in metrics):
        out["features"], out["logits"] = c3d.extract(x.to(device, non_blocking=True))
    return out


def score_clips(clips: Iterable[torch.Tensor], c3d: Optional[C3D], metrics: Sequence[str],
                device: torch.device, real_stats: Optional[RealStats] = None, splits: int = 1,
                progress: Optional[tqdm] = None, split: bool = False) -> Dict[str, float]:
    """The requested metrics of one set of clips in [-1, 1]: the C3D ones through ``c3d``
    (None is fine when none is requested), ``modes`` and ``synthetic`` through the analytic
    classifiers. ``split``: the clips are this process's share (``generated_clips(split=True)``)
    and the batches of every process are gathered back in order first, so every process gets
    the scores of the whole set, equal to one process's."""
    check_metrics(metrics, real_stats)
    if any(m in C3D_METRICS for m in metrics) and c3d is None:
        raise ValueError(f"metrics {list(metrics)} need the C3D classifier; only "
                         f"{' and '.join(ANALYTIC_METRICS)} work without it")
    batches = []
    with torch.inference_mode():
        for x in clips:
            batches.append(read_batch(x, c3d, metrics, device))
            if progress is not None:
                progress.update(len(x) * (distributed.world_size() if split else 1))
    if split:
        batches = distributed.gather_batches(batches, device)
    out = {}
    if any(m in C3D_METRICS for m in metrics):
        out.update(compute_scores(torch.cat([b["features"] for b in batches]),
                                  torch.cat([b["logits"] for b in batches]),
                                  metrics, real_stats, splits))
    if "modes" in metrics:
        predicted = ModePredictions.cat(b["modes"] for b in batches)
        out.update(mode_scores(predicted.mode, reason=predicted.reason, factors=predicted))
    if "synthetic" in metrics:
        out.update(synthetic_scores(SyntheticReading.cat(b["reading"] for b in batches),
                                    real_stats.synthetic if real_stats else None))
    return out


def evaluate_generator(G: nn.Module, c3d: Optional[C3D], *, metrics: Sequence[str],
                       n_samples: int, batch_size: int, device: torch.device | str, seed: int,
                       n_classes: Optional[int] = None, real_stats: Optional[RealStats] = None,
                       n_frames: int = N_FRAMES, splits: int = 1,
                       progress: Optional[tqdm] = None) -> Dict[str, float]:
    """One repeat: ``n_samples`` fresh clips from ``G`` scored by ``c3d`` (and/or the mode
    classifier); {metric: value}, where ``modes`` expands to modes_covered, modes_kl, ...

    This is the in-training evaluation (one repeat of the tgan2 protocol when n_samples=2048).
    ``G`` is put in eval mode for sampling and restored; fid/ddm need ``real_stats``.
    """
    check_metrics(metrics, real_stats)
    device = torch.device(device)
    split = distributed.is_distributed()  # torchrun: each process renders its share
    clips = generated_clips(G, n_samples, batch_size, device, seed, n_classes, n_frames, split)
    return score_clips(clips, c3d, metrics, device, real_stats, splits, progress, split)


def summarize(per_repeat: List[Dict[str, float]]) -> Dict[str, dict]:
    """{metric: {mean, std (ddof 0), values}} over the repeats, as the papers report."""
    return {name: {"mean": float(np.mean([r[name] for r in per_repeat])),
                   "std": float(np.std([r[name] for r in per_repeat])),
                   "values": [float(r[name]) for r in per_repeat]}
            for name in per_repeat[0]}


def run_protocol(make_clips: Callable[[int], Iterable[torch.Tensor]], c3d: Optional[C3D], *,
                 metrics: Sequence[str], repeats: int, device: torch.device,
                 real_stats: Optional[RealStats] = None, splits: int = 1,
                 progress: Optional[tqdm] = None, split: bool = False) -> Dict[str, dict]:
    """Score ``make_clips(repeat)`` for each repeat (fresh samples each time) and summarize;
    ``split``: the clips are this process's share (``score_clips``)."""
    check_metrics(metrics, real_stats)
    per_repeat = [score_clips(make_clips(r), c3d, metrics, device, real_stats, splits, progress,
                              split) for r in range(repeats)]
    return summarize(per_repeat)


# ------------------------------------------------------------------ real data
def _eval_config(cfg: Config, n_frames: int = N_FRAMES) -> Config:
    """The config with ``n_frames``-frame clips: C3D always sees 16 frames."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_frames=n_frames))


def eval_dataset(cfg: Config, split: str, n_frames: int = N_FRAMES):
    """Real clips of ``split`` (16 frames for C3D), centre-cropped and never flipped."""
    from vidgan.data import build_dataset
    return build_dataset(_eval_config(cfg, n_frames), split, augment=False, progress=False)


def real_clips(dataset, keys: Sequence, batch_size: int,
               num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Real clips in [-1, 1], (B, 3, 16, H, W), for dataset keys ``(index, clip seed)``."""
    from vidgan.data import normalize

    # Its own generator, so scoring never draws from the training RNG (bitwise resume).
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(keys),
                        num_workers=num_workers, prefetch_factor=4 if num_workers else None,
                        generator=torch.Generator())
    for batch in loader:  # (uint8 video (B, 3, 16, H, W), label)
        yield normalize(batch[0])


def random_real_keys(n_videos: int, n_samples: int, seed: int) -> List[tuple]:
    """``n_samples`` random (video, clip seed) keys: videos drawn with replacement."""
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(n_videos, size=n_samples).tolist(),
                    rng.integers(2 ** 31, size=n_samples).tolist()))


def c3d_fingerprint(c3d: C3D) -> str:
    """sha256 of the classifier's tensors: the same for the release npz and our .pt."""
    digest = hashlib.sha256()
    for name, tensor in c3d.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def stats_identity(cfg: Config, dataset, split: str, n_clips: Optional[int],
                   fingerprint: str) -> dict:
    """Everything the cached statistics depend on: the data section (dataset kind, root, split
    list, decode geometry; not worker counts), the file list with sizes, the preprocessing
    (resolution, 16 frames, frame stride) and the C3D weights."""
    root = Path(cfg.data.root).resolve()
    files = [[f, (root / f).stat().st_size] for f in dataset.files]  # paths relative to root
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in PERFORMANCE_KEYS}
    data["root"] = str(root)
    return {"version": STATS_VERSION, "data": data, "split": split, "n_videos": len(dataset),
            "files": files, "resolution": cfg.model.resolution, "n_frames": N_FRAMES,
            "n_clips": n_clips, "c3d": fingerprint}


def split_statistics(cfg: Config, c3d: C3D, split: str, *, device: torch.device | str,
                     batch_size: Optional[int] = None, n_clips: Optional[int] = None,
                     stats_dir: Optional[str | Path] = None, fingerprint: Optional[str] = None,
                     progress: bool = False) -> dict:
    """{'mu', 'cov', 'logits', 'path'} of one split, loaded from the cache or computed and saved.

    One clip per video (clip seed = its position), or ``n_clips`` clips cycling over the videos.
    """
    device = torch.device(device)
    fingerprint = fingerprint or c3d_fingerprint(c3d)
    dataset = eval_dataset(cfg, split)
    identity = stats_identity(cfg, dataset, split, n_clips, fingerprint)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(stats_dir or cfg.eval.stats_dir) / f"{cfg.data.dataset}_{split}_{key}.npz"
    if path.is_file():
        return _cached_statistics(path)
    # two evaluations needing the same statistics take turns: the second reads the first's
    with DirectoryLock(path.parent, WRITE_LOCK):
        if path.is_file():
            return _cached_statistics(path)
        return _compute_statistics(cfg, c3d, split, dataset, identity, path, device=device,
                                   batch_size=batch_size, n_clips=n_clips, progress=progress)


def _cached_statistics(path: Path) -> dict:
    with np.load(path) as data:
        return {"mu": data["mu"], "cov": data["cov"] if data["cov"].size else None,
                "logits": data["logits"], "path": path}


def _compute_statistics(cfg: Config, c3d: C3D, split: str, dataset, identity: dict,
                        path: Path, *, device: torch.device, batch_size: Optional[int],
                        n_clips: Optional[int], progress: bool) -> dict:
    """``split_statistics`` when the cache does not hold them: computed, saved atomically."""
    n = n_clips or identity["n_videos"]
    keys = [(k % identity["n_videos"], k) for k in range(n)]
    bar = tqdm(total=n, desc=f"C3D stats {split}", unit="clip", disable=not progress)
    with bar:
        clips = real_clips(dataset, keys, batch_size or cfg.eval.batch_size,
                           cfg.data.num_workers)
        features, logits = classify(c3d, clips, device, bar)
    mu, cov = mean_cov(features)
    logits = logits.cpu().numpy()
    if split != "train":  # only FID's training-split covariance is used (134 MB in float64)
        cov = np.zeros((0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, mu=mu, cov=cov, logits=logits, identity=json.dumps(identity))
    tmp.replace(path)
    return {"mu": mu, "cov": cov if cov.size else None, "logits": logits, "path": path}


def eval_frames(cfg: Config, metrics: Sequence[str]) -> int:
    """Frames per scored clip: C3D sees 16 whatever the training length; the analytic
    metrics alone read clips of the training length, what the samples show."""
    return N_FRAMES if any(m in C3D_METRICS for m in metrics) else cfg.model.n_frames


def synthetic_reference(cfg: Config, n_frames: int, n_clips: int = 256,
                        batch_size: int = 32) -> Dict[str, float]:
    """The synthetic metric's scores of ``n_clips`` random real training clips of
    ``n_frames`` frames (centre-cropped, never flipped): what generated clips are held to."""
    dataset = eval_dataset(cfg, "train", n_frames)
    keys = random_real_keys(len(dataset), n_clips, seed=0)
    return score_clips(real_clips(dataset, keys, batch_size), None, ["synthetic"],
                       torch.device("cpu"))


def load_real_stats(cfg: Config, c3d: Optional[C3D], metrics: Sequence[str], *,
                    device: torch.device | str, batch_size: Optional[int] = None,
                    n_clips: Optional[int] = None, stats_dir: Optional[str | Path] = None,
                    progress: bool = False) -> Optional[RealStats]:
    """Real statistics for ``metrics`` (None if none needs them), cached under stats_dir:
    FID uses the training split (docs/FIDELITY.md, Evaluation), DDM the test split (Basart 2017
    §3.2); the synthetic metric's reference is read from 256 training clips (not cached:
    seconds)."""
    if not any(m in REAL_DATA_METRICS for m in metrics):
        return None
    stats = RealStats()
    if "synthetic" in metrics:
        stats.synthetic = synthetic_reference(cfg, eval_frames(cfg, metrics))
    if "fid" not in metrics and "ddm" not in metrics:
        return stats
    kw = dict(device=device, batch_size=batch_size, n_clips=n_clips, stats_dir=stats_dir,
              fingerprint=c3d_fingerprint(c3d), progress=progress)
    if "fid" in metrics:
        train = split_statistics(cfg, c3d, "train", **kw)
        stats.mu, stats.cov = train["mu"], train["cov"]
    if "ddm" in metrics:
        stats.test_logits = split_statistics(cfg, c3d, "test", **kw)["logits"]
    return stats


# ------------------------------------------------------------------ CLI
def _parse_metrics(text: str) -> List[str]:
    metrics = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise ValueError(f"--metrics {text}: expected a comma-separated subset of "
                         f"{','.join(METRICS)}")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vidgan.evaluate",
        description="Score a checkpoint (or real clips) with the UCF101 C3D: IS, FID, DDM.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a vidgan checkpoint (ckpt_XXXXXXXX.pt)")
    source.add_argument("--real", action="store_true",
                        help="score real clips of --split instead (IS upper bound, TGAN §6.5)")
    p.add_argument("--config", help="config for the dataset (default: the checkpoint's)")
    p.add_argument("--c3d-weights", help="conv3d_deepnetA_ucf.npz or a converted .pt "
                                         "(default: eval.c3d_weights)")
    p.add_argument("--c3d-mean", help="mean2.npz (needed with the npz; default: eval.c3d_mean)")
    p.add_argument("--metrics", default="is,fid,ddm",
                   help="comma-separated: is,fid,ddm (C3D) and/or the analytic ones, no weights "
                        "needed: modes (the modes dataset's mode coverage), synthetic (the "
                        "demo's: coherent objects, classes, colour spread, motion)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help="default: modes (1 x 20000 clips) for --metrics modes, synthetic (1 x "
                        "256) for --metrics synthetic, else tgan2")
    p.add_argument("--n-samples", type=int, help="clips per repeat (default: the protocol's)")
    p.add_argument("--repeats", type=int, help="repeats with fresh samples (default: protocol's)")
    p.add_argument("--batch-size", type=int, help="C3D/G batch (default: eval.batch_size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="repeat r samples with seed + r")
    p.add_argument("--no-ema", action="store_true", help="use G instead of the EMA weights G_ema")
    p.add_argument("--split", choices=("train", "test", "all"), default="train",
                   help="split scored by --real")
    p.add_argument("--save-stats", action="store_true",
                   help="compute and cache the real statistics FID/DDM need")
    p.add_argument("--stats-clips", type=int,
                   help="clips for the real statistics (default: one per video)")
    p.add_argument("--out", help="result JSON (default: next to the checkpoint, "
                                 "<stem>_eval_<protocol>.json)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. data.root=...")
    return p


def _run(args: argparse.Namespace) -> Optional[Path]:
    if not (args.checkpoint or args.real or args.save_stats):
        raise ValueError("nothing to do: give --checkpoint CKPT, --real or --save-stats")
    for name in ("n_samples", "repeats", "batch_size", "stats_clips"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}={value}: must be >= 1")
    metrics = _parse_metrics(args.metrics)
    if args.protocol is None:  # an analytic metric alone: its own protocol
        args.protocol = metrics[0] if len(metrics) == 1 and metrics[0] in ANALYTIC_METRICS \
            else "tgan2"
    protocol = PROTOCOLS[args.protocol]
    n_samples = args.n_samples or protocol.n_samples
    repeats = args.repeats or protocol.repeats
    if "fid" in metrics and n_samples < 2:
        raise ValueError(f"--n-samples={n_samples}: FID needs at least 2 samples")
    # torchrun: clips split over the processes, scores gathered
    device = distributed.init_from_env(resolve_device(args.device))
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

    weights = args.c3d_weights or cfg.eval.c3d_weights
    mean = args.c3d_mean or cfg.eval.c3d_mean or None
    c3d = None
    if args.save_stats or any(m in C3D_METRICS for m in metrics):
        if not weights:
            raise ValueError("no C3D weights: pass --c3d-weights (conv3d_deepnetA_ucf.npz with "
                             "--c3d-mean mean2.npz, or a .pt from data_prep.convert_c3d) or set "
                             "eval.c3d_weights (only --metrics modes,synthetic work without them)")
        c3d = load_c3d(weights, mean, device=device)
    batch_size = args.batch_size or cfg.eval.batch_size

    needs_stats = args.save_stats or any(m in REAL_DATA_METRICS for m in metrics)
    real_stats = None
    if needs_stats:
        stat_metrics = ["fid", "ddm"] if args.save_stats else metrics
        with distributed.main_first():  # rank 0 fills the statistics cache
            real_stats = load_real_stats(cfg, c3d, stat_metrics, device=device,
                                         batch_size=batch_size, n_clips=args.stats_clips,
                                         progress=main)
        if {"fid", "ddm"} & set(stat_metrics) and main:
            print(f"real statistics cached under {cfg.eval.stats_dir}", file=sys.stderr)
    if not (args.checkpoint or args.real):
        return None

    bar = tqdm(total=n_samples * repeats, desc=f"evaluate ({args.protocol})", unit="clip",
               disable=not main)
    split = False
    record = {"protocol": args.protocol, "n_samples": n_samples, "repeats": repeats,
              "splits": protocol.splits, "seed": args.seed,
              "c3d_weights": str(weights) if c3d is not None else None,
              "c3d_mean": str(mean) if c3d is not None and mean else None, "metrics": metrics}
    with bar:
        if args.real:
            dataset = eval_dataset(cfg, args.split, eval_frames(cfg, metrics))

            def make_clips(r: int):
                keys = random_real_keys(len(dataset), n_samples, args.seed + r)
                return real_clips(dataset, keys, batch_size, cfg.data.num_workers)
            record.update(source="real", dataset=cfg.data.dataset, root=cfg.data.root,
                          split=args.split)
        else:
            G = model.G.requires_grad_(False)
            split = distributed.is_distributed()  # real clips: every process scores them all

            def make_clips(r: int):
                return generated_clips(G, n_samples, batch_size, device, args.seed + r,
                                       n_frames=eval_frames(cfg, metrics), split=split)
            record.update(source="generator", checkpoint=str(args.checkpoint),
                          step=model.step, weights=model.weights)
        record["scores"] = run_protocol(make_clips, c3d, metrics=metrics, repeats=repeats,
                                        device=device, real_stats=real_stats,
                                        splits=protocol.splits, progress=bar, split=split)
    if not main:  # every process holds the scores; rank 0 writes them
        return None

    if args.out:
        out = Path(args.out)
    elif args.checkpoint:
        ckpt = Path(args.checkpoint)
        out = ckpt.with_name(f"{ckpt.stem}_eval_{args.protocol}.json")
    else:
        out = Path(cfg.eval.stats_dir) / f"real_{cfg.data.dataset}_{args.split}_eval_{args.protocol}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for name, s in record["scores"].items():
        print(f"{name}: {s['mean']:.4f} ± {s['std']:.4f} ({repeats} x {n_samples} samples)")
    print(f"wrote {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except (CheckpointError, ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
