"""Inception Score, IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016; TGAN §6.5)."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def inception_score(probs, splits: int = 1, eps: float = 1e-20) -> Tuple[float, float]:
    """(mean, std) of the IS over ``splits`` consecutive chunks of ``probs`` (N, K).

    As the official tgan2 code: float64, ``eps`` added to every probability, p(y) the mean of
    the chunk's predictions, std with ddof 0. The TGANv2 protocol uses splits=1
    (docs/FIDELITY.md, Evaluation).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits or splits < 1:
        raise ValueError(f"inception_score: expected probabilities (N, K) with N >= splits >= 1, "
                         f"got shape {p.shape} and splits={splits}")
    n = len(p)
    scores = np.empty(splits, dtype=np.float64)
    for i in range(splits):  # a handful of chunks; the work inside is vectorised
        part = p[i * n // splits:(i + 1) * n // splits] + eps
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores[i] = np.exp(kl.sum(axis=1).mean())
    return float(scores.mean()), float(scores.std())
