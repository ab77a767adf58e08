"""The metric registry: one record per metric, which ``vidgan.evaluate``, the in-training
evaluation and the ``eval.metrics`` check look names up in.

A record says what a metric needs and how it is computed: the *reader* that turns a batch of
clips into what it scores (a classifier's features, or an analytic reading), how many frames
its clips have, which real data it compares with (a *reference*, cached by the evaluation),
how many generated clips its protocol fixes, and the function that scores. Metrics sharing a
reader share its pass over the clips (IS, FID and DDM read C3D once; FVD and KVD read I3D once).

Adding a metric is one file: a module of ``vidgan.metrics`` that defines ``METRICS`` (a tuple
of ``Metric``) and, for a new way of reading clips, ``READERS`` (a tuple of ``Reader``). The
registry imports every module of the package once, on first use, and collects them.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence


@dataclass(frozen=True)
class Reader:
    """How a batch of clips in [-1, 1], (B, 3, T, H, W), is read: ``read(clips, classifier)``
    with the loaded classifier named ``classifier`` ("c3d", "i3d"; None for an analytic
    reader, which gets None); ``cat`` joins the reads of all batches in order."""
    name: str
    classifier: Optional[str]
    read: Callable[[Any, Any], Any]
    cat: Callable[[List[Any]], Any]


@dataclass(frozen=True)
class Reference:
    """Real data a metric compares with: read by the same reader from ``split`` (None: the
    training data's ``data.subset``), ``n_clips`` clips (None: one per video), and reduced by
    ``reduce`` (e.g. to a mean and covariance). Metrics with equal references share one
    (and one cache file)."""
    key: str  # unique name of the reference, e.g. "i3d_train_16f_2048"
    split: Optional[str]
    n_clips: Optional[int]
    reduce: Callable[[Any], Any]
    # "cycle": clip k from video k mod N, k < n_clips (one per video when n_clips is None);
    # "first": one clip from each of the first min(N, n_clips) videos in sorted order
    # (StyleGAN-V's real clips); "random": n_clips videos drawn with replacement (seed 0)
    videos: str = "cycle"
    cache: bool = True  # saved under eval.stats_dir, keyed by what produced it
    optional: bool = False  # the metric also scores without it (it gets None)


@dataclass(frozen=True)
class Metric:
    name: str
    reader: str
    # (reads of the generated clips, the reference's reduced value or None, options such as
    # {"splits": 1}) -> {score name: value}; a metric may return several scores
    score: Callable[[Any, Any, Dict[str, Any]], Dict[str, float]]
    n_frames: Optional[int] = None  # frames per scored clip; None: the training length
    reference: Optional[Reference] = None
    n_samples: Optional[int] = None  # generated clips its protocol fixes (fvd2048: 2048)
    weights: str = ""  # the file it needs, for messages and the README table
    comparable: str = ""  # which published numbers it can be compared with


_READERS: Dict[str, Reader] = {}
_METRICS: Dict[str, Metric] = {}


def _collect() -> None:
    if _METRICS:
        return
    import vidgan.metrics as package
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name == "registry":
            continue
        module = importlib.import_module(f"vidgan.metrics.{info.name}")
        for reader in getattr(module, "READERS", ()):
            _READERS[reader.name] = reader
        for metric in getattr(module, "METRICS", ()):
            if metric.name in _METRICS:
                raise RuntimeError(f"metric '{metric.name}' is defined twice (in "
                                   f"vidgan.metrics.{info.name} and before)")
            _METRICS[metric.name] = metric
    for metric in _METRICS.values():
        if metric.reader not in _READERS:
            raise RuntimeError(f"metric '{metric.name}' reads with '{metric.reader}', which no "
                               f"module of vidgan.metrics defines")


def register(metric: Metric, reader: Optional[Reader] = None) -> Metric:
    """Add a metric (and its reader) defined outside vidgan.metrics, e.g. in a user's script or
    a test; a name that is taken is a ValueError."""
    _collect()
    if metric.name in _METRICS:
        raise ValueError(f"metric '{metric.name}' is already registered")
    if reader is not None:
        _READERS[reader.name] = reader
    if metric.reader not in _READERS:
        raise ValueError(f"metric '{metric.name}' reads with '{metric.reader}', which is not "
                         f"registered; pass its Reader")
    _METRICS[metric.name] = metric
    return metric


def metric_names() -> List[str]:
    _collect()
    return sorted(_METRICS)


def get_metric(name: str) -> Metric:
    """The record of ``name``; a ValueError listing the known metrics if there is none."""
    _collect()
    if name not in _METRICS:
        raise ValueError(f"unknown metric '{name}'; known metrics: {', '.join(metric_names())}")
    return _METRICS[name]


def get_reader(name: str) -> Reader:
    _collect()
    return _READERS[name]


def check_metric_names(names: Sequence[str], what: str = "metrics") -> List[Metric]:
    """The records of ``names`` (non-empty, all known), else a ValueError naming ``what``
    (e.g. "eval.metrics", "--metrics") and the known metrics."""
    _collect()
    unknown = [n for n in names if n not in _METRICS]
    if unknown or not names:
        raise ValueError(f"{what}={list(names)}: "
                         f"{'unknown ' + str(unknown) if unknown else 'empty'}; known metrics: "
                         f"{', '.join(metric_names())}")
    return [_METRICS[n] for n in names]


def classifiers_needed(names: Sequence[str]) -> List[str]:
    """The classifiers (c3d, i3d) the metrics ``names`` read with, in a fixed order."""
    return sorted({c for c in (get_reader(get_metric(n).reader).classifier for n in names)
                   if c is not None})
