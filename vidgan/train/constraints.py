"""Lipschitz constraints of WGAN critics, applied to the discriminator after its update:
WGAN's weight clipping and TGAN's Singular Value Clipping (TGAN §4, Table 2, Algorithm 1)."""
import torch
from torch import nn

from vidgan.models.normalization import BatchNormNoBeta

# The official TGAN code's lower bound of a BN scale, as a fraction of its running std.
GAMMA_FLOOR = 0.01
BN_SCALE_BOUNDS = ("official", "paper")


@torch.no_grad()
def clip_singular_values_(module: nn.Module) -> None:
    """TGAN Table 2, linear and convolutional layers: every weight W with >= 4 dims, read as
    the matrix W' = W.reshape(out, -1), becomes U min(S, 1) V^T where W' = U S V^T, so its
    spectral norm is at most 1. Like the official code, only tensors of >= 4 dims (the
    convolutions; its discriminator has no linear layer), in their own dtype."""
    for p in module.parameters():
        if p.dim() >= 4:
            u, s, vh = torch.linalg.svd(p.reshape(p.shape[0], -1), full_matrices=False)
            p.copy_(((u * s.clamp(max=1.0)) @ vh).view_as(p))


def _scales_and_norms(module: nn.Module):
    """(gamma, the BatchNorm holding its running variance and eps) of every BN in ``module``."""
    for m in module.modules():
        if isinstance(m, BatchNormNoBeta):
            yield m.gamma, m.bn
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            yield m.weight, m


@torch.no_grad()
def clip_batchnorm_scales_(module: nn.Module, bound: str = "official") -> None:
    """TGAN Table 2, batch normalisation: every BN scale gamma clipped.

    "official" (the official code): to [0.01 sigma, sigma], sigma = sqrt(running variance),
    no eps. "paper" (Table 2 as written): 0 < gamma <= sqrt(sigma_B^2 + eps), with sigma_B^2
    the running variance and the BN's own eps; the open lower bound is kept as gamma >= 0,
    which a clamp can hold.
    """
    if bound not in BN_SCALE_BOUNDS:
        raise ValueError(f"train.bn_scale_bound='{bound}': expected one of {BN_SCALE_BOUNDS}")
    for gamma, norm in _scales_and_norms(module):
        variance = norm.running_var.to(gamma.dtype)
        if bound == "official":
            sigma = variance.sqrt()
            gamma.copy_(torch.minimum(torch.maximum(gamma, GAMMA_FLOOR * sigma), sigma))
        else:
            gamma.copy_(torch.minimum(gamma.clamp(min=0.0), (variance + norm.eps).sqrt()))


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """WGAN's weight clipping (Arjovsky et al., Algorithm 1): every parameter clamped to
    [-c, c] (the official TGAN code's TGANUpdaterWGANClip: c = 0.01, BN scales included)."""
    for p in module.parameters():
        p.clamp_(-c, c)


def constrain_discriminator(D: nn.Module, constraint: str, weight_clip: float = 0.01,
                            bn_scale_bound: str = "official") -> None:
    """train.d_constraint on ``D``: "svc" (both parts of TGAN Table 2, the BN part by
    ``bn_scale_bound``), "clip" (WGAN)."""
    if constraint == "svc":
        clip_singular_values_(D)
        clip_batchnorm_scales_(D, bn_scale_bound)
    elif constraint == "clip":
        clip_weights_(D, weight_clip)
    elif constraint != "none":
        raise ValueError(f"train.d_constraint='{constraint}': expected none, svc or clip")
