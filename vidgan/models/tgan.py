"""TGAN (Saito et al., ICCV 2017): a temporal generator of 1D deconvolutions that turns one
latent z_0 into T frame latents z_1^t, an image generator that renders each frame from
(z_0, z_1^t), and a 3D-convolution video discriminator (TGAN §4, Fig. 2, Table 1).

Built as the official code's UCF101 run builds them (its classes
FrameSeedGeneratorNoBetaInitDefault, VideoGeneratorInitUniform and
VideoDiscriminatorNoBetaInitDefault): the same layers, parameter counts (825,444, 3,622,691,
11,032,385) and initialisers; docs/FIDELITY.md lists where that code and the paper differ.
"""
import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.models.discriminator import dcgan_video_convs, run_dcgan_video_convs
from vidgan.models.init import lecun_normal_
from vidgan.models.latent_de import LatentDE
from vidgan.models.normalization import (BN_EPS, BN_MOMENTUM, BatchNormNoBeta,
                                         GlobalBatchNorm1d, GlobalBatchNorm2d)

# The official code's frame count: four stride-2 deconvolutions from one step (1 -> 16).
TGAN_FRAMES = 16
# Chainer's leaky ReLU slope, which the discriminator uses.
LEAKY_SLOPE = 0.2
# VideoGeneratorInitUniform's Uniform(0.01): every weight ~ U(-0.01, 0.01).
IMAGE_WSCALE = 0.01


# model.init for the temporal generator and D: "official", Chainer's default initialiser
# (the official code); "paper", HeNormal (TGAN §6: "initialized with HeNormal").
TGAN_INITS = {"official": 1.0, "paper": math.sqrt(2.0)}


def chainer_default_init_(module: nn.Module, init: str = "official") -> nn.Module:
    """Chainer's default initialiser (``initialW=None``): LeCun normal, std 1/sqrt(fan_in)
    with fan_in = prod(W.shape[1:]), zero bias. For a deconvolution, whose W is (in, out, k),
    that is out * k, as ``lecun_normal_`` reads it from a PyTorch weight of the same layout.
    ``init="paper"``: HeNormal, sqrt(2) times that std over the same fan_in."""
    if init not in TGAN_INITS:
        raise ValueError(f"model.init='{init}': TGAN takes {' or '.join(TGAN_INITS)}")
    return lecun_normal_(module, TGAN_INITS[init])


def uniform_init_(module: nn.Module, scale: float = IMAGE_WSCALE) -> nn.Module:
    """Chainer's ``Uniform(scale)`` weights, zero bias."""
    nn.init.uniform_(module.weight, -scale, scale)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


class TGANTemporalGenerator(nn.Module):
    """z_0 (B, z_dim) -> z_1 (B, z_dim, 16) in [-1, 1]: five 1D deconvolutions along time,
    each but the last followed by BN without beta and ReLU, tanh at the end (TGAN Table 1,
    official FrameSeedGeneratorNoBetaInitDefault)."""

    def __init__(self, z_dim: int = 100, init: str = "official"):
        super().__init__()
        widths = [z_dim, 512, 256, 128, 128, z_dim]
        self.deconvs = nn.ModuleList(
            [nn.ConvTranspose1d(widths[0], widths[1], 1, 1, 0)] +
            [nn.ConvTranspose1d(widths[i], widths[i + 1], 4, 2, 1) for i in range(1, 5)])
        self.norms = nn.ModuleList(BatchNormNoBeta(w, dims=1) for w in widths[1:5])
        for deconv in self.deconvs:
            chainer_default_init_(deconv, init)

    @property
    def noise_dim(self) -> int:
        return self.deconvs[0].in_channels

    def latent_dim(self, n_frames: int) -> int:
        """z_0 alone: it draws 16 frames."""
        return self.noise_dim

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z_0 ~ U(-1, 1)^z_dim, as the official code draws it; the clip is 16 frames."""
        check_tgan_frames(n_frames)
        return uniform_z0(self, batch_size, self.noise_dim, generator)

    def forward(self, z0: torch.Tensor, n_frames: Optional[int] = None) -> torch.Tensor:
        check_tgan_frames(n_frames)
        h = z0[:, :, None]  # (B, z_dim, 1): one time step
        for deconv, norm in zip(self.deconvs[:-1], self.norms):
            h = F.relu(norm(deconv(h)))
        return torch.tanh(self.deconvs[-1](h))  # (B, z_dim, 16)


def check_tgan_frames(n_frames: Optional[int]) -> None:
    if n_frames not in (None, TGAN_FRAMES):
        raise ValueError(f"n_frames={n_frames}: TGAN's temporal generator draws "
                         f"{TGAN_FRAMES} frames")


def uniform_z0(module: nn.Module, batch_size: int, dim: int,
               generator: Optional[torch.Generator]) -> torch.Tensor:
    """z_0 ~ U(-1, 1)^dim drawn on the generator's device, returned on the module's."""
    param = next(module.parameters())
    rng_device = generator.device if generator is not None else param.device
    z = torch.rand(batch_size, dim, generator=generator, device=rng_device)
    return (2 * z - 1).to(param.device, param.dtype)


class TGANLatentDE(nn.Module):
    """G_0 as a latent ODE or SDE (Gordon & Parde's TGAN-ODE/SDE, their tgan_ode): z_1(0) =
    FCN(z_0), z_1^t its solution at the frame times, (B, z_dim, T) as TGAN's G_0 gives it,
    for any T. The latent is z_0, plus an SDE's Brownian increments."""

    def __init__(self, z_dim: int, dynamics: LatentDE):
        super().__init__()
        self.noise_dim, self.dynamics = z_dim, dynamics

    def latent_dim(self, n_frames: int) -> int:
        return self.noise_dim + self.dynamics.noise_dim(n_frames)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        z0 = uniform_z0(self, batch_size, self.noise_dim, generator)
        rng_device = generator.device if generator is not None else z0.device
        noise = self.dynamics.sample_noise(batch_size, n_frames or TGAN_FRAMES, generator,
                                           rng_device)
        return torch.cat([z0, noise.to(z0)], dim=1)

    def forward(self, z: torch.Tensor, n_frames: Optional[int] = None) -> torch.Tensor:
        n = n_frames or TGAN_FRAMES
        z1 = self.dynamics(z[:, :self.noise_dim], n, z[:, self.noise_dim:])  # (B, T, z_dim)
        return z1.transpose(1, 2)


class TGANImageGenerator(nn.Module):
    """One frame from (z_0, z_1^t): each through its own linear layer + BN + ReLU to half of a
    4x4 map, concatenated, then DCGAN deconvolutions to 64x64 and tanh (TGAN Table 1, official
    VideoGeneratorInitUniform). Frames are folded into the batch: (N, z_dim) x 2 -> (N, 3, 64,
    64)."""

    def __init__(self, z_dim: int = 100, ch: int = 512, bottom: int = 4, resolution: int = 64):
        super().__init__()
        self.ch, self.bottom = ch, bottom
        half = bottom * bottom * ch // 2
        self.slow = nn.Linear(z_dim, half, bias=False)  # official l0s
        self.fast = nn.Linear(z_dim, half, bias=False)  # official l0f
        self.slow_norm = GlobalBatchNorm1d(half, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.fast_norm = GlobalBatchNorm1d(half, eps=BN_EPS, momentum=BN_MOMENTUM)
        # official (64 px): four stride-2 deconvolutions, 512 -> 32 channels; other sizes
        # take one per doubling of the 4x4 map, the width halving each time
        n_up = (resolution // bottom).bit_length() - 1
        widths = [ch // 2 ** i for i in range(n_up + 1)]
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1,
                                                        bias=False) for i in range(n_up))
        self.norms = nn.ModuleList(GlobalBatchNorm2d(w, eps=BN_EPS, momentum=BN_MOMENTUM)
                                   for w in widths[1:])
        self.to_rgb = nn.ConvTranspose2d(widths[-1], 3, 3, 1, 1)  # official dc5, with bias
        for layer in (self.slow, self.fast, *self.deconvs, self.to_rgb):
            uniform_init_(layer)

    def forward(self, z_slow: torch.Tensor, z_fast: torch.Tensor) -> torch.Tensor:
        n, shape = z_slow.shape[0], (-1, self.ch // 2, self.bottom, self.bottom)
        h = torch.cat([F.relu(self.slow_norm(self.slow(z_slow))).view(shape),
                       F.relu(self.fast_norm(self.fast(z_fast))).view(shape)], dim=1)
        for deconv, norm in zip(self.deconvs, self.norms):
            h = F.relu(norm(deconv(h)))
        return torch.tanh(self.to_rgb(h)).view(n, 3, *h.shape[2:])


class TGANGenerator(nn.Module):
    """The TGAN generator G(z_0) = [G_1(z_0, z_1^1), ..., G_1(z_0, z_1^T)] with z_1 =
    G_0(z_0) (TGAN Eq. 3), z_0 ~ U(-1, 1)^z_dim as the official code draws it.

    ``train()``: a one-entry list, the video its single discriminator judges; ``eval()``: the
    video itself, (B, 3, 16, 64, 64) in [-1, 1]. Unconditional, 16 frames."""

    n_classes = 0
    levels_rendered = [1]  # one video, no levels

    def __init__(self, z_dim: int = 100, ch: int = 512, resolution: int = 64,
                 init: str = "official", dynamics: Optional[LatentDE] = None):
        super().__init__()
        self.n_frames = TGAN_FRAMES
        self.noise_dim = z_dim
        # model.latent_de: G_0 as a latent ODE/SDE (TGAN-ODE), which draws any length
        self.temporal = (TGANTemporalGenerator(z_dim, init) if dynamics is None
                         else TGANLatentDE(z_dim, dynamics))
        self.image = TGANImageGenerator(z_dim, ch, resolution=resolution)

    @property
    def z_dim(self) -> int:
        """Width of a latent: z_0, plus an SDE's increments for 16 frames."""
        return self.temporal.latent_dim(self.n_frames)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z_0 ~ U(-1, 1)^z_dim (and an SDE's dW), on the generator's device; the 1D
        deconvolutions draw 16 frames, a latent ODE/SDE any number."""
        return self.temporal.sample_z(batch_size, generator, n_frames)

    def memory_condition(self, z: torch.Tensor) -> None:
        """TGAN takes no memory key (the model contract's MCGN hook)."""
        return None

    def video(self, z: torch.Tensor, n_frames: Optional[int] = None) -> torch.Tensor:
        """(B, z_dim) -> (B, 3, 16, H, W). Every frame of the batch in one image-generator
        call, so its BatchNorm normalises over B * 16 frames, as the official code's does."""
        z0 = z[:, :self.noise_dim]
        z1 = self.temporal(z, n_frames)  # (B, z_dim, T)
        b, t = z1.shape[0], z1.shape[2]
        z_fast = z1.transpose(1, 2).reshape(b * t, -1)
        z_slow = z0[:, None, :].expand(b, t, z0.shape[1]).reshape(b * t, -1)
        frames = self.image(z_slow, z_fast)  # (B*T, 3, H, W)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                n_frames: Optional[int] = None, render_level: Optional[int] = None):
        if y is not None:
            raise ValueError("TGAN is unconditional: pass no labels")
        if render_level not in (None, 1):
            raise ValueError(f"render_level={render_level}: TGAN renders one level (1)")
        video = self.video(z, n_frames)
        return [video] if self.training else video


class TGANDiscriminator(nn.Module):
    """Four stride-2 3D convolutions (leaky ReLU; BN without beta after the second to
    fourth), then a 2D convolution over the last 4x4 map: one score per clip (TGAN Table 1,
    official VideoDiscriminatorNoBetaInitDefault). The official code also builds a ``bn0``
    that its forward never uses; it is left out here (11,032,385 parameters in use)."""

    def __init__(self, ch: int = 64, resolution: int = 64, init: str = "official"):
        super().__init__()
        top = resolution // 16  # four stride-2 convolutions; official: 4x4 at 64 px
        self.convs = dcgan_video_convs(ch)
        self.norms = nn.ModuleList(BatchNormNoBeta(w, dims=3) for w in (2 * ch, 4 * ch, 8 * ch))
        self.score = nn.Conv2d(8 * ch, 1, top, 1, 0)  # official c4
        for layer in (*self.convs, self.score):
            chainer_default_init_(layer, init)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> scores (B * T / 16,): one per clip at 16 frames."""
        h = run_dcgan_video_convs(self.convs, self.norms, video, LEAKY_SLOPE)
        # (B, C, T', 4, 4) -> (B * T', C, 4, 4) as the official code reshapes it, without
        # moving time next to the batch: the same thing at T' = 1 (16 frames), the only case
        # it trains.
        b, c, t = h.shape[:3]
        return self.score(h.reshape(b * t, c, *h.shape[3:])).flatten()

