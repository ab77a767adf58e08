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


def test_mean_combination_is_the_official_mean_over_all_logits():
    """The official DiracUpdater: F.mean(softplus(-y_real)) + F.mean(softplus(y_fake)) with
    y the levels' logits concatenated (F.concat(outputs, axis=0)), so a level with more
    samples weighs more; with equal batch sizes it is the mean over levels."""
    real = [torch.tensor([0.3]), torch.tensor([0.5, 2.0])]  # levels may differ in batch size
    fake = [torch.tensor([-0.2]), torch.tensor([0.4, -0.7])]
    expected = (-math.log(_sigmoid(0.3)) - math.log(_sigmoid(0.5)) - math.log(_sigmoid(2.0))) / 3 \
        + (-math.log(1 - _sigmoid(-0.2)) - math.log(1 - _sigmoid(0.4))
           - math.log(1 - _sigmoid(-0.7))) / 3
    assert float(d_loss(real, fake, "mean")) == pytest.approx(expected, rel=1e-6)
    expected_g = (-math.log(_sigmoid(-0.2)) - math.log(_sigmoid(0.4))
                  - math.log(_sigmoid(-0.7))) / 3
    assert float(g_loss(fake, "mean")) == pytest.approx(expected_g, rel=1e-6)
    # equal batch sizes: the mean over levels of each level's loss
    real2, fake2 = [real[1], real[1] * 2], [fake[1], fake[1] - 1]
    per_level = [float(d_loss([r], [f], "mean")) for r, f in zip(real2, fake2)]
    assert float(d_loss(real2, fake2, "mean")) == pytest.approx(sum(per_level) / 2, rel=1e-6)


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


# ------------------------------------------------------------ heads and phases (composition)
class CountingHead(torch.nn.Module):
    """A stateful head as a user (or the memory head) adds one: logits from the mean pixel,
    its logits as aux, an extra term on the fake logits, and a count of the real and fake
    videos of every applied D step as its state."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("seen", torch.zeros(2))

    def forward(self, x, y=None):
        logits = self.w * x.mean(dim=(1, 2, 3, 4))
        return logits, logits

    def extra_terms(self, phase, real_aux, fake_aux, condition):
        return {"l2": 0.5 * fake_aux.pow(2).mean()}

    def after_step(self, real_aux, fake_aux, condition):
        self.seen += torch.tensor([len(real_aux), len(fake_aux)], dtype=torch.float32)
        return {"seen_real": self.seen[0].clone()}


def test_a_new_head_adds_a_term_and_a_state_update_without_touching_the_loop(
        tmp_path, synthetic_root):
    from tests.conftest import tiny_config
    from vidgan.train import Trainer
    cfg = tiny_config(f"data.root={synthetic_root}", "data.dataset=folder",
                      f"train.out_dir={tmp_path}", "train.n_dis=2")
    trainer = Trainer(cfg)
    D = trainer.D
    D.frame, D.head_levels["frame"] = CountingHead(), 4  # the frame slot, as memory will use it
    trainer.opt_D.add_param_group({"params": [D.frame.w]})
    metrics = trainer.train_step(iter(trainer.loader))
    # the head's term joined both phases' totals, under its name
    for phase, main in (("D", ("D_main", "D_r1")), ("G", ("G_main",))):
        total = sum(float(metrics[f"loss/{k}"]) for k in main + (f"{phase}_frame_l2",))
        assert float(metrics[f"loss/{phase}"]) == pytest.approx(total, rel=1e-6)
        assert float(metrics[f"loss/{phase}_frame_l2"]) > 0
    assert "logits/real_frame" in metrics and "logits/fake_frame" in metrics
    # its state moved once per applied D step (n_dis = 2, batch 4), never in the G step
    assert D.frame.seen.tolist() == [8.0, 8.0] and float(metrics["frame/seen_real"]) == 8.0
    assert D.frame.w.grad is not None  # and it was trained with D
