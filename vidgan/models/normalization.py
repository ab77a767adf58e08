"""Batch normalisation as the official Chainer code uses it, and its class-conditional form."""
import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from vidgan import distributed

# Chainer's BatchNormalization defaults: eps 2e-5, running average decay 0.9 (momentum 0.1).
BN_EPS = 2e-5
BN_MOMENTUM = 0.1


class _GlobalStatistics:
    """The forward of ``nn.BatchNorm{1,2,3}d`` whose training statistics are those of the
    global batch when the batch is split over processes (TGANv2 trained with ChainerMN's
    multi-node BN). ``nn.SyncBatchNorm`` does the same on GPUs only; this one also works with
    gloo on the CPU. One process: exactly the torch module (same code path, same state-dict
    keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        # Two passes, as F.batch_norm: the global mean, then the global centred sum of squares;
        # all_sum's backward sums the gradients over ranks, so the normalisation's gradient is
        # that of the global batch.
        count = x.numel() // x.shape[1] * distributed.world_size()
        dims = (0,) + tuple(range(2, x.dim()))  # all but the channels
        shape = (1, -1) + (1,) * (x.dim() - 2)  # a per-channel vector, broadcast
        h = x if x.dtype == torch.float64 else x.float()
        mean = distributed.all_sum(h.sum(dims)) / count
        centred = h - mean.view(shape)
        var = distributed.all_sum(centred.pow(2).sum(dims)) / count  # biased, to normalise
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
            self.running_var.lerp_((var * count / max(count - 1, 1)).to(self.running_var.dtype),
                                   m)
        return y.to(x.dtype)


class GlobalBatchNorm1d(_GlobalStatistics, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the global batch (``_GlobalStatistics``)."""


class GlobalBatchNorm2d(_GlobalStatistics, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the global batch (``_GlobalStatistics``)."""


class GlobalBatchNorm3d(_GlobalStatistics, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` over the global batch (``_GlobalStatistics``)."""


class BatchNormNoBeta(nn.Module):
    """Chainer's ``BatchNormalization(C, use_beta=False)``: a learnt scale gamma and no shift,
    as the official TGAN code's temporal generator and discriminator use it. ``dims``: the
    input's spatial rank (1: (N, C, L), 2, 3: (N, C, T, H, W); 1 also takes (N, C))."""

    def __init__(self, num_features: int, dims: int):
        super().__init__()
        norm = {1: GlobalBatchNorm1d, 2: GlobalBatchNorm2d, 3: GlobalBatchNorm3d}[dims]
        self.bn = norm(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.gamma = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gamma.view((1, -1) + (1,) * (x.dim() - 2))


class CategoricalConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gamma/beta are looked up per class (Miyato et al., tgan2 §4.6)."""

    def __init__(self, num_features: int, n_classes: int):
        super().__init__()
        self.bn = GlobalBatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.gamma = nn.Embedding(n_classes, num_features)
        self.beta = nn.Embedding(n_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)  # (N, C, H, W)
        return h * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class GeneratorNorm(nn.Module):
    """BN for the image generator: plain when n_classes == 0, categorical conditional otherwise.

    Frames are folded into the batch (the image generator's convolutions are 2D), so
    statistics run over (B*T, H, W).
    """

    def __init__(self, num_features: int, n_classes: int = 0):
        super().__init__()
        self.conditional = n_classes > 0
        self.norm = (CategoricalConditionalBatchNorm2d(num_features, n_classes) if self.conditional
                     else GlobalBatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.norm(x, y) if self.conditional else self.norm(x)


@contextlib.contextmanager
def frozen_running_statistics(module: nn.Module) -> Iterator[None]:
    """Forward passes inside leave the running statistics of every BatchNorm in ``module``
    as they were (train-mode outputs still use the batch's own statistics). The forwards
    update copies, and the buffers are then set back to the untouched originals: a graph
    built before (e.g. for R1's double backward) still finds them at the version it saved."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
             and m.track_running_stats]
    saved = [[getattr(m, n) for n in names] for m in norms]
    for m, buffers in zip(norms, saved):
        for n, b in zip(names, buffers):
            setattr(m, n, b.clone())
    try:
        yield
    finally:
        for m, buffers in zip(norms, saved):
            for n, b in zip(names, buffers):
                setattr(m, n, b)
