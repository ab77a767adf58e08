"""WGAN's Lipschitz constraints on D (TGAN §4, Table 2, Algorithm 1) against their formulas,
and when a run applies them; the WGAN loss and RMSprop options."""
import pytest
import torch
from torch import nn

from tests.conftest import tiny_config
from vidgan.models.normalization import BatchNormNoBeta
from vidgan.train.constraints import (clip_batchnorm_scales_, clip_singular_values_,
                                      clip_weights_)
from vidgan.train.loss import wgan_d_loss, wgan_g_loss


def _matrix(singular_values, rows, cols, seed=0):
    """A (rows, cols) matrix U diag(s) V^T with orthonormal U, V, in float64."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    k = len(singular_values)
    s = torch.tensor(singular_values, dtype=torch.float64)
    return u[:, :k], s, v[:, :k]


def test_singular_value_clipping_sets_singular_values_above_one_to_one():
    """TGAN Table 2: a conv weight read as W' (out, -1) = U S V^T becomes U min(S, 1) V^T;
    biases and weights of fewer than 4 dims stay (the official rule)."""
    u, s, v = _matrix([3.0, 1.5, 0.5, 0.2], rows=4, cols=6)
    conv = nn.Conv3d(2, 4, (3, 1, 1)).double()  # weight (4, 2, 3, 1, 1): W' is (4, 6)
    linear = nn.Linear(6, 4).double()
    with torch.no_grad():
        conv.weight.copy_(((u * s) @ v.T).view(conv.weight.shape))
    bias, linear_w = conv.bias.clone(), linear.weight.clone()
    clip_singular_values_(nn.ModuleList([conv, linear]))
    clipped = (u * torch.tensor([1.0, 1.0, 0.5, 0.2], dtype=torch.float64)) @ v.T
    torch.testing.assert_close(conv.weight.reshape(4, 6), clipped)
    assert torch.linalg.matrix_norm(conv.weight.detach().reshape(4, 6), ord=2).item() == \
        pytest.approx(1.0)
    assert torch.equal(conv.bias, bias) and torch.equal(linear.weight, linear_w)
    # a weight whose singular values are all <= 1 is left as it was (up to rounding)
    before = conv.weight.clone()
    clip_singular_values_(conv)
    torch.testing.assert_close(conv.weight, before)


def test_batchnorm_scales_are_clipped_to_a_hundredth_of_sigma_and_sigma():
    """The official code's form of TGAN Table 2: gamma in [0.01 sigma, sigma], sigma =
    sqrt(running variance), no eps; for BN with and without beta."""
    no_beta, plain = BatchNormNoBeta(3, dims=3), nn.BatchNorm2d(3)
    variance = torch.tensor([4.0, 0.25, 1.0])
    for gamma, running in ((no_beta.gamma, no_beta.bn.running_var),
                           (plain.weight, plain.running_var)):
        running.copy_(variance)
        with torch.no_grad():
            gamma.copy_(torch.tensor([3.0, 0.001, 0.5]))
    clip_batchnorm_scales_(nn.ModuleList([no_beta, plain]))
    expected = torch.tensor([2.0, 0.005, 0.5])  # min(3, 2); max(0.001, 0.01 * 0.5); kept
    torch.testing.assert_close(no_beta.gamma.detach(), expected)
    torch.testing.assert_close(plain.weight.detach(), expected)
    assert torch.all(plain.bias == 0)  # beta is not clipped


def test_batchnorm_scales_under_the_papers_bound():
    """TGAN Table 2 as written (train.bn_scale_bound=paper): 0 <= gamma <= sqrt(sigma_B^2 +
    eps) with each BN's own eps; no lower bound but 0."""
    no_beta, plain = BatchNormNoBeta(3, dims=3), nn.BatchNorm2d(3, eps=0.25)
    variance = torch.tensor([4.0, 0.25, 1.0])
    for gamma, running in ((no_beta.gamma, no_beta.bn.running_var),
                           (plain.weight, plain.running_var)):
        running.copy_(variance)
        with torch.no_grad():
            gamma.copy_(torch.tensor([3.0, 0.001, -0.5]))
    clip_batchnorm_scales_(nn.ModuleList([no_beta, plain]), "paper")
    eps = no_beta.bn.eps  # 2e-5, Chainer's
    torch.testing.assert_close(no_beta.gamma.detach(),
                               torch.tensor([(4.0 + eps) ** 0.5, 0.001, 0.0]))
    torch.testing.assert_close(plain.weight.detach(), torch.tensor([4.25 ** 0.5, 0.001, 0.0]))
    with pytest.raises(ValueError, match="bn_scale_bound"):
        clip_batchnorm_scales_(plain, "loose")


def test_weight_clipping_clamps_every_parameter():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.003, 0.02], [-2.0, 0.0, 0.009]]))
    clip_weights_(layer, 0.01)
    assert torch.equal(layer.weight.detach(),
                       torch.tensor([[0.01, -0.003, 0.01], [-0.01, 0.0, 0.009]]))
    assert layer.bias.abs().max() <= 0.01


def test_wgan_losses_are_the_critic_difference():
    """TGAN Eq. (2): D minimises E D(fake) - E D(real), G minimises -E D(fake); over heads,
    "mean" averages every logit, "sum" sums the heads' logits per clip first."""
    real = {"L1": torch.tensor([1.0, 3.0]), "L2": torch.tensor([0.0, 4.0])}
    fake = {"L1": torch.tensor([-1.0, 1.0]), "L2": torch.tensor([2.0, 2.0])}
    assert wgan_d_loss(real, fake).item() == pytest.approx(1.0 - 2.0)
    assert wgan_g_loss(fake).item() == pytest.approx(-1.0)
    assert wgan_d_loss(real, fake, "sum").item() == pytest.approx(2.0 - 4.0)
    assert wgan_g_loss(fake, "sum").item() == pytest.approx(-2.0)


def _spectral_norms(D):
    return [torch.linalg.matrix_norm(p.detach().reshape(p.shape[0], -1), ord=2).item()
            for p in D.parameters() if p.dim() >= 4]


def test_a_run_clips_d_after_the_d_step_of_every_interval_th_iteration(tmp_path,
                                                                     synthetic_root):
    """train.d_constraint=svc, interval 2: after iteration 1 D is as RMSprop left it (some
    conv weight above spectral norm 1), after iteration 2 every one is at most 1; G is never
    clipped."""
    from vidgan.train import Trainer
    cfg = tiny_config("loss.type=wgan", "loss.r1_weight=0", "train.optimizer=rmsprop",
                      "train.lr=5e-5", "train.d_constraint=svc", "train.d_constraint_interval=2",
                      "data.dataset=folder", f"data.root={synthetic_root}", "eval.metrics=[]",
                      "eval.sample_interval=0", f"train.out_dir={tmp_path / 'run'}")
    trainer = Trainer(cfg)
    assert isinstance(trainer.opt_D, torch.optim.RMSprop)
    assert trainer.opt_D.defaults["alpha"] == 0.99 and trainer.opt_D.defaults["eps"] == 1e-8
    batches = iter(trainer.loader)
    trainer.train_step(batches)
    assert max(_spectral_norms(trainer.D)) > 1.01
    trainer.train_step(batches)
    assert max(_spectral_norms(trainer.D)) <= 1 + 1e-5
    assert max(_spectral_norms(trainer.G)) > 1.01
    trainer.close()
