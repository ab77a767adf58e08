"""VGAN (Vondrick et al., NeurIPS 2016): the two-stream generator G(z) = m(z) * f(z) +
(1 - m(z)) * b(z), a 3D-deconvolution foreground f with a sigmoid mask m that shares all but
its last layer, and a 2D background b held still over time (VGAN §2.2, Fig. 1); its
discriminator of 3D convolutions (§2.3).

Built as the official Torch7 code (main.lua) builds them: the same layers, parameter counts
(16,245,383 and 11,057,858 at 64 px, 32 frames) and initialisers; docs/FIDELITY.md lists where
that code and the paper differ.
"""
from typing import Optional

import torch
from torch import nn

from vidgan.models.discriminator import dcgan_video_convs, run_dcgan_video_convs
from vidgan.models.normalization import GlobalBatchNorm2d, GlobalBatchNorm3d

# The official D's BatchNorm eps (VolumetricBatchNormalization(C, 1e-3)); G's are Torch's
# default 1e-5, as PyTorch's.
D_BN_EPS = 1e-3
LEAKY_SLOPE = 0.2
# Every (de)convolution weight ~ N(0, 0.01), bias 0; every BN gamma ~ N(1, 0.02), beta 0
# (official weights_init; the paper: "zero mean Gaussian noise with standard deviation 0.01").
WEIGHT_STD = 0.01
GAMMA_STD = 0.02


def official_init_(module: nn.Module) -> nn.Module:
    """The official weights_init over every submodule."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, WEIGHT_STD)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, GAMMA_STD)
            nn.init.zeros_(m.bias)
    return module


def n_upsamplings(resolution: int) -> int:
    """Stride-2 layers from the 4x4 map to ``resolution`` (4 at the official 64 px)."""
    return (resolution // 4).bit_length() - 1


class MaskedVideos(list):
    """The one-entry list of videos the generator returns in train mode, carrying the mask
    m(z) of that forward (B, 1, T, H, W), for the sparsity prior (loss.mask_weight)."""

    def __init__(self, videos, mask: torch.Tensor):
        super().__init__(videos)
        self.mask = mask


class VGANGenerator(nn.Module):
    """z ~ N(0, I)^z_dim -> (B, 3, T, H, W) in [-1, 1], T = H / 2 (32 frames at 64 px).

    ``train()``: a one-entry list (``MaskedVideos``, with the mask); ``eval()``: the video.
    Eval mode may ask for fewer frames (``n_frames``): the first ones, as the 16-frame metrics
    score a 32-frame generator."""

    n_classes = 0
    levels_rendered = [1]  # one video, no levels

    def __init__(self, z_dim: int = 100, ch: int = 512, resolution: int = 64):
        super().__init__()
        n_up = n_upsamplings(resolution)
        widths = [ch // 2 ** i for i in range(n_up)]  # official: 512, 256, 128, 64
        self.n_frames = resolution // 2
        self.z_dim = z_dim
        # Foreground and mask trunk: z as a (1, 1, 1) map -> (2, 4, 4), then stride-2 layers
        trunk = [nn.ConvTranspose3d(z_dim, widths[0], (2, 4, 4)), GlobalBatchNorm3d(widths[0]),
                 nn.ReLU()]
        for a, b in zip(widths, widths[1:]):
            trunk += [nn.ConvTranspose3d(a, b, 4, 2, 1), GlobalBatchNorm3d(b), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.foreground = nn.ConvTranspose3d(widths[-1], 3, 4, 2, 1)  # then tanh
        self.mask = nn.ConvTranspose3d(widths[-1], 1, 4, 2, 1)  # then sigmoid
        # Background: its own DCGAN image generator from the same z
        background = [nn.ConvTranspose2d(z_dim, widths[0], 4), GlobalBatchNorm2d(widths[0]),
                      nn.ReLU()]
        for a, b in zip(widths, widths[1:]):
            background += [nn.ConvTranspose2d(a, b, 4, 2, 1), GlobalBatchNorm2d(b), nn.ReLU()]
        background.append(nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1))  # then tanh
        self.background = nn.Sequential(*background)
        official_init_(self)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z ~ N(0, I)^z_dim (the official ``noise:normal()``), on the generator's device."""
        param = next(self.parameters())
        rng_device = generator.device if generator is not None else param.device
        z = torch.randn(batch_size, self.z_dim, generator=generator, device=rng_device)
        return z.to(param.device, param.dtype)

    def memory_condition(self, z: torch.Tensor) -> None:
        """VGAN takes no memory key (the model contract's MCGN hook)."""
        return None

    def streams(self, z: torch.Tensor):
        """(foreground f (B, 3, T, H, W), mask m (B, 1, T, H, W), background b (B, 3, H, W))."""
        h = self.trunk(z[:, :, None, None, None])
        f = torch.tanh(self.foreground(h))
        m = torch.sigmoid(self.mask(h))
        b = torch.tanh(self.background(z[:, :, None, None]))
        return f, m, b

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                n_frames: Optional[int] = None, render_level: Optional[int] = None):
        if y is not None:
            raise ValueError("VGAN is unconditional: pass no labels")
        if render_level not in (None, 1):
            raise ValueError(f"render_level={render_level}: VGAN renders one level (1)")
        if n_frames is not None and not 1 <= n_frames <= self.n_frames:
            raise ValueError(f"n_frames={n_frames}: VGAN draws {self.n_frames} frames at once; "
                             f"ask for 1..{self.n_frames} (the first ones)")
        f, m, b = self.streams(z)
        # VGAN Eq. (2): G(z) = m * f + (1 - m) * b, b the same image at every frame
        video = m * f + (1 - m) * b[:, :, None]
        if self.training:
            return MaskedVideos([video], m)
        return video if n_frames is None else video[:, :, :n_frames]


class VGANDiscriminator(nn.Module):
    """Four stride-2 3D convolutions (leaky ReLU 0.2; BN, eps 1e-3, after all but the first),
    then a 3D convolution over the whole last map to two logits (real, fake), as the official
    code's CrossEntropyCriterion reads them. Returns one logit per clip, logit_real -
    logit_fake: the two-way softmax cross-entropy is then exactly the logistic loss on it."""

    def __init__(self, ch: int = 64, resolution: int = 64):
        super().__init__()
        self.convs = dcgan_video_convs(ch)
        self.norms = nn.ModuleList(GlobalBatchNorm3d(w, eps=D_BN_EPS)
                                   for w in (2 * ch, 4 * ch, 8 * ch))
        top = resolution // 16  # (2, 4, 4) at 64 px, 32 frames
        self.classify = nn.Conv3d(8 * ch, 2, (top // 2, top, top))
        official_init_(self)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        h = run_dcgan_video_convs(self.convs, self.norms, video, LEAKY_SLOPE)
        logits = self.classify(h).flatten(1)  # (B, 2)
        return logits[:, 0] - logits[:, 1]
