"""Evaluation: generated or real clips -> the readers the requested metrics need -> scores,
with the real references cached (vidgan.metrics.registry says what each metric needs).

This is the library behind ``python -m vidgan.evaluate`` (its thin CLI) and the in-training
evaluation. Every classifier is passed in a dict by its registry name (``{"c3d": C3D,
"i3d": I3D}``); a bare C3D is accepted for the C3D metrics.

Protocols: ``tgan2`` = 2048 samples, IS with splits=1, repeated 10 times with fresh samples,
mean ± std over the repeats (tgan2 §5.7); ``tgan`` = 10,000 samples, 4 repeats. A metric whose
record fixes its sample count (``fvd2048_16f``: 2048) always gets that many clips.

Under torchrun each process renders whole batches in turn (batch i on process i mod N) from
the z every process draws for the global stream, reads them, and the reads are gathered back
in order: every process gets the scores one process would compute.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vidgan import distributed
from vidgan.config import Config
from vidgan.lock import WRITE_LOCK, DirectoryLock
from vidgan.metrics.registry import (Metric, Reference, check_metric_names, get_metric,
                                     get_reader)

STATS_VERSION = 2  # bump when the references' definition changes; old cache files are ignored
# data settings that change speed, not the clips; left out of the references' cache key
PERFORMANCE_KEYS = ("num_workers", "decode_threads", "index_workers", "manifest",
                    "max_bad_fraction")
C3D_FRAMES = 16  # C3D and the FVD_16 protocols read 16-frame clips


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
    # FVD/KVD as StyleGAN-V and DIGAN report them: one set (the metric fixes the count)
    "fvd": Protocol(n_samples=2048, repeats=1),
}

Classifiers = Dict[str, nn.Module]
# names of the references the C3D metrics and the demo's metric use (their modules define them)
FID_REFERENCE, DDM_REFERENCE, SYNTHETIC_REFERENCE = ("c3d_train_fc7", "c3d_test_logits",
                                                     "synthetic_train_256")


class RealStats:
    """The real references of a set of metrics, by reference key (``Reference.key``):
    e.g. FID's training-split fc7 Gaussian {"mu", "cov"}, DDM's test-split logits
    {"logits"}, FVD's real I3D features {"features"}. ``mu``, ``cov``, ``test_logits`` and
    ``synthetic`` name the C3D and demo references directly."""

    def __init__(self, refs: Optional[Dict[str, Any]] = None, *, mu=None, cov=None,
                 test_logits=None, synthetic=None):
        self.refs: Dict[str, Any] = dict(refs or {})
        if mu is not None or cov is not None:
            self.refs[FID_REFERENCE] = {"mu": mu, "cov": cov}
        if test_logits is not None:
            self.refs[DDM_REFERENCE] = {"logits": test_logits}
        if synthetic is not None:
            self.refs[SYNTHETIC_REFERENCE] = synthetic

    def _field(self, key: str, name: str):
        return (self.refs.get(key) or {}).get(name)

    mu = property(lambda self: self._field(FID_REFERENCE, "mu"))
    cov = property(lambda self: self._field(FID_REFERENCE, "cov"))
    test_logits = property(lambda self: self._field(DDM_REFERENCE, "logits"))
    synthetic = property(lambda self: self.refs.get(SYNTHETIC_REFERENCE))


def as_classifiers(classifiers) -> Classifiers:
    """{} for None, {"c3d": c} for a bare C3D, else the dict itself."""
    if classifiers is None:
        return {}
    if isinstance(classifiers, dict):
        return classifiers
    return {"c3d": classifiers}


def metric_frames(metric: Metric, n_frames: int) -> int:
    """Frames per scored clip: the metric's (16 for C3D and FVD_16), else ``n_frames`` (the
    training length, what the samples show)."""
    return metric.n_frames or n_frames


def load_classifier(name: str, weights: str, device, c3d_mean: str = "") -> nn.Module:
    """The classifier ``name`` a reader needs (c3d, i3d) from its weight file; ``c3d_mean``:
    the release's mean2.npz, needed with its npz weights."""
    if name == "c3d":
        from vidgan.metrics.c3d import load_c3d
        return load_c3d(weights, c3d_mean or None, device=device)
    if name == "i3d":
        from vidgan.metrics.i3d import load_i3d
        return load_i3d(weights, device=device)
    raise ValueError(f"no loader for the classifier '{name}'")


def check_metrics(metrics: Sequence[str], real_stats: Optional[RealStats],
                  classifiers=None, what: str = "metrics") -> List[Metric]:
    """The records of ``metrics``; a ValueError before any sampling when a name is unknown,
    a classifier is not loaded or a real reference is missing."""
    records = check_metric_names(metrics, what)
    loaded = as_classifiers(classifiers)
    for m in records:
        needed = get_reader(m.reader).classifier
        if classifiers is not None and needed and loaded.get(needed) is None:
            raise ValueError(f"metric {m.name} needs the {needed.upper()} classifier "
                             f"({m.weights}); it is not loaded")
        if m.reference and not m.reference.optional and (
                real_stats is None or m.reference.key not in real_stats.refs):
            raise ValueError(f"metric {m.name} needs the real reference {m.reference.key}; "
                             f"get it with load_real_stats")
    return records


# ------------------------------------------------------------------ clips -> scores
def generated_clips(G: nn.Module, n_samples: int, batch_size: int, device: torch.device,
                    seed: int, n_classes: Optional[int] = None,
                    n_frames: int = C3D_FRAMES, split: bool = False) -> Iterator[torch.Tensor]:
    """``n_samples`` dense clips (B, 3, n_frames, H, W) clipped to [-1, 1].

    z ~ U[-1,1] and, for a conditional G, labels uniform over the classes: the class prior of
    TGAN §6.5, which turns the conditional generator into one of the data distribution.
    Every clip starts at t = 0 (StyleGAN-V's FVD clips too); the ConvLSTM rolls on for any
    ``n_frames``, the GRU's latent is drawn with motion noise for ``n_frames``. ``split``
    (torchrun): this process renders only batches i with i % N == rank, from the same z as
    one process would draw (``score_clips`` gathers them back in order).
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


def read_batch(x: torch.Tensor, classifiers: Classifiers, readers: Sequence[str],
               device: torch.device) -> Dict[str, Any]:
    """One batch of clips in [-1, 1] read by each of ``readers`` (on ``device``)."""
    x = x.to(device, non_blocking=True)
    out = {}
    for name in readers:
        reader = get_reader(name)
        out[name] = reader.read(x, classifiers.get(reader.classifier)
                                if reader.classifier else None)
    return out


def read_clips(clips: Iterable[torch.Tensor], classifiers: Classifiers, readers: Sequence[str],
               device: torch.device, progress: Optional[tqdm] = None,
               split: bool = False) -> Dict[str, Any]:
    """{reader: its reads of every clip, joined in order}; ``split``: the clips are this
    process's share and the batches of every process are gathered back in order first."""
    batches = []
    with torch.inference_mode():
        for x in clips:
            batches.append(read_batch(x, classifiers, readers, device))
            if progress is not None:
                progress.update(len(x) * (distributed.world_size() if split else 1))
    if split:
        batches = distributed.gather_batches(batches, device)
    return {name: get_reader(name).cat([b[name] for b in batches]) for name in readers}


def score_reads(reads: Dict[str, Any], records: Sequence[Metric],
                real_stats: Optional[RealStats], splits: int = 1) -> Dict[str, float]:
    out = {}
    for m in records:
        reference = (real_stats.refs.get(m.reference.key)
                     if m.reference and real_stats is not None else None)
        out.update(m.score(reads[m.reader], reference, {"splits": splits}))
    return out


def score_clips(clips: Iterable[torch.Tensor], classifiers, metrics: Sequence[str],
                device: torch.device, real_stats: Optional[RealStats] = None, splits: int = 1,
                progress: Optional[tqdm] = None, split: bool = False) -> Dict[str, float]:
    """The requested metrics of one set of clips in [-1, 1] (all of one length); each reader
    the metrics need reads every clip once. ``split``: as ``read_clips``."""
    classifiers = as_classifiers(classifiers)
    records = check_metrics(metrics, real_stats, classifiers)
    readers = sorted({m.reader for m in records})
    reads = read_clips(clips, classifiers, readers, torch.device(device), progress, split)
    return score_reads(reads, records, real_stats, splits)


def metric_groups(metrics: Sequence[str], n_frames: int,
                  n_samples: int) -> List[Tuple[int, int, List[str]]]:
    """(frames, clips, metric names) for each set of metrics scored on the same clips: the
    metric's own frame and sample counts where its record fixes them, else ``n_frames``
    and ``n_samples``; in the order the metrics are first named."""
    groups: Dict[Tuple[int, int], List[str]] = {}
    for name in metrics:
        m = get_metric(name)
        groups.setdefault((metric_frames(m, n_frames), m.n_samples or n_samples), []).append(name)
    return [(frames, n, names) for (frames, n), names in groups.items()]


def evaluate_generator(G: nn.Module, classifiers, *, metrics: Sequence[str], n_samples: int,
                       batch_size: int, device: torch.device | str, seed: int,
                       n_classes: Optional[int] = None, real_stats: Optional[RealStats] = None,
                       n_frames: int = C3D_FRAMES, splits: int = 1,
                       progress: Optional[tqdm] = None) -> Dict[str, float]:
    """One repeat: fresh clips from ``G`` scored by the metrics; {score: value}, where e.g.
    ``modes`` expands to modes_covered, modes_kl, ...

    Metrics are scored in groups sharing clips (``metric_groups``): ``n_samples`` clips of
    ``n_frames`` frames unless a metric fixes its own. This is the in-training evaluation
    (one repeat of the tgan2 protocol when n_samples=2048). ``G`` is put in eval mode for
    sampling and restored; metrics with a reference need ``real_stats``.
    """
    classifiers = as_classifiers(classifiers)
    check_metrics(metrics, real_stats, classifiers)
    device = torch.device(device)
    split = distributed.is_distributed()  # torchrun: each process renders its share
    out = {}
    for frames, n, names in metric_groups(metrics, n_frames, n_samples):
        clips = generated_clips(G, n, batch_size, device, seed, n_classes, frames, split)
        out.update(score_clips(clips, classifiers, names, device, real_stats, splits, progress,
                               split))
    return out


def summarize(per_repeat: List[Dict[str, float]]) -> Dict[str, dict]:
    """{metric: {mean, std (ddof 0), values}} over the repeats, as the papers report."""
    return {name: {"mean": float(np.mean([r[name] for r in per_repeat])),
                   "std": float(np.std([r[name] for r in per_repeat])),
                   "values": [float(r[name]) for r in per_repeat]}
            for name in per_repeat[0]}


def run_protocol(make_clips: Callable[[int], Iterable[torch.Tensor]], classifiers, *,
                 metrics: Sequence[str], repeats: int, device: torch.device,
                 real_stats: Optional[RealStats] = None, splits: int = 1,
                 progress: Optional[tqdm] = None, split: bool = False) -> Dict[str, dict]:
    """Score ``make_clips(repeat)`` for each repeat (fresh samples each time) and summarize;
    ``split``: the clips are this process's share (``score_clips``)."""
    check_metrics(metrics, real_stats, classifiers)
    per_repeat = [score_clips(make_clips(r), classifiers, metrics, device, real_stats, splits,
                              progress, split) for r in range(repeats)]
    return summarize(per_repeat)


# ------------------------------------------------------------------ real data
def _eval_config(cfg: Config, n_frames: int) -> Config:
    """The config with ``n_frames``-frame clips."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_frames=n_frames))


def eval_dataset(cfg: Config, split: str, n_frames: int = C3D_FRAMES):
    """Real clips of ``split`` (videos shorter than ``n_frames`` left out), centre-cropped and
    never flipped."""
    from vidgan.data import build_dataset
    return build_dataset(_eval_config(cfg, n_frames), split, augment=False, progress=False)


def real_clips(dataset, keys: Sequence, batch_size: int,
               num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Real clips in [-1, 1], (B, 3, T, H, W), for dataset keys ``(index, clip seed)``; the
    clip's start is drawn from its seed."""
    from vidgan.data import normalize

    # Its own generator, so scoring never draws from the training RNG (bitwise resume).
    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(keys),
                        num_workers=num_workers, prefetch_factor=4 if num_workers else None,
                        generator=torch.Generator())
    for batch in loader:  # (uint8 video (B, 3, T, H, W), label)
        yield normalize(batch[0])


def random_real_keys(n_videos: int, n_samples: int, seed: int) -> List[tuple]:
    """``n_samples`` random (video, clip seed) keys: videos drawn with replacement."""
    rng = np.random.default_rng(seed)
    return list(zip(rng.integers(n_videos, size=n_samples).tolist(),
                    rng.integers(2 ** 31, size=n_samples).tolist()))


def reference_keys(ref: Reference, n_videos: int, n_clips: Optional[int] = None) -> List[tuple]:
    """The (video, clip seed) keys a reference reads (``Reference.videos``); ``n_clips``
    overrides the count of a "cycle" reference (``--stats-clips``)."""
    if ref.videos == "random":
        return random_real_keys(n_videos, ref.n_clips, seed=0)
    if ref.videos == "first":
        return [(k, k) for k in range(min(n_videos, ref.n_clips))]
    n = n_clips or ref.n_clips or n_videos
    return [(k % n_videos, k) for k in range(n)]


def fingerprint(module: nn.Module) -> str:
    """sha256 of a classifier's tensors: the same for every file format of one set of
    weights (the C3D release npz and our .pt)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def reference_identity(cfg: Config, dataset, ref: Reference, split: str, n_frames: int,
                       keys: Sequence[tuple], classifier_print: Optional[str]) -> dict:
    """Everything a cached reference depends on: the data section (dataset kind, root, split
    list, decode geometry; not worker counts), the file list with sizes, the preprocessing
    (resolution, frames), the clips read and the classifier's weights."""
    root = Path(cfg.data.root).resolve()
    files = [[f, (root / f).stat().st_size] for f in dataset.files]  # paths relative to root
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in PERFORMANCE_KEYS}
    data["root"] = str(root)
    return {"version": STATS_VERSION, "reference": ref.key, "data": data, "split": split,
            "n_videos": len(dataset), "files": files, "resolution": cfg.model.resolution,
            "n_frames": n_frames, "keys": hashlib.sha256(json.dumps(keys).encode()).hexdigest(),
            "classifier": classifier_print}


def load_reference(cfg: Config, metric: Metric, classifiers: Classifiers, *,
                   device: torch.device | str, batch_size: Optional[int] = None,
                   n_clips: Optional[int] = None, stats_dir: Optional[str | Path] = None,
                   progress: bool = False) -> Any:
    """The reduced real reference of ``metric``: read from the cache under ``stats_dir``
    (default eval.stats_dir) or computed (and cached, when the reference is cacheable)."""
    ref = metric.reference
    device = torch.device(device)
    reader = get_reader(metric.reader)
    classifier = classifiers.get(reader.classifier) if reader.classifier else None
    frames = metric_frames(metric, cfg.model.n_frames)
    split = ref.split or cfg.data.subset
    dataset = eval_dataset(cfg, split, frames)
    keys = reference_keys(ref, len(dataset), n_clips)
    batch_size = batch_size or cfg.eval.batch_size

    def compute():
        bar = tqdm(total=len(keys), desc=f"real {ref.key}", unit="clip", disable=not progress)
        with bar:
            clips = real_clips(dataset, keys, batch_size, cfg.data.num_workers)
            reads = read_clips(clips, classifiers, [metric.reader], device, bar)
        return ref.reduce(reads[metric.reader])

    if not ref.cache:
        return compute()
    identity = reference_identity(cfg, dataset, ref, split, frames, keys,
                                  fingerprint(classifier) if classifier is not None else None)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(stats_dir or cfg.eval.stats_dir) / f"{cfg.data.dataset}_{ref.key}_{key}.npz"
    if path.is_file():
        return _read_cached(path)
    # two evaluations needing the same reference take turns: the second reads the first's
    with DirectoryLock(path.parent, WRITE_LOCK):
        if path.is_file():
            return _read_cached(path)
        value = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, identity=json.dumps(identity), **value)
        tmp.replace(path)
        return value


def _read_cached(path: Path) -> Dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files if name != "identity"}


def load_real_stats(cfg: Config, classifiers, metrics: Sequence[str], *,
                    device: torch.device | str, batch_size: Optional[int] = None,
                    n_clips: Optional[int] = None, stats_dir: Optional[str | Path] = None,
                    progress: bool = False) -> Optional[RealStats]:
    """The real references of ``metrics`` (None if none needs one), each computed once and
    cached under stats_dir: FID's training-split fc7 Gaussian (docs/FIDELITY.md,
    Evaluation), DDM's test-split logits (Basart 2017 §3.2), FVD/KVD's real I3D features,
    the demo metric's real scores (not cached: seconds)."""
    classifiers = as_classifiers(classifiers)
    records = [m for m in check_metric_names(metrics) if m.reference]
    if not records:
        return None
    stats = RealStats()
    for m in records:
        if m.reference.key not in stats.refs:
            stats.refs[m.reference.key] = load_reference(
                cfg, m, classifiers, device=device, batch_size=batch_size, n_clips=n_clips,
                stats_dir=stats_dir, progress=progress)
    return stats
