"""A discriminator that judges one whole video, seen through the head interface the
training loss uses (vidgan/train/loss.py): the single-scale video GANs (TGAN, VGAN) whose one
network scores the full clip, against real clips as they come."""
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

HEAD = "video"


class OneHeadDiscriminator(nn.Module):
    """``net`` as the one head ``video``: it judges the generator's single video (the
    one-entry list G returns in train mode) and the real clip unreduced. ``net`` takes
    (B, 3, T, H, W) and returns one score per clip."""

    batch_stride = 1  # no batch subsampling: one level
    head_levels = {HEAD: 1}

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def head(self, name: str) -> nn.Module:
        if name != HEAD:
            raise KeyError(f"head '{name}': this discriminator has one head, '{HEAD}'")
        return self.net

    @staticmethod
    def head_inputs(videos: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        if len(videos) != 1:
            raise ValueError(f"expected one video, got {len(videos)}")
        return {HEAD: videos[0]}

    @staticmethod
    def real_targets(video: torch.Tensor):
        """The real clip as the head judges it: unchanged."""
        return [video]

    def forward(self, videos: Union[Sequence[torch.Tensor], Dict[str, torch.Tensor]],
                y: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if y is not None:
            raise ValueError("this discriminator is unconditional: pass no labels")
        inputs = videos if isinstance(videos, dict) else self.head_inputs(videos)
        return {HEAD: self.net(inputs[HEAD])}
