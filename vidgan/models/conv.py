"""The discriminator's convolutions, with derivatives of every order that are again plain
convolutions (R1's double backward, tgan2 Eq. 10).

R1 differentiates the discriminator's input gradient once more. Through ``F.conv3d`` that
second derivative is ``aten::_convolution_double_backward``, which on the GPU runs a generic
implicit-GEMM kernel (70% of a bf16 TGANv2 step). Here a stride-1, "same"-padded convolution is
an autograd Function whose backward is written with the same two operations that make it up:

- the data gradient of y = conv(x, w) is conv(g, w~), w~ = w with in/out swapped and every
  spatial axis flipped (for odd kernels padded k // 2 both convolutions are "same"-padded);
- the weight gradient is ``aten::convolution_backward`` (weight only), whose own derivatives
  are conv(x, gg) (in the output gradient) and conv(g, gg~) (in x), as the weight gradient is
  bilinear in (g, x): <gg, dW(g, x)> = <g, conv(x, gg)>.

So the first, second and third derivatives all run the forward, data-gradient and
weight-gradient kernels of cuDNN (the idea of stylegan2-ada-pytorch's conv2d_gradfix, written
here for any number of dimensions). On top of that, a 3D convolution whose input has one frame
(levels 3-4 of TGANv2 with s_t = 4 see T = 1) is run as a 2D convolution with the centre
temporal slice of its kernel: the zero padding makes the other slices contribute nothing,
so this is exact, incl. the zero gradient of those slices.

Exact against ``F.conv3d`` (values and derivatives to the third order, float64:
tests/test_conv.py). ``FastConv3d`` is an ``nn.Conv3d``: same parameters, same state-dict keys.
By default the fast path runs on GPUs only (see ``_enabled``).
"""
import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F

_CONV_ND = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
# None: the fast path on GPUs only. On this project's CPU (oneDNN) it measured 3% slower for
# ucf101_st4 and 16% for st2 (docs/BENCHMARKS.md), while the slow generic kernel it avoids is
# a GPU one.
_enabled: Optional[bool] = None


@contextlib.contextmanager
def fast_convolutions(enabled: Optional[bool]) -> Iterator[None]:
    """``FastConv3d``'s path: True = fast, False = plain ``nn.Conv3d``, None = fast on GPUs
    only (the default). For benchmarks and tests."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before


def _same_padding(kernel: Sequence[int]) -> list:
    return [k // 2 for k in kernel]


def flip_transpose(w: torch.Tensor) -> torch.Tensor:
    """(O, I, k...) -> (I, O, k...) flipped along every kernel axis: the weight of the data
    gradient of a stride-1 same-padded convolution."""
    return w.transpose(0, 1).flip(dims=tuple(range(2, w.dim())))


class _SameConv(Function):
    """y = conv(x, w), stride 1, padding k // 2 (odd kernels), no bias."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return _CONV_ND[w.dim() - 2](x, w, padding=_same_padding(w.shape[2:]))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        gx = _SameConv.apply(g, flip_transpose(w)) if ctx.needs_input_grad[0] else None
        gw = _WeightGrad.apply(g, x, tuple(w.shape)) if ctx.needs_input_grad[1] else None
        return gx, gw


class _WeightGrad(Function):
    """dW(g, x): the gradient of <g, conv(x, w)> in w, as cuDNN's weight-gradient kernel."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, x: torch.Tensor, w_shape: tuple) -> torch.Tensor:
        ctx.save_for_backward(g, x)
        dims = len(w_shape) - 2
        # convolution_backward reads only the weight's shape: a broadcast scalar stands in
        w = torch.zeros((), dtype=x.dtype, device=x.device).expand(w_shape)
        return torch.ops.aten.convolution_backward(
            g, x, w, None, [1] * dims, _same_padding(w_shape[2:]), [1] * dims, False,
            [0] * dims, 1, [False, True, False])[1]

    @staticmethod
    def backward(ctx, gg: torch.Tensor):
        g, x = ctx.saved_tensors
        # <gg, dW(g, x)> = <g, conv(x, gg)>: its gradient in g is conv(x, gg), in x the data
        # gradient of conv(., gg) at g.
        dg = _SameConv.apply(x, gg) if ctx.needs_input_grad[0] else None
        dx = _SameConv.apply(g, flip_transpose(gg)) if ctx.needs_input_grad[1] else None
        return dg, dx, None


def same_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor = None) -> torch.Tensor:
    """``F.convNd(x, w, bias, padding=k // 2)`` for odd kernels, through ``_SameConv``. Under
    autocast the inputs are cast here, so every derivative sees one dtype."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w = x.to(dtype), w.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    y = _SameConv.apply(x, w)
    if bias is not None:
        y = y + bias.view(-1, *([1] * (w.dim() - 2)))
    return y


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` (stride 1, odd kernel, padding k // 2) with derivatives that are plain
    convolutions, and a 2D path for one-frame inputs. Parameters and state-dict keys are
    ``nn.Conv3d``'s."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int):
        if kernel % 2 == 0 or padding != kernel // 2:
            raise ValueError(f"FastConv3d takes odd kernels with padding kernel // 2, got "
                             f"kernel {kernel}, padding {padding}")
        super().__init__(in_ch, out_ch, kernel, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = x.is_cuda if _enabled is None else _enabled
        # meta tensors: vidgan.profile counts the MACs of the plain convolution, as the paper
        if x.device.type == "meta":
            return super().forward(x)
        if x.shape[2] == 1:
            # One frame: the padded frames are zeros, only the centre temporal slice acts. On
            # both paths: besides being cheaper, it avoids the CPU's bf16 conv3d, which returns
            # garbage for one-frame inputs of 3 channels (torch 2.14, tests/test_conv.py).
            w = self.weight[:, :, self.kernel_size[0] // 2]
            if not fast:
                return F.conv2d(x.squeeze(2), w, self.bias,
                                padding=self.padding[1:]).unsqueeze(2)
            return same_conv(x.squeeze(2), w, self.bias).unsqueeze(2)
        if not fast:
            return super().forward(x)
        return same_conv(x, self.weight, self.bias)
