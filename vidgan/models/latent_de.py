"""Latent neural differential equations as temporal dynamics (Gordon & Parde 2021, §3).

The frame latents are the solution of an ODE or SDE at the frame times, in place of a
recurrence (TGAN's 1D deconvolutions, MoCoGAN's GRU, TGANv2's ConvLSTM):

- ODE of order n (§3.1): y^(n) = f(y^(n-1)), solved as the first-order system of the state
  (y^(n-1), ..., y', y), each variable's rate the one above it; the frames are y(t_k).
- SDE (§3.2): dz = mu(z) dt + sigma(z) dW (Itô, diagonal noise), solved by Euler-Maruyama.

Frame k sits at t_k = k * span / (T - 1) for the training length T: linspace(0, 1, T) as
the authors' scripts, frame 0 the initial state. A longer clip extends the same grid past
t = 1 (§3.3: the solution exists for any t). torchdiffeq and torchsde do the solving.

The SDE's Brownian path is not drawn by torchsde: its increments dW on the solver's step
grid are part of the generator's latent (``noise_dim``, ``sample_noise``), so one latent
always gives one clip, the run's seeded generator draws them, and a resumed run replays
them bitwise.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torchdiffeq
import torchsde
from torch import nn
from torchsde import BaseBrownian

ORDERS = (1, 2, 3)
ACTIVATIONS = {"tanh": nn.Tanh, "leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}


def frame_times(n_frames: int, train_frames: int, span: float = 1.0,
                like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """t_k = k * span / (T - 1), k < n_frames: linspace(0, span, T) for n = T, the same
    spacing past t = span for n > T (§3.3)."""
    step = span / max(train_frames - 1, 1)
    kwargs = {} if like is None else {"device": like.device, "dtype": like.dtype}
    return torch.arange(n_frames, **kwargs) * step


def _init_(layer: nn.Module, init: str) -> nn.Module:
    """"xavier": Glorot uniform with gain sqrt(2), default bias (the authors' TGAN, TGANv2
    f and FCN); "default": PyTorch's default init (the authors' MoCoGAN)."""
    if init == "xavier":
        nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(2.0))
    elif init != "default":
        raise ValueError(f"model.de.init='{init}': allowed values are xavier, default")
    return layer


def _layer(dim_in: int, dim_out: int, conv: bool, kernel: int = 3) -> nn.Module:
    if conv:
        return nn.Conv2d(dim_in, dim_out, kernel, padding=kernel // 2)
    return nn.Linear(dim_in, dim_out)


def vector_field(dim: int, hidden: int, activation: str, conv: bool, init: str) -> nn.Sequential:
    """f: one layer and its nonlinearity (hidden = 0, the authors' single layer), or two
    through ``hidden`` units: Linear-act-Linear on vectors (their ODEFuncDeep, §4.1's g o h),
    conv-act-conv-act on maps (their TGANv2 ode_gen). Convolutions are 3x3, padding 1."""
    act = ACTIVATIONS[activation]
    if hidden <= 0:
        return nn.Sequential(_init_(_layer(dim, dim, conv), init), act())
    layers = [_init_(_layer(dim, hidden, conv), init), act(), _init_(_layer(hidden, dim, conv), init)]
    return nn.Sequential(*layers, act()) if conv else nn.Sequential(*layers)


def prepended_fcn(dim: int, widths: Sequence[int], init: str) -> nn.Module:
    """§5.1's FCN before the integration: Linear + LeakyReLU(0.2) through ``widths`` and
    back to ``dim`` (TGAN: 100-512-512-512-100, MoCoGAN: 16-64-16); identity when empty."""
    if not widths:
        return nn.Identity()
    sizes = [dim, *widths, dim]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [_init_(nn.Linear(a, b), init), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class HigherOrderField(nn.Module):
    """The first-order system of y^(n) = f(y^(n-1)): state (y^(n-1), ..., y', y), the
    highest derivative first; d/dt of each lower variable is the one above it."""

    def __init__(self, f: nn.Module, state_shape: Tuple[int, ...]):
        super().__init__()
        self.f, self.state_shape = f, state_shape

    def rate(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return self.f(x.view(b, *self.state_shape)).view_as(x)

    def forward(self, t, x):
        if isinstance(x, tuple):
            return (self.rate(x[0]),) + x[:-1]
        return self.rate(x)


class DiagonalSDE(nn.Module):
    """dz = mu(z) dt + sigma(z) dW, Itô, one Brownian channel per state entry (torchsde's
    diagonal noise); the state is flattened to (B, d) as torchsde asks."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, state_shape: Tuple[int, ...]):
        super().__init__()
        self.drift, self.diffusion, self.state_shape = drift, diffusion, state_shape

    def _through(self, net, y):  # (B, d) -> (B, d) through a net on the state
        return net(y.view(y.shape[0], *self.state_shape)).view_as(y)

    def f(self, t, y):
        return self._through(self.drift, y)

    def g(self, t, y):
        return self._through(self.diffusion, y)


class GridBrownian(BaseBrownian):
    """A Brownian path W(t) given by its increments on the grid t_j = j * dt: W is their
    cumulative sum at grid points and linear between them. The solver steps on the grid,
    so every step it takes sees one whole increment; only a last partial step (a clip whose
    end falls between grid points) reads an interpolated one."""

    def __init__(self, increments: torch.Tensor, dt: float):
        # increments: (B, K, d), dW_j ~ N(0, dt I)
        self._dt = dt
        b, _, d = increments.shape
        self._path = torch.cat([increments.new_zeros(b, 1, d), increments.cumsum(1)], dim=1)

    def _at(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self._path.dtype, device=self._path.device)
        last = self._path.shape[1] - 1
        pos = (t / self._dt).clamp(0, last)
        j = pos.floor().clamp(max=max(last - 1, 0)).long()
        frac = (pos - j).to(self._path.dtype)
        w0 = self._path.index_select(1, j.view(1)).squeeze(1)
        if last == 0:
            return w0
        w1 = self._path.index_select(1, (j + 1).view(1)).squeeze(1)
        return w0 + frac * (w1 - w0)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            return self._at(ta)
        return self._at(tb) - self._at(ta)

    def __repr__(self):
        return f"GridBrownian(dt={self._dt}, steps={self._path.shape[1] - 1})"

    @property
    def dtype(self):
        return self._path.dtype

    @property
    def device(self):
        return self._path.device

    @property
    def shape(self):
        return (self._path.shape[0], self._path.shape[2])

    @property
    def levy_area_approximation(self):
        return "none"


class LatentDE(nn.Module):
    """Frame latents y(t_0..t_{n-1}) from an initial value, by an ODE of order 1-3 or an SDE.

    ``state_shape``: (d,) for a vector latent (TGAN's z_1, MoCoGAN's motion code), (C, h, w)
    for TGANv2's first feature map (f then convolves). ``forward(h, n_frames, noise)`` takes
    the initial value h (B, *state_shape), through the prepended FCN for vectors; an order-n
    ODE starts each of its n variables at its own linear map of h (the authors' dsdt
    encoders; 1x1 convolutions on maps); an SDE reads its Brownian increments from ``noise``.
    """

    def __init__(self, kind: str, state_shape: Tuple[int, ...], train_frames: int,
                 order: int = 1, hidden: int = 0, activation: str = "tanh",
                 init: str = "xavier", fcn: Sequence[int] = (), method: str = "rk4",
                 step_size: float = 0.0, sde_dt: float = 0.025, adjoint: bool = False,
                 span: float = 1.0):
        super().__init__()
        if kind not in ("ode", "sde"):
            raise ValueError(f"model.latent_de='{kind}': allowed values are none, ode, sde")
        if order not in ORDERS or (kind == "sde" and order != 1):
            raise ValueError(f"model.de.order={order}: the ODE takes 1, 2 or 3, the SDE 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.de.activation='{activation}': allowed values are "
                             f"{', '.join(ACTIVATIONS)}")
        self.kind, self.state_shape, self.train_frames = kind, tuple(state_shape), train_frames
        self.order, self.method, self.step_size = order, method, step_size
        self.sde_dt, self.adjoint, self.span = sde_dt, adjoint, span
        conv = len(self.state_shape) == 3
        dim = self.state_shape[0]
        if conv and fcn:
            raise ValueError("model.de.fcn: a feature-map state (TGANv2) takes no FCN; its FC "
                             "already maps z to the initial state")
        self.fcn = prepended_fcn(dim, fcn, init)
        self.encoders = nn.ModuleList(
            _init_(nn.Conv2d(dim, dim, 1) if conv else nn.Linear(dim, dim), init)
            for _ in range(order if order > 1 else 0))
        if kind == "ode":
            self.field = HigherOrderField(vector_field(dim, hidden, activation, conv, init),
                                          self.state_shape)
        else:
            self.field = DiagonalSDE(vector_field(dim, hidden, activation, conv, init),
                                     vector_field(dim, hidden, activation, conv, init),
                                     self.state_shape)

    @property
    def state_size(self) -> int:
        return math.prod(self.state_shape)

    def sde_steps(self, n_frames: int) -> int:
        """Euler-Maruyama steps of size sde_dt that reach the last frame time."""
        end = float(frame_times(n_frames, self.train_frames, self.span)[-1])
        return max(math.ceil(end / self.sde_dt - 1e-6), 0)

    def noise_dim(self, n_frames: int) -> int:
        """Width of the noise an n-frame clip takes from the latent: dW per SDE step, 0 for
        an ODE."""
        return self.sde_steps(n_frames) * self.state_size if self.kind == "sde" else 0

    def frames_held(self, noise_width: int) -> int:
        """The longest clip whose Brownian increments fit in ``noise_width`` columns."""
        steps = noise_width // self.state_size
        n = self.train_frames
        while self.sde_steps(n + 1) <= steps:
            n += 1
        while n > 1 and self.sde_steps(n) > steps:
            n -= 1
        return n

    def sample_noise(self, batch_size: int, n_frames: int,
                     generator: Optional[torch.Generator], device) -> torch.Tensor:
        """dW_j ~ N(0, dt I) for every step, drawn one step at a time, so a longer draw
        begins with exactly the shorter one."""
        steps = self.sde_steps(n_frames) if self.kind == "sde" else 0
        scale = math.sqrt(self.sde_dt)
        parts = [torch.randn(batch_size, self.state_size, generator=generator, device=device)
                 * scale for _ in range(steps)]
        return torch.cat(parts, dim=1) if parts else torch.zeros(batch_size, 0, device=device)

    def initial(self, h: torch.Tensor):
        """The initial value(s): FCN(h); for order n, (E_1 h', ..., E_n h'), the highest
        derivative first and y(0) last, as the authors order their state tuple."""
        h = self.fcn(h)
        if not self.encoders:
            return h
        return tuple(encoder(h) for encoder in self.encoders)

    def forward(self, h: torch.Tensor, n_frames: int,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, *state_shape) -> (B, n_frames, *state_shape)."""
        y0 = self.initial(h)
        times = frame_times(n_frames, self.train_frames, self.span,
                            like=h if h.is_floating_point() else None)
        if self.kind == "ode":
            return self._solve_ode(y0, times)
        return self._solve_sde(y0, times, noise)

    def _solve_ode(self, y0, times: torch.Tensor) -> torch.Tensor:
        options = {"step_size": self.step_size} if self.step_size > 0 else None
        solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        ys = solve(self.field, y0, times, method=self.method, options=options)
        y = ys[-1] if isinstance(ys, tuple) else ys  # the lowest-order variable: y itself
        return y.transpose(0, 1)  # (T, B, ...) -> (B, T, ...)

    def _solve_sde(self, y0: torch.Tensor, times: torch.Tensor,
                   noise: Optional[torch.Tensor]) -> torch.Tensor:
        b, d = y0.shape[0], self.state_size
        steps = self.sde_steps(times.numel())
        if noise is None or noise.shape[1] < steps * d:
            have = 0 if noise is None else noise.shape[1] // d
            raise ValueError(f"the SDE needs Brownian increments for {steps} steps, the latent "
                             f"holds {have}; draw it with G.sample_z(batch, n_frames=...)")
        bm = GridBrownian(noise[:, :steps * d].reshape(b, steps, d).to(y0.dtype), self.sde_dt)
        solve = torchsde.sdeint_adjoint if self.adjoint else torchsde.sdeint
        kwargs = {"adjoint_method": "euler"} if self.adjoint else {}
        ys = solve(self.field, y0.reshape(b, d), times, bm=bm, method="euler", dt=self.sde_dt,
                   **kwargs)
        return ys.transpose(0, 1).reshape(b, times.numel(), *self.state_shape)


def build_latent_de(kind: str, de, state_shape: Tuple[int, ...], train_frames: int) -> LatentDE:
    """The LatentDE of model.latent_de = ``kind`` with the options of ``de`` (a DEConfig)."""
    return LatentDE(kind, state_shape, train_frames, order=de.order, hidden=de.hidden,
                    activation=de.activation, init=de.init, fcn=list(de.fcn), method=de.method,
                    step_size=de.step_size, sde_dt=de.sde_dt, adjoint=de.adjoint)
