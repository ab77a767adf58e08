"""Frechet distance between Gaussians fitted to C3D fc7 features (Heusel et al. 2017; the FID
of tgan2 Tables 2-8, docs/FIDELITY.md):

    d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2))

Only the trace of the matrix square root is needed, and C1 C2 is similar to the symmetric PSD
matrix C1^(1/2) C2 C1^(1/2), so tr((C1 C2)^(1/2)) is the sum of the square roots of that
matrix's eigenvalues. Symmetric eigendecompositions replace scipy.linalg.sqrtm (the official
code) and stay real and accurate for the rank-deficient covariances of 2048 samples in 4096
dimensions.

Everything runs in float64 with torch on the device of the generated features (on
the GPU the 2048 x 4096 x 4096 products and the 2048 x 2048 eigendecomposition take
milliseconds, on the CPU they took most of an evaluation's time); numpy inputs are read on
the CPU.
"""
from __future__ import annotations

from typing import Optional

import torch

from vidgan.metrics.registry import Metric, Reference
from vidgan.metrics.stats import mean_cov


def as_float64(x, device: Optional[torch.device] = None) -> torch.Tensor:
    """A numpy array or tensor as a float64 tensor (on ``device``, else where it is)."""
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


def _psd_eigvals(sym: torch.Tensor):
    """Eigen-decomposition of a PSD matrix with round-off-level eigenvalues set to 0.

    A rank-deficient covariance has eigenvalues of ~1e-16 x the largest, of either sign; their
    square roots (~1e-8) would add up to a visible error, so they are zeroed, as exact
    arithmetic would give.
    """
    w, v = torch.linalg.eigh(sym)
    tol = w.max().clamp(min=0.0) * len(w) * torch.finfo(torch.float64).eps
    return torch.where(w > tol, w, torch.zeros_like(w)), v


def _psd_factor(cov: torch.Tensor) -> torch.Tensor:
    """L (D, r) with L L^T = cov, from the positive part of its eigendecomposition."""
    w, v = _psd_eigvals(cov)
    keep = w > 0
    return v[:, keep] * w[keep].sqrt()


def _sum_sqrt_eigvals(sym: torch.Tensor) -> torch.Tensor:
    return _psd_eigvals(sym)[0].sqrt().sum()


def trace_sqrt_product(cov1, cov2) -> float:
    """tr((cov1 cov2)^(1/2)) of two PSD matrices: with cov1 = L L^T, the nonzero eigenvalues of
    cov1 cov2 are those of L^T cov2 L."""
    factor = _psd_factor(as_float64(cov1))
    return float(_sum_sqrt_eigvals(factor.T @ as_float64(cov2, factor.device) @ factor))


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet distance between N(mu1, cov1) and N(mu2, cov2), float64 (on cov1's
    device)."""
    cov1 = as_float64(cov1)
    mu1, mu2, cov2 = (as_float64(x, cov1.device) for x in (mu1, mu2, cov2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes do not match: mu1 {tuple(mu1.shape)}, cov1 "
                         f"{tuple(cov1.shape)}, mu2 {tuple(mu2.shape)}, cov2 {tuple(cov2.shape)}")
    return float(((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace()) \
        - 2.0 * trace_sqrt_product(cov1, cov2)


def frechet_distance_to_features(mu, cov, features) -> float:
    """``frechet_distance(mu, cov, *mean_cov(features))``, cheaper when there are fewer samples
    N than dimensions D (2048 clips, 4096 features): with A the centred features, the sample
    covariance is A^T A / (N-1), so the nonzero eigenvalues of cov times it are those of
    A cov A^T / (N-1), an N x N matrix, and no D x D eigendecomposition is needed. Computed
    on the features' device."""
    f = as_float64(features)
    mu, cov = as_float64(mu, f.device), as_float64(cov, f.device)
    n, d = f.shape
    if n < 2 or mu.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"frechet_distance_to_features: features {tuple(f.shape)} (need N >= 2) "
                         f"do not match mu {tuple(mu.shape)} and cov {tuple(cov.shape)}")
    mu_f = f.mean(dim=0)
    a = f - mu_f
    if n - 1 >= d:
        return frechet_distance(mu, cov, mu_f, a.T @ a / (n - 1))
    trace_f = (a * a).sum() / (n - 1)
    tr_sqrt = _sum_sqrt_eigvals(a @ cov @ a.T / (n - 1))
    return float(((mu - mu_f) ** 2).sum() + cov.trace() + trace_f - 2.0 * tr_sqrt)


def _gaussian(reads) -> dict:
    """The real clips' fc7 Gaussian (ddof 1, as the official tgan2 FID)."""
    mu, cov = mean_cov(reads[0])
    return {"mu": mu, "cov": cov}


# one clip per video of the training split (docs/FIDELITY.md, Evaluation)
C3D_TRAIN = Reference("c3d_train_fc7", "train", None, reduce=_gaussian)


def _score(reads, reference, options) -> dict:
    return {"fid": frechet_distance_to_features(reference["mu"], reference["cov"], reads[0])}


METRICS = (Metric("fid", "c3d", _score, n_frames=16, reference=C3D_TRAIN,
                  weights="C3D: conv3d_deepnetA_ucf.npz + mean2.npz (TGANv2 release)",
                  comparable="TGANv2's C3D FID on UCF101 (fc7 against the training split)"),)
