"""FVD and KVD (vidgan/metrics/fvd.py) against their formulas written out in float64 numpy."""
import numpy as np
import pytest
import torch

from vidgan.metrics.fvd import fvd, fvd_to_stats, kvd
from vidgan.metrics.stats import mean_cov


def _features(n=300, d=12, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing * scale + shift).astype(np.float32)


def _frechet_numpy(a, b, ddof):
    """|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2)), the trace of the square
    root from the eigenvalues of the (non-symmetric) product C_a C_b."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = np.cov(a, rowvar=False, ddof=ddof), np.cov(b, rowvar=False, ddof=ddof)
    eig = np.linalg.eigvals(ca @ cb).real.clip(min=0)
    return (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb)
            - 2 * np.sqrt(eig).sum())


def _kvd_loops(x, y):
    """DIGAN's unbiased polynomial MMD^2 with explicit sums over pairs."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d = x.shape[1]

    def k(u, v):
        return (u @ v / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_fvd_of_a_set_against_itself_is_zero():
    a = _features()
    assert abs(fvd(a, a)) < 1e-9 * np.trace(np.cov(a, rowvar=False))


@pytest.mark.parametrize("ddof", [0, 1])
def test_fvd_against_a_shifted_set_is_the_frechet_formula(ddof):
    a, b = _features(seed=0), _features(seed=1, shift=0.3, scale=1.5)
    expected = _frechet_numpy(a, b, ddof)
    assert fvd(a, b, ddof=ddof) == pytest.approx(expected, rel=1e-9)
    assert fvd(b, a, ddof=ddof) == pytest.approx(expected, rel=1e-9)
    mu, cov = mean_cov(a, ddof=ddof)  # cached real statistics give the same number
    assert fvd_to_stats(mu, cov, torch.from_numpy(b), ddof=ddof) == pytest.approx(expected,
                                                                                  rel=1e-9)


def test_fvd_default_is_stylegan_v_covariance_over_n():
    a, b = _features(n=40, seed=0), _features(n=40, seed=1, shift=0.1)
    assert fvd(a, b) == pytest.approx(_frechet_numpy(a, b, ddof=0), rel=1e-9)
    assert fvd(a, b) != pytest.approx(_frechet_numpy(a, b, ddof=1), rel=1e-6)


def test_kvd_is_digans_unbiased_polynomial_mmd():
    x, y = _features(n=9, d=5, seed=2), _features(n=7, d=5, seed=3, shift=0.5)
    assert kvd(x, y) == pytest.approx(_kvd_loops(x, y), rel=1e-10)
    assert kvd(y, x) == pytest.approx(_kvd_loops(x, y), rel=1e-10)


def test_fvd_and_kvd_do_not_depend_on_the_order_of_samples():
    a, b = _features(seed=4), _features(seed=5, shift=0.2)
    perm = np.random.default_rng(0).permutation(len(b))
    assert fvd(a, b[perm]) == pytest.approx(fvd(a, b), rel=1e-10)
    assert fvd(a[perm], b) == pytest.approx(fvd(a, b), rel=1e-10)
    assert kvd(a, b[perm]) == pytest.approx(kvd(a, b), rel=1e-10)


def test_kvd_needs_two_samples_a_side():
    with pytest.raises(ValueError, match=r"kvd: expected features .* \(1, 5\)"):
        kvd(_features(n=4, d=5), _features(n=1, d=5))
