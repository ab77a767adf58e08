"""Batch normalisation as the official Chainer code uses it, and its class-conditional form."""
from typing import Optional

import torch
from torch import nn

# Chainer's BatchNormalization defaults: eps 2e-5, running average decay 0.9 (momentum 0.1).
BN_EPS = 2e-5
BN_MOMENTUM = 0.1


class CategoricalConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gamma/beta are looked up per class (Miyato et al., tgan2 §4.6)."""

    def __init__(self, num_features: int, n_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.gamma = nn.Embedding(n_classes, num_features)
        self.beta = nn.Embedding(n_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)  # (N, C, H, W)
        return h * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class GeneratorNorm(nn.Module):
    """BN for the image generator: plain when n_classes == 0, categorical conditional otherwise.

    Frames are folded into the batch, so statistics run over (B*T, H, W) (DESIGN §2).
    """

    def __init__(self, num_features: int, n_classes: int = 0):
        super().__init__()
        self.conditional = n_classes > 0
        self.norm = (CategoricalConditionalBatchNorm2d(num_features, n_classes) if self.conditional
                     else nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.norm(x, y) if self.conditional else self.norm(x)
