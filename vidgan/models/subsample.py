"""The stochastic frame-subsampling layer S_l (tgan2 §4.1, Eq. 8-9), and the real targets
S^D_l: a real clip reduced like each generated level (tgan2 §3.4, §4.4)."""
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from vidgan import distributed
from vidgan.config import N_LEVELS


def draw_offset(s_t: int, n_frames: int, generator: Optional[torch.Generator] = None) -> int:
    """b_t ~ U{0, ..., min(s_t, T_h) - 1} (Eq. 9).

    The min keeps every level non-empty: with s_t = 4 and T_h = 1 the only offset is 0. (The
    official code draws from {0..s_t-1} and crashes on the empty level that follows.) Drawn on
    the CPU so it never syncs the device and is restored with the CPU RNG state on resume.
    """
    high = min(s_t, n_frames)
    return int(torch.randint(high, (1,), generator=generator))


def frame_indices(n_in: int, s_t: int, offsets: torch.Tensor) -> torch.Tensor:
    """tau = t * s_t + b (Eq. 9) for t < ceil(n_in / s_t) (Eq. 8), one row per offset in
    ``offsets`` (shape (...,)) -> (..., ceil(n_in / s_t)); an index past the end repeats the
    last frame."""
    n_out = -(-n_in // s_t)
    return (torch.arange(n_out) * s_t + offsets[..., None]).clamp_(max=n_in - 1)


class FrameSubsampler(nn.Module):
    """Keeps frames tau = t * s_t + b_t (Eq. 9), i.e. ``h[:, b_t::s_t]`` along time.

    The output always has ceil(T_h / s_t) frames (Eq. 8). When T_h is not a multiple of s_t
    and b_t > 0, the last index t * s_t + b_t falls past the end; that frame repeats the last
    input frame. (``h[b_t::s_t]`` would drop it, making the count depend on b_t; the rule is
    the same for generated and real clips, so it is no real/fake cue.)

    With ``batch_stride > 1`` it also keeps every batch_stride-th sample (the official code's
    optional batch subsampling). The same layer reduces generated features and real clips.
    """

    def __init__(self, s_t: int, batch_stride: int = 1):
        super().__init__()
        self.s_t, self.batch_stride = s_t, batch_stride

    def forward(self, x: torch.Tensor, time_dim: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n_in = x.shape[time_dim]
        b = draw_offset(self.s_t, n_in, generator)
        n_out = -(-n_in // self.s_t)
        x = x[::self.batch_stride]
        if b + (n_out - 1) * self.s_t < n_in:  # the common case: a strided view, no copy
            index = [slice(None)] * x.dim()
            index[time_dim] = slice(b, None, self.s_t)
            return x[tuple(index)]
        taus = frame_indices(n_in, self.s_t, torch.tensor(b))
        return x.index_select(time_dim, taus.to(x.device))

    def extra_repr(self) -> str:
        return f"s_t={self.s_t}, batch_stride={self.batch_stride}"


def subsample_examples(x: torch.Tensor, s_t: int, batch_stride: int = 1) -> torch.Tensor:
    """A real batch (B, C, T, H, W) through a subsampling layer with an offset b_i of its own
    for every clip (Eq. 9 per example), as the official data pipeline draws it (one clip at a
    time, in ``MultiLevelDataset.get_example``); the generator's layer draws one per batch.

    Same rule as ``FrameSubsampler``: ceil(T/s_t) frames, an index past the end repeats the
    last frame. The offsets are drawn on the CPU for the global batch and sliced, so N
    processes see the offsets one process would (vidgan.distributed).
    """
    x = x[::batch_stride]
    b, n_in = x.shape[0], x.shape[2]
    offsets = distributed.shard(torch.randint(min(s_t, n_in), (b * distributed.world_size(),)))
    taus = frame_indices(n_in, s_t, offsets)  # (B, T')
    rows = torch.arange(b)[:, None]
    return x.transpose(1, 2)[rows.to(x.device), taus.to(x.device)].transpose(1, 2)


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
