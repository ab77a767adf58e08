"""Feature statistics: the Gaussian (mean, covariance) that FID compares."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def mean_cov(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), float64.

    The covariance is the unbiased one (ddof 1), as ``numpy.cov`` in the official tgan2 FID.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"mean_cov: expected features (N, D) with N >= 2, got shape {f.shape}")
    mu = f.mean(axis=0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)
