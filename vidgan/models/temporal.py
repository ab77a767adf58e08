"""Temporal generators g_0: noise -> T latent maps (B, C, T, h0, w0) (tgan2 §4.1, Fig. 2).

Both produce the same first feature map, so the image generator, the subsampling layers and
the discriminators are shared unchanged. Each owns its latent: ``sample_z`` draws its noise,
``with_condition`` inserts a memory key K_c (memoryGAN's MCGN, ``cond_dim`` > 0) and
``forward(z, n_frames, label)`` maps it to maps; ``label`` is a one-hot (B, n_classes) or None.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.models.init import init_layer_


def _draw_device(module: nn.Module, generator: Optional[torch.Generator]) -> torch.device:
    """Draw on the generator's device (a CPU generator: CPU and GPU runs see the same z)."""
    return generator.device if generator is not None else module.fc.weight.device


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


class ConvLSTMTemporalGenerator(nn.Module):
    """TGANv2's temporal generator: FC(z) initialises a stack of ConvLSTMs.

    tgan2 §4.1: z ~ U[-1, 1]^z_dim; the memory key K_c (MCGN) and the one-hot label (§4.6)
    are concatenated to z before the FC: latent [z | K_c]. The input at t = 0 is FC(latent)
    reshaped to (C, h0, w0); at t >= 1 it is a zero map, so the latent only sets the initial
    state and the ConvLSTM can roll on for any number of frames.

    ``condition_every_step`` (model.memory.condition=every): the input at t >= 1 is W_c K_c
    instead, the FC's K_c columns without bias: the memory key then reaches every frame, not
    only through the state (it fades in a few steps), with no new parameter.
    """

    def __init__(self, z_dim: int, n_classes: int, channels: int, map_size: int,
                 n_layers: int = 1, cond_dim: int = 0, init: str = "official",
                 condition_every_step: bool = False):
        super().__init__()
        self.noise_dim, self.cond_dim = z_dim, cond_dim
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
        """Width of a latent, memory key included."""
        return self.noise_dim + self.cond_dim

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None) -> torch.Tensor:
        """z ~ U[-1, 1]^z_dim (tgan2 §4.1), without K_c; one z drives any number of frames."""
        z = torch.rand(batch_size, self.noise_dim, generator=generator,
                       device=_draw_device(self, generator)) * 2 - 1
        return z.to(self.fc.weight.device)

    def with_condition(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noise z (B, z_dim) and memory keys (B, M) -> the latent [z | K_c]."""
        return torch.cat([z, cond], dim=1)

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The memory keys K_c (B, M) held in latent ``z``."""
        return z[:, self.noise_dim:]

    def forward(self, z: torch.Tensor, n_frames: int,
                label: Optional[torch.Tensor] = None) -> torch.Tensor:
        # z: (B, z_dim) -> (B, C, T, h0, w0)
        b = z.shape[0]
        if label is not None:
            z = torch.cat([z, label], dim=1)
        x0 = self.fc(z).view(b, self.channels, self.map_size, self.map_size)
        zero = torch.zeros_like(x0)
        states = [(zero, zero) for _ in self.cells]
        later = zero
        if self.condition_every_step:
            cols = slice(self.noise_dim, self.noise_dim + self.cond_dim)
            later = F.linear(z[:, cols], self.fc.weight[:, cols]).view_as(x0)
        maps = []
        for t in range(n_frames):
            # The zero input at t >= 1 is still convolved (its output is the bias): this is
            # the computation whose cost tgan2 Table 1 reports, kept for fidelity.
            h = x0 if t == 0 else later
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
    """

    def __init__(self, content_dim: int, motion_dim: int, n_classes: int, channels: int,
                 map_size: int, n_frames: int, cond_dim: int = 0):
        super().__init__()
        self.content_dim, self.motion_dim, self.cond_dim = content_dim, motion_dim, cond_dim
        self.channels, self.map_size, self.n_frames = channels, map_size, n_frames
        self.gru = nn.GRUCell(motion_dim, motion_dim)
        self.fc = nn.Linear(content_dim + cond_dim + n_classes + motion_dim,
                            channels * map_size * map_size)

    @property
    def z_dim(self) -> int:
        """Width of a latent for the training length T."""
        return self.latent_dim(self.n_frames)

    def latent_dim(self, n_frames: int) -> int:
        return self._content_width + self.motion_dim * (1 + n_frames)

    @property
    def _content_width(self) -> int:
        return self.content_dim + self.cond_dim

    def frames_held(self, z: torch.Tensor) -> int:
        """How many frames of motion noise latent ``z`` holds."""
        return (z.shape[1] - self._content_width - self.motion_dim) // self.motion_dim

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
        parts += [torch.randn(batch_size, self.motion_dim, generator=generator, device=device)
                  for _ in range(1 + n)]  # h_0, eps_1, ..., eps_N
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
        """[h_0 | eps_1..] -> h_1..h_T (B, T, dM), h_t = GRUCell(eps_t, h_{t-1})."""
        h = motion[:, :self.motion_dim]
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
        if held < n_frames or z.shape[1] != self.latent_dim(held):
            raise ValueError(f"MoCoGAN latent of width {z.shape[1]} holds motion noise for "
                             f"{held} frames, {n_frames} asked; draw it with "
                             f"G.sample_z(batch, n_frames={n_frames})")
        content, motion = self.split(z)
        codes = self.motion_codes(motion, n_frames)  # (B, T, dM)
        b, t = codes.shape[:2]
        per_video = content if label is None else torch.cat([content, label], dim=1)
        frame_codes = torch.cat([per_video[:, None].expand(b, t, -1), codes], dim=2)
        maps = self.fc(frame_codes).view(b, t, self.channels, self.map_size, self.map_size)
        return maps.transpose(1, 2)  # (B, C, T, h0, w0)
