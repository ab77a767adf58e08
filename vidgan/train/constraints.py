"""Lipschitz constraints of WGAN critics, applied to the discriminator after its update:
WGAN's weight clipping and TGAN's Singular Value Clipping (TGAN §4, Table 2, Algorithm 1)."""
import torch
from torch import nn

from vidgan.models.normalization import BatchNormNoBeta

# The official TGAN code's lower bound of a BN scale, as a fraction of its running std.
GAMMA_FLOOR = 0.01


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


def _scales_and_variances(module: nn.Module):
    for m in module.modules():
        if isinstance(m, BatchNormNoBeta):
            yield m.gamma, m.bn.running_var
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            yield m.weight, m.running_var


@torch.no_grad()
def clip_batchnorm_scales_(module: nn.Module) -> None:
    """TGAN Table 2, batch normalisation, as the official code does it: every BN scale gamma
    clipped to [0.01 sigma, sigma], sigma = sqrt(running variance) with no eps (the paper:
    0 < gamma <= sqrt(sigma_B^2 + eps), docs/FIDELITY.md)."""
    for gamma, variance in _scales_and_variances(module):
        sigma = variance.sqrt().to(gamma.dtype)
        gamma.copy_(torch.minimum(torch.maximum(gamma, GAMMA_FLOOR * sigma), sigma))


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """WGAN's weight clipping (Arjovsky et al., Algorithm 1): every parameter clamped to
    [-c, c] (the official TGAN code's TGANUpdaterWGANClip: c = 0.01, BN scales included)."""
    for p in module.parameters():
        p.clamp_(-c, c)


def constrain_discriminator(D: nn.Module, constraint: str, weight_clip: float = 0.01) -> None:
    """train.d_constraint on ``D``: "svc" (both parts of TGAN Table 2), "clip" (WGAN)."""
    if constraint == "svc":
        clip_singular_values_(D)
        clip_batchnorm_scales_(D)
    elif constraint == "clip":
        clip_weights_(D, weight_clip)
    elif constraint != "none":
        raise ValueError(f"train.d_constraint='{constraint}': expected none, svc or clip")
