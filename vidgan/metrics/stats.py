"""Statistics the metrics share: the Gaussian (mean, covariance) of features that FID
compares, and how far a histogram of categories is from uniform (the mode-coverage and
synthetic-demo scores)."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch


def mean_cov(features, ddof: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), float64 numpy (what the
    statistics cache stores), computed on the features' device.

    ddof 1 (default) is the unbiased covariance, as ``numpy.cov`` in the official tgan2 FID;
    FVD as StyleGAN-V computes it divides by N (ddof 0).
    """
    f = torch.as_tensor(features).to(torch.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"mean_cov: expected features (N, D) with N >= 2, got shape "
                         f"{tuple(f.shape)}")
    if ddof not in (0, 1):
        raise ValueError(f"mean_cov: ddof={ddof}, expected 0 or 1")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu.cpu().numpy(), (centred.T @ centred / (len(f) - ddof)).cpu().numpy()


def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform over the k = len(counts) categories) of p = counts / counts.sum(); with
    no count at all, log(k): its value when every count falls in one category (its maximum)."""
    counts = counts.double()
    n = counts.sum()
    if n == 0:
        return math.log(len(counts))
    p = counts[counts > 0] / n
    return float((p * torch.log(p * len(counts))).sum())
