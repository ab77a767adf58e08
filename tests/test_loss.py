import math

import pytest
import torch

from vidgan.train.loss import d_loss, g_loss, r1_penalty


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_sum_combination_is_eq7():
    """D' = sigmoid(sum_l D'_l): the loss is -log D'(real) - log(1 - D'(fake))."""
    real = [torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])]
    fake = [torch.tensor([-0.2, 0.1]), torch.tensor([0.4, -0.7])]
    expected = sum(-math.log(_sigmoid(r1 + r2)) - math.log(1 - _sigmoid(f1 + f2))
                   for r1, r2, f1, f2 in zip(*[t.tolist() for t in real + fake])) / 2
    assert float(d_loss(real, fake, "sum")) == pytest.approx(expected, rel=1e-6)
    expected_g = sum(-math.log(_sigmoid(f1 + f2)) for f1, f2 in
                     zip(fake[0].tolist(), fake[1].tolist())) / 2
    assert float(g_loss(fake, "sum")) == pytest.approx(expected_g, rel=1e-6)


def test_mean_combination_averages_levels():
    real = [torch.tensor([0.3]), torch.tensor([0.5, 2.0])]  # levels may differ in batch size
    fake = [torch.tensor([-0.2]), torch.tensor([0.4, -0.7])]
    per_level = [-math.log(_sigmoid(0.3)) - math.log(1 - _sigmoid(-0.2)),
                 (-math.log(_sigmoid(0.5)) - math.log(_sigmoid(2.0))) / 2
                 + (-math.log(1 - _sigmoid(0.4)) - math.log(1 - _sigmoid(-0.7))) / 2]
    assert float(d_loss(real, fake, "mean")) == pytest.approx(sum(per_level) / 2, rel=1e-6)


def test_r1_equals_hand_computed_gradient_norm():
    """Eq. (10) without lambda: sum over levels and samples of ||grad_x D'_l(x_i)||^2.

    D'_l(x) = sum(w_l * x^2) has gradient 2 w_l x, so the penalty is sum 4 w_l^2 x^2.
    """
    torch.manual_seed(0)
    xs = [torch.randn(3, 3, 4, 8, 8, requires_grad=True), torch.randn(2, 3, 1, 16, 16,
                                                                      requires_grad=True)]
    ws = [torch.randn(3, 4, 8, 8), torch.randn(3, 1, 16, 16)]
    logits = [(w * x ** 2).flatten(1).sum(1) for w, x in zip(ws, xs)]
    expected = sum(float((4 * w ** 2 * x.detach() ** 2).sum()) for w, x in zip(ws, xs))
    assert float(r1_penalty(xs, logits).detach()) == pytest.approx(expected, rel=1e-5)


def test_r1_is_differentiable_wrt_discriminator():
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    r1 = r1_penalty([x], [(w * x).sum(1)])  # grad_x = w -> R1 = 4 * 3 * w^2
    assert float(r1.detach()) == pytest.approx(48.0)
    r1.backward()
    assert float(w.grad) == pytest.approx(48.0)  # d(12 w^2)/dw = 24 w


def test_unknown_combine_rejected():
    with pytest.raises(ValueError, match="sum, mean"):
        g_loss([torch.zeros(1)], "max")
