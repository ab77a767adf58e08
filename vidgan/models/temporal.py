"""Temporal generators g_0: noise -> T latent maps (B, C, T, h0, w0) (tgan2 §4.1, Fig. 2).

Both produce the same first feature map, so the image generator, the subsampling layers and
the discriminators are shared unchanged. Each owns its latent: ``sample_z`` draws its noise,
``with_condition`` inserts a memory key K_c (memoryGAN's MCGN, ``cond_dim`` > 0) and
``forward(z, n_frames, label)`` maps it to maps; ``label`` is a one-hot (B, n_classes) or None.

A latent may hold per-step noise after its head (the ConvLSTM's step noise, the GRU's eps_t,
an SDE's Brownian increments): it then holds that noise for a number of frames, the same z
always gives the same video, and ``sample_z(n_frames=2T)`` starts with the T-frame latent.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.models.init import init_layer_
from vidgan.models.latent_de import LatentDE


def _draw_device(module: nn.Module, generator: Optional[torch.Generator]) -> torch.device:
    """Draw on the generator's device (a CPU generator: CPU and GPU runs see the same z)."""
    return generator.device if generator is not None else module.fc.weight.device


def uniform_latent(batch_size: int, dim: int, generator: Optional[torch.Generator],
                   device) -> torch.Tensor:
    """z ~ U[-1, 1]^dim (TGANv2 §4.1, TGAN), drawn on ``device``."""
    return torch.rand(batch_size, dim, generator=generator, device=device) * 2 - 1


def check_frames_held(z: torch.Tensor, width: int, held: int, n_frames: int, what: str) -> None:
    """A latent must hold per-step noise for at least ``n_frames`` frames."""
    if held < n_frames:
        raise ValueError(f"{what} latent of width {z.shape[1]} holds noise for {held} frames, "
                         f"{n_frames} asked; draw it with G.sample_z(batch, n_frames={n_frames})")
    if z.shape[1] != width:
        raise ValueError(f"{what} latent of width {z.shape[1]}, expected {width}; draw it "
                         f"with G.sample_z(batch, n_frames={n_frames})")


class KeyAfterNoise:
    """The latent layout [z | K_c | per-step noise]: the memory key (MCGN) sits right after
    the first ``noise_dim`` columns, whatever per-step noise follows."""

    noise_dim: int
    cond_dim: int

    def with_condition(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noise [z | ...] (B, ...) and memory keys (B, M) -> the latent [z | K_c | ...]."""
        return torch.cat([z[:, :self.noise_dim], cond, z[:, self.noise_dim:]], dim=1)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The memory keys K_c (B, M) held in latent ``z``."""
        return z[:, self.noise_dim:self.noise_dim + self.cond_dim]


class ConvLSTMCell(nn.Module):
    """ConvLSTM without peepholes: gates = conv(x) (with bias) + conv(h) (no bias)."""

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3, init: str = "official"):
        super().__init__()
        self.hidden_ch = hidden_ch
        self.w_x = init_layer_(nn.Conv2d(in_ch, 4 * hidden_ch, kernel, padding=kernel // 2), init)
        self.w_h = init_layer_(nn.Conv2d(hidden_ch, 4 * hidden_ch, kernel, padding=kernel // 2,
                                         bias=False), init)

    def forward(self, x: torch.Tensor, state: tuple) -> tuple:
        h, c = state
        i, f, o, g = (self.w_x(x) + self.w_h(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMTemporalGenerator(KeyAfterNoise, nn.Module):
    """TGANv2's temporal generator: FC(z) initialises a stack of ConvLSTMs.

    tgan2 §4.1: z ~ U[-1, 1]^z_dim; the memory key K_c (MCGN) and the one-hot label (§4.6)
    are concatenated to z before the FC: latent [z | K_c]. The input at t = 0 is FC(latent)
    reshaped to (C, h0, w0); at t >= 1 it is a zero map, so the latent only sets the initial
    state and the ConvLSTM can roll on for any number of frames.

    ``condition_every_step`` (model.memory.condition=every): the input at t >= 1 is W_c K_c
    instead, the FC's K_c columns without bias: the memory key then reaches every frame, not
    only through the state (it fades in a few steps), with no new parameter.

    ``step_noise`` (model.step_noise, not in TGANv2): the input at t >= 1 adds W_z z_t, a fresh
    z_t ~ U[-1, 1]^z_dim through the FC's z columns without bias, as z enters at t = 0; the
    latent is then [z | K_c | z_1 .. z_{N-1}], noise for N frames.
    """

    def __init__(self, z_dim: int, n_classes: int, channels: int, map_size: int,
                 n_layers: int = 1, cond_dim: int = 0, init: str = "official",
                 condition_every_step: bool = False, step_noise: bool = False,
                 n_frames: int = 16):
        super().__init__()
        self.noise_dim, self.cond_dim = z_dim, cond_dim
        self.step_noise, self.n_frames = step_noise, n_frames
        self.condition_every_step = condition_every_step and cond_dim > 0
        self.channels, self.map_size = channels, map_size
        # model.init: the official FC and ConvLSTM are LeCun normal with zero biases; the
        # larger recurrent weights keep z in the state longer than PyTorch's default (0.58x)
        self.fc = init_layer_(nn.Linear(z_dim + cond_dim + n_classes,
                                        channels * map_size * map_size), init)
        self.cells = nn.ModuleList(ConvLSTMCell(channels, channels, init=init)
                                   for _ in range(n_layers))

    @property
    def z_dim(self) -> int:
        """Width of a latent for the training length T, memory key included."""
        return self.latent_dim(self.n_frames)

    def latent_dim(self, n_frames: int) -> int:
        steps = n_frames - 1 if self.step_noise else 0
        return self.noise_dim * (1 + steps) + self.cond_dim

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z ~ U[-1, 1]^z_dim (tgan2 §4.1), without K_c; one z drives any number of frames.
        With step noise, then z_1..z_{N-1} for N = ``n_frames`` (default T), one per draw."""
        device = _draw_device(self, generator)
        steps = (n_frames or self.n_frames) - 1 if self.step_noise else 0
        parts = [uniform_latent(batch_size, self.noise_dim, generator, device)
                 for _ in range(1 + steps)]
        return torch.cat(parts, dim=1).to(self.fc.weight.device)

    def forward(self, z: torch.Tensor, n_frames: int,
                label: Optional[torch.Tensor] = None) -> torch.Tensor:
        # z: (B, z_dim [+ z_dim * (N - 1)]) -> (B, C, T, h0, w0)
        b, head = z.shape[0], self.noise_dim + self.cond_dim
        if self.step_noise:
            held = (z.shape[1] - self.cond_dim) // self.noise_dim
            check_frames_held(z, self.latent_dim(held), held, n_frames, "ConvLSTM step-noise")
        steps, z = z[:, head:], z[:, :head]
        if label is not None:
            z = torch.cat([z, label], dim=1)
        x0 = self.fc(z).view(b, self.channels, self.map_size, self.map_size)
        zero = torch.zeros_like(x0)
        states = [(zero, zero) for _ in self.cells]
        later = zero
        if self.condition_every_step:
            cols = slice(self.noise_dim, self.noise_dim + self.cond_dim)
            later = F.linear(z[:, cols], self.fc.weight[:, cols]).view_as(x0)
        inputs = None
        if self.step_noise and n_frames > 1:  # W_z z_t for t = 1..T-1, one matmul
            z_t = steps[:, :self.noise_dim * (n_frames - 1)].view(b, n_frames - 1, -1)
            inputs = F.linear(z_t, self.fc.weight[:, :self.noise_dim]).view(
                b, n_frames - 1, *x0.shape[1:]) + later.unsqueeze(1)
        maps = []
        for t in range(n_frames):
            # The zero input at t >= 1 is still convolved (its output is the bias): this is
            # the computation whose cost tgan2 Table 1 reports, kept for fidelity.
            h = x0 if t == 0 else (later if inputs is None else inputs[:, t - 1])
            for k, cell in enumerate(self.cells):
                states[k] = cell(h, states[k])
                h = states[k][0]
            maps.append(h)
        return torch.stack(maps, dim=2)


class MoCoGANTemporalGenerator(nn.Module):
    """MoCoGAN's content + motion latent (mocogan §3, Eq. 3-4), as its official code has it.

    Content z_C ~ N(0, I_dC) is drawn once per video; motion h_t = GRUCell(eps_t, h_{t-1})
    with h_0 and every eps_t ~ N(0, I_dM), and the motion codes are h_1..h_T (h_0 only starts
    the recurrence). Per frame, [z_C, one-hot label, h_t] -> FC -> (C, h0, w0): the label goes
    to the frame code, not into the GRU, as in the official VideoGenerator.

    The latent is one tensor z = [z_C | h_0 | eps_1 .. eps_N], (B, dC + dM * (1 + N)): it holds
    the motion noise of N frames, so the same z always gives the same video, a rollout may be
    as long as the noise it holds, and ``sample_z(n_frames=2T)`` starts with the T-frame z.
    A memory key K_c (MCGN) joins the content: [z_C | K_c | h_0 | eps_1 .. eps_N].

    ``dynamics`` (model.latent_de; Gordon & Parde's MoCoGAN-ODE/SDE): a LatentDE on the motion
    code replaces the GRU: z_m ~ N(0, I_dM) is its initial value and the motion codes are its
    solution at the frame times; the latent is [z_C | K_c | z_m], plus an SDE's increments.
    """

    def __init__(self, content_dim: int, motion_dim: int, n_classes: int, channels: int,
                 map_size: int, n_frames: int, cond_dim: int = 0,
                 dynamics: Optional[LatentDE] = None):
        super().__init__()
        self.content_dim, self.motion_dim, self.cond_dim = content_dim, motion_dim, cond_dim
        self.channels, self.map_size, self.n_frames = channels, map_size, n_frames
        if dynamics is None:
            self.gru = nn.GRUCell(motion_dim, motion_dim)
        else:
            self.dynamics = dynamics
        self.fc = nn.Linear(content_dim + cond_dim + n_classes + motion_dim,
                            channels * map_size * map_size)

    @property
    def z_dim(self) -> int:
        """Width of a latent for the training length T."""
        return self.latent_dim(self.n_frames)

    def latent_dim(self, n_frames: int) -> int:
        if hasattr(self, "dynamics"):
            return self._content_width + self.motion_dim + self.dynamics.noise_dim(n_frames)
        return self._content_width + self.motion_dim * (1 + n_frames)

    @property
    def _content_width(self) -> int:
        return self.content_dim + self.cond_dim

    def frames_held(self, z: torch.Tensor) -> int:
        """How many frames of motion noise latent ``z`` holds (an ODE: any number)."""
        width = z.shape[1] - self._content_width - self.motion_dim
        if hasattr(self, "dynamics"):
            return self.dynamics.frames_held(width) if self.dynamics.kind == "sde" else 2 ** 31
        return width // self.motion_dim

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """[z_C | h_0 | eps_1..eps_N] ~ N(0, I), N = ``n_frames`` (default: the training T),
        without K_c.

        eps is drawn one frame at a time: a longer draw then begins with exactly the shorter
        one (one big randn may not, as torch fills normals in blocks).
        """
        n = n_frames or self.n_frames
        device = _draw_device(self, generator)
        parts = [torch.randn(batch_size, self.content_dim, generator=generator, device=device)]
        if hasattr(self, "dynamics"):  # z_m, then an SDE's dW per step
            parts += [torch.randn(batch_size, self.motion_dim, generator=generator,
                                  device=device),
                      self.dynamics.sample_noise(batch_size, n, generator, device)]
        else:
            parts += [torch.randn(batch_size, self.motion_dim, generator=generator,
                                  device=device) for _ in range(1 + n)]  # h_0, eps_1..eps_N
        return torch.cat(parts, dim=1).to(self.fc.weight.device)

    def with_condition(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noise [z_C | h_0 | eps..] and memory keys (B, M) -> [z_C | K_c | h_0 | eps..]."""
        return torch.cat([z[:, :self.content_dim], cond, z[:, self.content_dim:]], dim=1)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The memory keys K_c (B, M) held in latent ``z``."""
        return z[:, self.content_dim:self._content_width]

    def split(self, z: torch.Tensor):
        """z -> (content (B, dC [+ M]), motion (B, dM * (1 + N))): the content is z_C (and
        K_c), h_0 and eps are the motion."""
        return z[:, :self._content_width], z[:, self._content_width:]

    def motion_codes(self, motion: torch.Tensor, n_frames: int) -> torch.Tensor:
        """[h_0 | eps_1..] -> h_1..h_T (B, T, dM), h_t = GRUCell(eps_t, h_{t-1}); with a
        latent DE, [z_m | dW..] -> z_m(t_0..t_{T-1})."""
        h = motion[:, :self.motion_dim]
        if hasattr(self, "dynamics"):
            return self.dynamics(h, n_frames, motion[:, self.motion_dim:])
        eps = motion[:, self.motion_dim:].unflatten(1, (-1, self.motion_dim))
        codes = []
        for t in range(n_frames):  # the recurrence is sequential in t
            h = self.gru(eps[:, t], h)
            codes.append(h)
        return torch.stack(codes, dim=1)

    def forward(self, z: torch.Tensor, n_frames: int,
                label: Optional[torch.Tensor] = None) -> torch.Tensor:
        # z: (B, dC + dM * (1 + N)), N >= n_frames -> (B, C, T, h0, w0)
        held = self.frames_held(z)
        # an ODE's latent is [z_C | z_m] for any length: its width is that of n_frames
        width = self.latent_dim(n_frames if held == 2 ** 31 else held)
        check_frames_held(z, width, held, n_frames, "MoCoGAN")
        content, motion = self.split(z)
        codes = self.motion_codes(motion, n_frames)  # (B, T, dM)
        b, t = codes.shape[:2]
        per_video = content if label is None else torch.cat([content, label], dim=1)
        frame_codes = torch.cat([per_video[:, None].expand(b, t, -1), codes], dim=2)
        maps = self.fc(frame_codes).view(b, t, self.channels, self.map_size, self.map_size)
        return maps.transpose(1, 2)  # (B, C, T, h0, w0)


class LatentDETemporalGenerator(KeyAfterNoise, nn.Module):
    """TGANv2's temporal generator with the ConvLSTM replaced by a latent ODE or SDE on the
    first feature map (Gordon & Parde's TGANv2-ODE, their ode_gen): FC([z | K_c | label]),
    z ~ U[-1, 1]^z_dim, is the initial map x(0); the frames are x(t_k), f convolutional.
    The latent is [z | K_c], plus an SDE's Brownian increments for N frames."""

    def __init__(self, z_dim: int, n_classes: int, channels: int, map_size: int,
                 dynamics: LatentDE, n_frames: int, cond_dim: int = 0, init: str = "official"):
        super().__init__()
        self.noise_dim, self.cond_dim, self.n_frames = z_dim, cond_dim, n_frames
        self.channels, self.map_size = channels, map_size
        # the same FC, at the same init, as the ConvLSTM's: only the recurrence changes
        self.fc = init_layer_(nn.Linear(z_dim + cond_dim + n_classes,
                                        channels * map_size * map_size), init)
        self.dynamics = dynamics

    @property
    def z_dim(self) -> int:
        return self.latent_dim(self.n_frames)

    def latent_dim(self, n_frames: int) -> int:
        return self.noise_dim + self.cond_dim + self.dynamics.noise_dim(n_frames)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z ~ U[-1, 1]^z_dim, then an SDE's dW for ``n_frames`` (default T); without K_c."""
        device = _draw_device(self, generator)
        z = uniform_latent(batch_size, self.noise_dim, generator, device)
        noise = self.dynamics.sample_noise(batch_size, n_frames or self.n_frames, generator,
                                           device)
        return torch.cat([z, noise], dim=1).to(self.fc.weight.device)

    def forward(self, z: torch.Tensor, n_frames: int,
                label: Optional[torch.Tensor] = None) -> torch.Tensor:
        head = self.noise_dim + self.cond_dim
        if self.dynamics.kind == "sde":
            held = self.dynamics.frames_held(z.shape[1] - head)
            check_frames_held(z, self.latent_dim(held), held, n_frames, "SDE")
        latent = z[:, :head] if label is None else torch.cat([z[:, :head], label], dim=1)
        b = z.shape[0]
        x0 = self.fc(latent).view(b, self.channels, self.map_size, self.map_size)
        maps = self.dynamics(x0, n_frames, z[:, head:])  # (B, T, C, h0, w0)
        return maps.transpose(1, 2)


class TGANFrameCodeTemporalGenerator(nn.Module):
    """TGAN's temporal generator in TGANv2's pipeline (not in either paper): z_0 ~ U[-1, 1]^
    z_dim, z_1 = G_0(z_0) (TGAN's 1D deconvolutions, 16 frames, or with model.latent_de the
    ODE/SDE on z_1), and each frame's code [z_0 | z_1^t | label] through one FC to the first
    map, as TGAN's image generator takes (z_0, z_1^t) and MoCoGAN's FC its frame code."""

    def __init__(self, z_dim: int, n_classes: int, channels: int, map_size: int,
                 frame_latents: nn.Module, n_frames: int, init: str = "official"):
        super().__init__()
        self.noise_dim, self.cond_dim, self.n_frames = z_dim, 0, n_frames
        self.channels, self.map_size = channels, map_size
        self.frame_latents = frame_latents  # TGANTemporalGenerator or TGANLatentDE
        self.fc = init_layer_(nn.Linear(2 * z_dim + n_classes, channels * map_size * map_size),
                              init)

    @property
    def z_dim(self) -> int:
        return self.frame_latents.latent_dim(self.n_frames)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        return self.frame_latents.sample_z(batch_size, generator, n_frames or self.n_frames)

    def forward(self, z: torch.Tensor, n_frames: int,
                label: Optional[torch.Tensor] = None) -> torch.Tensor:
        z0 = z[:, :self.noise_dim]
        z1 = self.frame_latents(z, n_frames).transpose(1, 2)  # (B, T, z_dim)
        b, t = z1.shape[:2]
        per_video = z0 if label is None else torch.cat([z0, label], dim=1)
        codes = torch.cat([per_video[:, None].expand(b, t, -1), z1], dim=2)
        maps = self.fc(codes).view(b, t, self.channels, self.map_size, self.map_size)
        return maps.transpose(1, 2)
