"""The discriminator's fast convolutions equal plain F.conv3d, derivatives included."""
import pytest
import torch
from torch.nn import functional as F

from vidgan.models.conv import FastConv3d, fast_convolutions, flip_transpose
from vidgan.models.discriminator import ResNetDiscriminator


def _r1_derivatives(net, x, fast, third_order=False):
    """Logits, R1's input gradient (Eq. 10) and the gradients of the R1 term in the input and
    every parameter (the double backward); with ``third_order``, a third derivative too."""
    with fast_convolutions(fast):
        x = x.detach().requires_grad_(True)
        logits = net(x)
        grad, = torch.autograd.grad(logits.sum(), x, create_graph=True)
        r1 = grad.pow(2).sum()
        params = list(net.parameters())
        second = torch.autograd.grad(r1, [x] + params, create_graph=third_order,
                                     allow_unused=True)
        # (a bias right before the output, e.g. fc's, has no R1 gradient: None in both paths)
        used = [p for p, g in zip([x] + params, second) if g is not None]
        third = torch.autograd.grad(sum(g.pow(2).sum() for g in second if g is not None), used,
                                    allow_unused=True) if third_order else []
    return [logits, grad, *second, *third]


def _assert_equal(fast, plain):
    assert len(fast) == len(plain)
    for a, b in zip(fast, plain):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 16])
def test_discriminator_r1_equals_plain_conv3d(frames):
    torch.manual_seed(frames)
    net = ResNetDiscriminator(ch=2, dims=3).double()
    x = torch.randn(2, 3, frames, 16, 16, dtype=torch.float64)
    _assert_equal(_r1_derivatives(net, x, True), _r1_derivatives(net, x, False))


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("frames", [1, 2, 5])
def test_module_equals_conv3d_through_third_derivative(kernel, frames):
    torch.manual_seed(kernel * 10 + frames)
    conv = FastConv3d(3, 4, kernel, kernel // 2).double()
    net = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.Softplus(),
                              torch.nn.Linear(4 * frames * 30, 1).double(), torch.nn.Flatten(0))
    x = torch.randn(2, 3, frames, 5, 6, dtype=torch.float64)
    _assert_equal(_r1_derivatives(net, x, True, third_order=True),
                  _r1_derivatives(net, x, False, third_order=True))


def test_one_frame_uses_only_the_centre_slice_and_gives_the_others_zero_gradient():
    conv = FastConv3d(2, 2, 3, 1).double()
    x = torch.randn(1, 2, 1, 4, 4, dtype=torch.float64)
    conv(x).sum().backward()
    assert conv.weight.grad[:, :, [0, 2]].abs().max() == 0
    assert conv.weight.grad[:, :, 1].abs().max() > 0


def test_flip_transpose_is_the_data_gradient_weight():
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 4, 5, 5, dtype=torch.float64)
    expected, = torch.autograd.grad(F.conv3d(x, w, padding=1), x, g)
    torch.testing.assert_close(F.conv3d(g, flip_transpose(w), padding=1), expected)


def test_state_dict_keys_and_shapes_are_conv3d():
    fast, plain = FastConv3d(3, 4, 3, 1), torch.nn.Conv3d(3, 4, 3, padding=1)
    assert {k: v.shape for k, v in fast.state_dict().items()} == \
        {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(fast.state_dict())  # and back: the checkpoint format is unchanged
    fast.load_state_dict(plain.state_dict())


def test_even_kernel_or_other_padding_is_refused():
    with pytest.raises(ValueError, match="odd kernels"):
        FastConv3d(3, 4, 2, 1)
    with pytest.raises(ValueError, match="padding"):
        FastConv3d(3, 4, 3, 0)


def test_autocast_runs_in_one_dtype():
    torch.manual_seed(0)
    conv = FastConv3d(3, 4, 3, 1)
    x = torch.randn(2, 3, 2, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        grad, = torch.autograd.grad(y.float().sum(), x, create_graph=True)
    assert y.dtype == torch.bfloat16
    grad.float().pow(2).sum().backward()
    with fast_convolutions(False), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = conv(x)
    torch.testing.assert_close(y.float(), expected.float(), rtol=2e-2, atol=2e-2)
    assert torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize("fast", [True, False])
def test_one_frame_equals_conv3d_on_both_paths(fast):
    """One frame runs as a 2D convolution of the centre slice on either path: exact in float64
    (values, R1's gradient and its derivatives)."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(FastConv3d(3, 4, 3, 1), torch.nn.Flatten(), torch.nn.Softplus(),
                              torch.nn.Linear(4 * 30, 1), torch.nn.Flatten(0)).double()
    x = torch.randn(2, 3, 1, 5, 6, dtype=torch.float64)
    ours = _r1_derivatives(net, x, fast)
    net[0].forward = lambda v: F.conv3d(v, net[0].weight, net[0].bias, padding=1)
    _assert_equal(ours, _r1_derivatives(net, x, fast))


def test_one_frame_bf16_autocast_on_the_cpu_matches_float32():
    """The CPU's bf16 conv3d on one frame of 3 channels returns values off by O(1) (torch
    2.14); the plain path's 2D convolution does not."""
    torch.manual_seed(0)
    conv = FastConv3d(3, 2, 3, 1)
    x = torch.randn(4, 3, 1, 8, 8)
    with torch.no_grad():
        expected = F.conv3d(x, conv.weight, conv.bias, padding=1)
        with fast_convolutions(False), torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
    torch.testing.assert_close(y.float(), expected, rtol=3e-2, atol=3e-2)


def test_default_path_is_fast_on_gpus_only():
    conv = FastConv3d(2, 2, 3, 1)
    x = torch.randn(1, 2, 2, 4, 4)
    assert "Convolution" in type(conv(x).grad_fn).__name__  # CPU: plain nn.Conv3d
    with fast_convolutions(True):  # conv, then + bias
        assert type(conv(x).grad_fn.next_functions[0][0]).__name__ == "_SameConvBackward"
