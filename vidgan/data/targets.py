"""Real targets S^D_l: a real clip reduced like each generated level (tgan2 §3.4, §4.4)."""
from typing import List, Sequence

import torch
from torch.nn import functional as F

from vidgan.config import N_LEVELS
from vidgan.models.subsample import subsample_examples


def real_targets(video: torch.Tensor, subsample: Sequence[int], levels: Sequence[int],
                 batch_stride: int = 1) -> List[torch.Tensor]:
    """video (B, 3, T, H, W) -> one clip per judged level, like the generator's x'_l.

    Level l: frames subsampled by the same chain of s_t as the generator, with offsets drawn
    per clip (as the official data pipeline) and independently of the generator's, then
    spatially average-pooled by 2^(L-l): level 1 is the whole clip pooled by 8, level L the
    subsampled clip at full resolution. Runs on the batch's device, once per step.
    """
    targets, x = [], video
    for level in range(1, N_LEVELS + 1):
        if level > 1:
            x = subsample_examples(x, subsample[level - 2], batch_stride)
        if level in levels:
            f = 2 ** (N_LEVELS - level)
            targets.append(F.avg_pool3d(x, (1, f, f)) if f > 1 else x)
    return targets
