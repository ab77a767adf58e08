"""loss.r1_interval: R1 every D step in the D loss (the paper) or lazily (StyleGAN2 §B)."""
import pytest
import torch

from tests.conftest import tiny_config
from vidgan.data import normalize
from vidgan.models.subsample import real_targets
from vidgan.train import Trainer
from vidgan.train.loss import d_loss, r1_penalty


def _trainer(tmp_path, root, *extra):
    # PyTorch's Adam form, so that the reference below is torch.optim.Adam itself (the Chainer
    # form is tested against its formula in test_official_step.py)
    return Trainer(tiny_config(f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
                               "data.dataset=folder", "model.n_classes=4", "train.adam=torch",
                               *extra))


def _d_logits(trainer, real, y, need_grad):
    """D's logits on the real batch's targets S^D (one leaf per head) and on G's fakes."""
    G, D, m = trainer.G, trainer.D, trainer.cfg.model
    z = G.sample_z(real.shape[0])
    with torch.no_grad():
        fakes = G(z, y)
    inputs = {n: x.detach().requires_grad_(need_grad)
              for n, x in D.head_inputs(real_targets(real, m.subsample, m.dis_levels,
                                                     D.batch_stride)).items()}
    return inputs, D(inputs, y), D(fakes, y)


def _reference_d_steps(trainer, batches, interval, lam):
    """The D steps written from the equations with a fresh Adam: Eq. (7) + lambda * Eq. (10)
    (interval 1), or Eq. (7) alone plus, every interval-th step, interval * lambda * Eq. (10)
    alone with lr * k/(k+1) and betas ** (k/(k+1)) (StyleGAN2's lazy regularisation)."""
    t = trainer.cfg.train
    ratio = interval / (interval + 1) if interval > 1 else 1.0
    opt = torch.optim.Adam(trainer.D.parameters(), lr=t.lr * ratio, eps=t.adam_eps,
                           betas=tuple(b ** ratio for b in t.betas))
    for i, (video, y) in enumerate(batches):
        torch.manual_seed(100 + i)
        real = normalize(video)
        inputs, real_logits, fake_logits = _d_logits(trainer, real, y, interval == 1)
        loss = d_loss(real_logits, fake_logits, trainer.cfg.loss.combine)
        if interval == 1:
            loss = loss + lam * r1_penalty(inputs, real_logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if interval > 1 and i % interval == 0:
            # the R1 step reduces the real batch again (new offsets b_t, Eq. 9), as
            # stylegan2-ada's Dreg augments its reals again
            m = trainer.cfg.model
            inputs = {n: x.detach().requires_grad_(True) for n, x in trainer.D.head_inputs(
                real_targets(real, m.subsample, m.dis_levels, trainer.D.batch_stride)).items()}
            penalty = interval * lam * r1_penalty(inputs, trainer.D(inputs, y))
            opt.zero_grad(set_to_none=True)
            penalty.backward()
            opt.step()
    return opt


@pytest.mark.parametrize("interval", [1, 3])
def test_d_steps_equal_the_equations_bitwise(tmp_path, synthetic_root, interval):
    ours = _trainer(tmp_path / "a", synthetic_root, f"loss.r1_interval={interval}")
    ref = _trainer(tmp_path / "b", synthetic_root, f"loss.r1_interval={interval}")
    before = ours.D.state_dict()["discriminators.0.fc.weight"].clone()
    stream = iter(ours.loader)
    batches = [next(stream)[:2] for _ in range(4)]
    metrics = []
    for i, (video, y) in enumerate(batches):
        torch.manual_seed(100 + i)
        metrics.append(ours.discriminator_step(video, y, d_step=i)[0])
    opt = _reference_d_steps(ref, batches, interval, ref.cfg.loss.r1_weight)
    for (name, a), b in zip(ours.D.state_dict().items(), ref.D.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(ours.D.state_dict()["discriminators.0.fc.weight"], before)
    # Adam took one step per D step, plus one per lazy R1 step (d_steps 0 and 3)
    steps = 4 + (2 if interval == 3 else 0)
    p = next(ours.D.parameters())
    assert int(ours.opt_D.state[p]["step"]) == int(opt.state[next(ref.D.parameters())]["step"])
    assert int(ours.opt_D.state[p]["step"]) == steps
    assert all("loss/R1" in m for m in metrics)  # lazy: the last R1 is logged in between


def test_lazy_r1_adjusts_d_adam_only(tmp_path, synthetic_root):
    t = _trainer(tmp_path, synthetic_root, "loss.r1_interval=4", "train.lr=1e-3",
                 "train.betas=[0.5,0.9]")
    t._set_lr()
    d, g = t.opt_D.param_groups[0], t.opt_G.param_groups[0]
    assert d["lr"] == pytest.approx(1e-3 * 4 / 5) and g["lr"] == 1e-3
    assert d["betas"] == pytest.approx((0.5 ** 0.8, 0.9 ** 0.8)) and g["betas"] == (0.5, 0.9)
    paper = _trainer(tmp_path / "p", synthetic_root, "train.lr=1e-3", "train.betas=[0.5,0.9]")
    paper._set_lr()
    assert paper.opt_D.param_groups[0]["lr"] == 1e-3
    assert paper.opt_D.param_groups[0]["betas"] == (0.5, 0.9)


def test_r1_interval_must_be_positive():
    from vidgan.config import ConfigError
    with pytest.raises(ConfigError, match="loss.r1_interval=0"):
        tiny_config("loss.r1_interval=0")
