"""Temporal generators g_0: noise -> T latent maps (B, C, T, h0, w0) (tgan2 §4.1, Fig. 2)."""

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """ConvLSTM without peepholes: gates = conv(x) (with bias) + conv(h) (no bias)."""

    def __init__(self, in_ch: int, hidden_ch: int, kernel: int = 3):
        super().__init__()
        self.hidden_ch = hidden_ch
        self.w_x = nn.Conv2d(in_ch, 4 * hidden_ch, kernel, padding=kernel // 2)
        self.w_h = nn.Conv2d(hidden_ch, 4 * hidden_ch, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state: tuple) -> tuple:
        h, c = state
        i, f, o, g = (self.w_x(x) + self.w_h(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMTemporalGenerator(nn.Module):
    """TGANv2's temporal generator: FC(z) initialises a stack of ConvLSTMs.

    tgan2 §4.1: the input at t = 0 is FC(z) reshaped to (C, h0, w0); at t >= 1 it is a zero
    map, so z only sets the initial state and the ConvLSTM can roll on for any number of frames.
    """

    def __init__(self, in_dim: int, channels: int, map_size: int, n_layers: int = 1):
        super().__init__()
        self.channels, self.map_size = channels, map_size
        self.fc = nn.Linear(in_dim, channels * map_size * map_size)
        self.cells = nn.ModuleList(ConvLSTMCell(channels, channels) for _ in range(n_layers))

    def forward(self, z: torch.Tensor, n_frames: int) -> torch.Tensor:
        # z: (B, in_dim) -> (B, C, T, h0, w0)
        b = z.shape[0]
        x0 = self.fc(z).view(b, self.channels, self.map_size, self.map_size)
        zero = torch.zeros_like(x0)
        states = [(zero, zero) for _ in self.cells]
        maps = []
        for t in range(n_frames):
            # The zero input at t >= 1 is still convolved (its output is the bias): this is
            # the computation whose cost tgan2 Table 1 reports, kept for fidelity.
            h = x0 if t == 0 else zero
            for k, cell in enumerate(self.cells):
                states[k] = cell(h, states[k])
                h = states[k][0]
            maps.append(h)
        return torch.stack(maps, dim=2)
