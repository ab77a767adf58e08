"""Multi-level 3D ResNet discriminator (tgan2 §3.4, §4.2, Eq. 7, Fig. 4)."""
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.config import ModelConfig
from vidgan.models.init import RESIDUAL_GAIN, glorot_


def downsample(x: torch.Tensor) -> torch.Tensor:
    """DownSample of tgan2 Fig. 4 on (B, C, T, H, W).

    Average-pool with kernel 2 along every axis longer than 1, zero-padding 1 where that length
    is odd (the zeros count in the mean); an axis of length 1 is left alone. (The official code
    also pads length-1 axes, growing them to 3; we follow the paper's text.)
    """
    sizes = x.shape[2:]
    kernel = tuple(2 if s > 1 else 1 for s in sizes)
    pad = tuple(1 if s > 1 and s % 2 else 0 for s in sizes)
    return F.avg_pool3d(x, kernel, stride=kernel, padding=pad, count_include_pad=True)


def conv3d(in_ch: int, out_ch: int, kernel: int, gain: float) -> nn.Conv3d:
    return glorot_(nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2), gain)


class OptimizedBlock(nn.Module):
    """First block: Conv3D-ReLU-Conv3D-AvgPool(1,2,2); shortcut AvgPool(1,2,2)-Conv1x1x1."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.c1 = conv3d(in_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c2 = conv3d(out_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c_sc = conv3d(in_ch, out_ch, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool3d(self.c2(F.relu(self.c1(x))), (1, 2, 2))
        return h + self.c_sc(F.avg_pool3d(x, (1, 2, 2)))


class DownBlock(nn.Module):
    """ReLU-Conv3D(C->C)-ReLU-Conv3D(C->C')-DownSample; shortcut Conv1x1x1-DownSample.

    The hidden width is the input width, as in SNGAN's discriminator block.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.c1 = conv3d(in_ch, in_ch, 3, RESIDUAL_GAIN)
        self.c2 = conv3d(in_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c_sc = conv3d(in_ch, out_ch, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        return downsample(h) + downsample(self.c_sc(x))


class VideoDiscriminator3D(nn.Module):
    """One sub-discriminator D'_l: 3D ResNet -> ReLU -> global sum pool -> Linear(->1).

    Conditional (n_classes > 0): projection discriminator, logit += <embed(y), features>.
    """

    def __init__(self, ch: int = 64, n_classes: int = 0, in_ch: int = 3):
        super().__init__()
        widths = [ch, 2 * ch, 4 * ch, 8 * ch, 16 * ch]
        self.blocks = nn.ModuleList([OptimizedBlock(in_ch, widths[0])] + [
            DownBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.fc = glorot_(nn.Linear(widths[-1], 1))
        self.embed = glorot_(nn.Embedding(n_classes, widths[-1])) if n_classes > 0 else None

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = x  # (B, 3, T, H, W)
        for block in self.blocks:
            h = block(h)
        h = F.relu(h).sum(dim=(2, 3, 4))  # (B, C)
        logit = self.fc(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is conditional: pass labels y of shape (B,)")
            logit = logit + (self.embed(y) * h).sum(dim=1)
        return logit


class MultiLevelDiscriminator(nn.Module):
    """One 3D ResNet per judged level, each with its own parameters (tgan2 §3.4)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.levels = list(cfg.dis_levels)
        self.batch_stride = 2 if cfg.subsample_batch else 1
        self.discriminators = nn.ModuleList(
            VideoDiscriminator3D(cfg.dis_ch, cfg.n_classes) for _ in self.levels)

    def forward(self, videos: List[torch.Tensor], y: Optional[torch.Tensor] = None
                ) -> List[torch.Tensor]:
        """videos[i]: (B_l, 3, T_l, H_l, W_l) of level self.levels[i] -> list of (B_l,) logits."""
        if len(videos) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} videos (levels {self.levels}), "
                             f"got {len(videos)}")
        logits = []
        for level, d, x in zip(self.levels, self.discriminators, videos):
            y_l = None if y is None else y[::self.batch_stride ** (level - 1)]
            logits.append(d(x, y_l))
        return logits
