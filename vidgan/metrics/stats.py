"""Feature statistics: the Gaussian (mean, covariance) that FID compares."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def mean_cov(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), float64 numpy (what the
    statistics cache stores), computed on the features' device.

    The covariance is the unbiased one (ddof 1), as ``numpy.cov`` in the official tgan2 FID.
    """
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"mean_cov: expected features (N, D) with N >= 2, got shape "
                         f"{tuple(f.shape)}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu.cpu().numpy(), (centred.T @ centred / (len(f) - 1)).cpu().numpy()
