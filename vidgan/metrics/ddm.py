"""Distribution Divergence Measure (Basart 2017 §3.2, Eq. 3.4) on classifier logits:

    DDM = -1/|T| sum_{t in T} log( 1/|G| sum_{g in G} exp(-D(t, g)) ),  D = |t - g|^2 / 2

the variational approximation of KL(test || generated) between two equal-weight Gaussian
mixtures centred on the samples. Lower is better; it grows when the generator drops modes
(a test sample far from every generated one contributes its full distance), which IS misses.
"""
from __future__ import annotations

import math

import torch

from vidgan.metrics.registry import Metric, Reference


def ddm(test_logits, gen_logits) -> float:
    """Eq. 3.4 for test embeddings (|T|, K) and generated embeddings (|G|, K), float64.

    exp(-D) underflows for logits a few units apart, so the inner log-mean-exp is a
    log-sum-exp.
    """
    t = torch.as_tensor(test_logits).to(dtype=torch.float64)
    g = torch.as_tensor(gen_logits).to(dtype=torch.float64, device=t.device)
    if t.ndim != 2 or g.ndim != 2 or t.shape[1] != g.shape[1] or not len(t) or not len(g):
        raise ValueError(f"ddm: expected non-empty (|T|, K) and (|G|, K) embeddings, got "
                         f"{tuple(t.shape)} and {tuple(g.shape)}")
    half_sq = (torch.cdist(t, g) ** 2) / 2  # D(t, g), (|T|, |G|)
    log_mean = torch.logsumexp(-half_sq, dim=1) - math.log(len(g))
    return float(-log_mean.mean())


# the test split's logits, one clip per video (Basart 2017 compares with the test set)
C3D_TEST = Reference("c3d_test_logits", "test", None,
                     reduce=lambda reads: {"logits": reads[1].float().cpu().numpy()})


def _score(reads, reference, options) -> dict:
    logits = reads[1]
    return {"ddm": ddm(torch.as_tensor(reference["logits"]).to(logits.device), logits)}


METRICS = (Metric("ddm", "c3d", _score, n_frames=16, reference=C3D_TEST,
                  weights="C3D: conv3d_deepnetA_ucf.npz + mean2.npz (TGANv2 release)",
                  comparable="the DDM thesis's numbers (C3D logits against the test split)"),)
