"""Image generator parts: the Up(C) residual block and the per-level rendering block.

tgan2 Fig. 4 / SNGAN generator block. Inputs are frames folded into the batch: (B*T, C, H, W).
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.models.init import RESIDUAL_GAIN, glorot_, lecun_normal_
from vidgan.models.normalization import GeneratorNorm


class UpBlock(nn.Module):
    """BN-ReLU-UnPool2x-Conv3x3-BN-ReLU-Conv3x3 + shortcut UnPool2x-Conv1x1.

    The learnable shortcut exists when channels or size change; in an Up block the size always
    doubles, so every Up block has one (as the official GenBlock: learnable_sc = in != out or
    upsample). UnPool is nearest-neighbour 2x.
    """

    def __init__(self, in_ch: int, out_ch: int, n_classes: int = 0):
        super().__init__()
        self.b1 = GeneratorNorm(in_ch, n_classes)
        self.c1 = glorot_(nn.Conv2d(in_ch, out_ch, 3, padding=1), RESIDUAL_GAIN)
        self.b2 = GeneratorNorm(out_ch, n_classes)
        self.c2 = glorot_(nn.Conv2d(out_ch, out_ch, 3, padding=1), RESIDUAL_GAIN)
        self.c_sc = glorot_(nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = F.relu(self.b1(x, y))
        h = self.c1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.c2(F.relu(self.b2(h, y)))
        return h + self.c_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class RenderBlock(nn.Module):
    """BN-ReLU-Conv3x3(->3)-tanh; every level has its own (tgan2 §3.3).

    ``init`` (model.init): "official" = LeCun normal, as the official code's c3-c6 (Chainer's
    default); "legacy" = Glorot uniform (vidgan < 0.2).
    """

    def __init__(self, in_ch: int, n_classes: int = 0, out_ch: int = 3, init: str = "official"):
        super().__init__()
        self.bn = GeneratorNorm(in_ch, n_classes)
        conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv = lecun_normal_(conv) if init == "official" else glorot_(conv)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.tanh(self.conv(F.relu(self.bn(x, y))))
