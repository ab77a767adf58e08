"""Frechet Video Distance (Unterthiner et al. 2018) and Kernel Video Distance on I3D features
(``vidgan.metrics.i3d``: the 400-d Kinetics logits averaged over time).

FVD is the Frechet distance between Gaussians fitted to the real and the generated features,
as StyleGAN-V computes it (Skorokhodov et al. 2022, the protocol behind ``fvd2048_16f``):
covariances over N (ddof 0), everything in float64. VideoGPT, TATS and DIGAN divide by N - 1
instead; at 2048 clips the two differ by 2048/2047 on the covariance terms (~5e-4 of them),
so ``ddof`` is an argument.

KVD is DIGAN's (Yu et al. 2022): the unbiased estimate of the squared maximum mean
discrepancy with the polynomial kernel k(x, y) = (x . y / d + 1)^3 (d = 400, scikit-learn's
``polynomial_kernel`` defaults),

    KVD = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
          - 2 sum_{i, j} k(x_i, y_j) / (m n),

in float64. Both are symmetric in their two sets and blind to the order within a set.
"""
from __future__ import annotations

import torch

from vidgan.metrics.fid import as_float64, frechet_distance
from vidgan.metrics.registry import Metric, Reference
from vidgan.metrics.stats import mean_cov

# StyleGAN-V's covariance (ddof 0); VideoGPT/DIGAN's is ddof 1
FVD_DDOF = 0
KVD_DEGREE, KVD_COEF0 = 3, 1.0  # scikit-learn polynomial_kernel defaults, gamma = 1 / d


def fvd(real, fake, ddof: int = FVD_DDOF) -> float:
    """FVD between feature sets ``real`` (M, D) and ``fake`` (N, D), arrays or tensors."""
    return fvd_to_stats(*mean_cov(real, ddof=ddof), fake, ddof=ddof)


def fvd_to_stats(mu, cov, fake, ddof: int = FVD_DDOF) -> float:
    """FVD between cached real statistics (mu (D,), cov (D, D), taken with the same ``ddof``)
    and generated features ``fake`` (N, D); on ``fake``'s device."""
    f = as_float64(fake)
    mu_f, cov_f = mean_cov(f, ddof=ddof)
    return frechet_distance(as_float64(mu, f.device), as_float64(cov, f.device),
                            as_float64(mu_f, f.device), as_float64(cov_f, f.device))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x y^T / d + coef0) ** degree, scikit-learn's default polynomial kernel."""
    return (x @ y.T / x.shape[1] + KVD_COEF0) ** KVD_DEGREE


def kvd(real, fake) -> float:
    """DIGAN's KVD: the unbiased polynomial-kernel MMD^2 between ``real`` (M, D) and ``fake``
    (N, D), float64 on ``fake``'s device. Needs at least 2 samples on each side."""
    y = as_float64(fake)
    x = as_float64(real, y.device)
    m, n = len(x), len(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(m, n) < 2:
        raise ValueError(f"kvd: expected features (M, D) and (N, D) with M, N >= 2, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    k_xx, k_yy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * polynomial_kernel(x, y).sum() / (m * n))


def _features(reads) -> dict:
    return {"features": reads.float().cpu().numpy()}


def i3d_reference(n_frames: int) -> Reference:
    """StyleGAN-V's real clips: the first 2048 videos of the training data in sorted order
    (all of them if fewer), one clip of ``n_frames`` consecutive frames each at a uniformly
    random start (seeded by the video's position, so the cached features are reproducible;
    StyleGAN-V draws them unseeded once and caches them); videos shorter than the clip are
    left out."""
    return Reference(f"i3d_{n_frames}f_first2048", None, 2048, reduce=_features,
                     videos="first")


def _named(name: str, score):
    return lambda reads, reference, options: {name: score(reference["features"], reads)}


I3D_WEIGHTS = "I3D: i3d_pretrained_400.pt (VideoGPT/TATS/DIGAN) or StyleGAN-V's i3d_torchscript.pt"
METRICS = tuple(
    Metric(name, "i3d", _named(name, fn), n_frames=frames, reference=i3d_reference(frames),
           n_samples=n, weights=I3D_WEIGHTS, comparable=comparable)
    for name, fn, frames, n, comparable in (
        ("fvd2048_16f", fvd, 16, 2048, "StyleGAN-V, DIGAN, Latte FVD_16 tables (2048 clips of "
                                       "16 frames against 2048 real clips)"),
        ("fvd2048_128f", fvd, 128, 2048, "StyleGAN-V's FVD_128 (128-frame clips)"),
        ("kvd2048_16f", kvd, 16, 2048, "DIGAN's KVD (polynomial-kernel MMD on the FVD_16 "
                                       "features)"),
        # the in-training variant: 8x fewer generated clips, same real reference; FVD grows as
        # the clips fall (the covariance estimate's bias), so it is comparable only with itself
        ("fvd256_16f", fvd, 16, 256, "none: an in-training estimate, comparable only with "
                                     "fvd256_16f of other runs"),
    ))
