"""IS, FID and DDM against their equations (tgan2 §5.7, docs/FIDELITY.md; Basart 2017 Eq. 3.4)."""
import math

import numpy as np
import pytest
import torch

from vidgan.metrics import (ddm, frechet_distance, frechet_distance_to_features,
                            inception_score, mean_cov)
from vidgan.metrics.stats import kl_to_uniform


def random_probs(n, k, seed=0):
    logits = np.random.default_rng(seed).normal(0, 2, (n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ Inception Score
def test_is_is_one_for_identical_predictions():
    probs = np.tile(random_probs(1, 101), (50, 1))
    mean, std = inception_score(probs)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == 0.0


@pytest.mark.parametrize("k", [2, 7, 101])
def test_is_is_k_for_balanced_one_hot_predictions(k):
    probs = np.eye(k)[np.arange(5 * k) % k]
    assert inception_score(probs)[0] == pytest.approx(k, rel=1e-12)


def test_is_matches_exp_expected_kl_in_float64():
    probs = random_probs(200, 10, seed=1).astype(np.float32)
    p = probs.astype(np.float64)
    marginal = p.mean(axis=0)
    expected = math.exp(np.mean([np.sum(row * np.log(row / marginal)) for row in p]))
    assert inception_score(probs)[0] == pytest.approx(expected, rel=1e-10)


def test_is_splits_score_consecutive_chunks_with_ddof_0_std():
    same = np.tile(random_probs(1, 4), (8, 1))  # IS 1
    balanced = np.eye(4)[np.arange(8) % 4]  # IS 4
    mean, std = inception_score(np.concatenate([same, balanced]), splits=2)
    assert mean == pytest.approx(2.5) and std == pytest.approx(1.5)


def test_is_rejects_bad_input():
    with pytest.raises(ValueError, match="splits"):
        inception_score(random_probs(3, 4), splits=4)


# ------------------------------------------------------------------ FID
def random_cov(d, n, seed):
    a = np.random.default_rng(seed).normal(size=(n, d))
    return a.T @ a / n


def test_fid_is_zero_for_identical_statistics():
    mu, cov = np.arange(6.0), random_cov(6, 20, 0)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    low_rank = random_cov(30, 5, 1)  # rank 5 in 30 dimensions, as 2048 clips in 4096 dims
    assert frechet_distance(mu[:1].repeat(30), low_rank, mu[:1].repeat(30), low_rank) == \
        pytest.approx(0.0, abs=1e-8)


def test_fid_is_symmetric():
    mu1, mu2 = np.zeros(8), np.linspace(-1, 1, 8)
    c1, c2 = random_cov(8, 30, 2), random_cov(8, 4, 3)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1),
                                                               rel=1e-9)


def test_fid_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected,
                                                                                 rel=1e-10)


def test_fid_matches_trace_of_sqrtm_for_general_covariances():
    c1, c2 = random_cov(6, 10, 5), random_cov(6, 9, 6)
    # tr sqrt(C1 C2) from the eigenvalues of the (non-symmetric) product itself
    tr_sqrt = np.sum(np.sqrt(np.linalg.eigvals(c1 @ c2).real.clip(0)))
    expected = np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [3, 40])  # fewer and more samples than dimensions
def test_fid_to_features_equals_fid_of_their_statistics(n):
    rng = np.random.default_rng(n)
    features = rng.normal(1.0, 2.0, (n, 12)).astype(np.float32)
    mu, cov = rng.normal(size=12), random_cov(12, 30, 7)
    expected = frechet_distance(mu, cov, *mean_cov(features))
    assert frechet_distance_to_features(mu, cov, features) == pytest.approx(expected, rel=1e-9)


def test_mean_cov_is_numpy_unbiased_covariance():
    f = np.random.default_rng(8).normal(size=(9, 4))
    mu, cov = mean_cov(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(cov, np.cov(f.T))
    assert mu.dtype == cov.dtype == np.float64


# ------------------------------------------------------------------ DDM
def direct_ddm(t, g):
    d = ((t[:, None, :] - g[None, :, :]) ** 2).sum(-1) / 2
    return -np.mean(np.log(np.mean(np.exp(-d), axis=1)))


def test_ddm_matches_equation_3_4():
    rng = np.random.default_rng(9)
    t, g = rng.normal(0, 0.5, (7, 4)), rng.normal(0.2, 0.5, (5, 4))
    assert ddm(t, g) == pytest.approx(direct_ddm(t, g), rel=1e-12)


def test_ddm_is_stable_for_distant_embeddings():
    t, g = np.zeros((1, 101)), np.full((2, 101), 10.0)  # D = 5050: exp(-D) underflows
    assert ddm(t, g) == pytest.approx(5050.0, rel=1e-12)


def clusters(centres, per_mode, seed):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(0, 0.1, (per_mode, len(c))) for c in centres])


def test_ddm_is_lowest_for_the_test_distribution_and_grows_as_modes_drop():
    centres = np.eye(4) * 8.0  # four well separated modes
    test = clusters(centres, 20, 0)
    same = ddm(test, test)
    fresh = ddm(test, clusters(centres, 20, 1))  # another draw of the test distribution
    dropped = [ddm(test, clusters(centres[:k], 20, 2)) for k in (3, 2, 1)]
    shifted = ddm(test, clusters(centres * 1.2, 20, 1))
    assert abs(same - fresh) < 0.01
    assert max(same, fresh) + 1 < dropped[0] < dropped[1] < dropped[2]
    assert shifted > max(same, fresh) + 1


def test_kl_to_uniform_against_the_definition():
    """KL(p || u) = sum_i p_i log(p_i k): 0 for uniform counts, log(k/m) for m equal
    categories, log(k) with no count (the single-category maximum)."""
    assert kl_to_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_uniform(torch.tensor([2, 2, 0, 0])) == pytest.approx(math.log(2))
    assert kl_to_uniform(torch.tensor([0, 7, 0, 0])) == pytest.approx(math.log(4))
    assert kl_to_uniform(torch.zeros(4, dtype=torch.long)) == pytest.approx(math.log(4))
    p = torch.tensor([0.75, 0.25])
    assert kl_to_uniform(torch.tensor([3, 1])) == pytest.approx(float((p * (p * 2).log()).sum()))
