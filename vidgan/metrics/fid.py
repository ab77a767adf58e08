"""Frechet distance between Gaussians fitted to C3D fc7 features (Heusel et al. 2017; the FID
of tgan2 Tables 2-8, DESIGN §6):

    d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2))

Only the trace of the matrix square root is needed, and C1 C2 is similar to the symmetric PSD
matrix C1^(1/2) C2 C1^(1/2), so tr((C1 C2)^(1/2)) is the sum of the square roots of that
matrix's eigenvalues. Symmetric eigendecompositions replace scipy.linalg.sqrtm (the official
code) and stay real and accurate for the rank-deficient covariances of 2048 samples in 4096
dimensions.
"""
from __future__ import annotations

import numpy as np


def _psd_eigvals(sym: np.ndarray):
    """Eigen-decomposition of a PSD matrix with round-off-level eigenvalues set to 0.

    A rank-deficient covariance has eigenvalues of ~1e-16 x the largest, of either sign; their
    square roots (~1e-8) would add up to a visible error, so they are zeroed, as exact
    arithmetic would give.
    """
    w, v = np.linalg.eigh(sym)
    tol = max(float(w.max()), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0), v


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """L (D, r) with L L^T = cov, from the positive part of its eigendecomposition."""
    w, v = _psd_eigvals(cov)
    keep = w > 0
    return v[:, keep] * np.sqrt(w[keep])


def _sum_sqrt_eigvals(sym: np.ndarray) -> float:
    return float(np.sqrt(_psd_eigvals(sym)[0]).sum())


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((cov1 cov2)^(1/2)) of two PSD matrices: with cov1 = L L^T, the nonzero eigenvalues of
    cov1 cov2 are those of L^T cov2 L."""
    factor = _psd_factor(np.asarray(cov1, dtype=np.float64))
    return _sum_sqrt_eigvals(factor.T @ np.asarray(cov2, dtype=np.float64) @ factor)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet distance between N(mu1, cov1) and N(mu2, cov2), float64."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes do not match: mu1 {mu1.shape}, cov1 "
                         f"{cov1.shape}, mu2 {mu2.shape}, cov2 {cov2.shape}")
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2)
                 - 2.0 * trace_sqrt_product(cov1, cov2))


def frechet_distance_to_features(mu, cov, features) -> float:
    """``frechet_distance(mu, cov, *mean_cov(features))``, cheaper when there are fewer samples
    N than dimensions D (2048 clips, 4096 features): with A the centred features, the sample
    covariance is A^T A / (N-1), so the nonzero eigenvalues of cov times it are those of
    A cov A^T / (N-1), an N x N matrix, and no D x D eigendecomposition is needed."""
    f = np.asarray(features, dtype=np.float64)
    mu, cov = np.asarray(mu, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    n, d = f.shape
    if n < 2 or mu.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"frechet_distance_to_features: features {f.shape} (need N >= 2) do not "
                         f"match mu {mu.shape} and cov {cov.shape}")
    mu_f = f.mean(axis=0)
    a = f - mu_f
    if n - 1 >= d:
        return frechet_distance(mu, cov, mu_f, a.T @ a / (n - 1))
    trace_f = float((a * a).sum()) / (n - 1)
    tr_sqrt = _sum_sqrt_eigvals(a @ cov @ a.T / (n - 1))
    return float(((mu - mu_f) ** 2).sum() + np.trace(cov) + trace_f - 2.0 * tr_sqrt)
