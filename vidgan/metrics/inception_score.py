"""Inception Score, IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016; TGAN §6.5)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from torch.nn import functional as F

from vidgan.metrics.registry import Metric


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


def _score(reads, reference, options) -> dict:
    """The C3D IS of the generated clips: softmax in fp32, then float64, as the official
    tgan2 code."""
    probs = F.softmax(reads[1].float(), dim=1).double().cpu().numpy()
    return {"is": inception_score(probs, splits=options.get("splits", 1))[0]}


METRICS = (Metric("is", "c3d", _score, n_frames=16,
                  weights="C3D: conv3d_deepnetA_ucf.npz + mean2.npz (TGANv2 release)",
                  comparable="UCF101 IS of TGAN, MoCoGAN, TGANv2 (tgan2 protocol: 2048 clips "
                             "x 10 repeats)"),)
