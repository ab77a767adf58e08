"""The training step of the official TGANv2 code (pfnet-research/tgan2, DiracUpdater), vidgan's
default: iteration order, init, Chainer's Adam, the batch-128 R1 weight, old checkpoints."""
import copy
import math

import pytest
import torch
from torch import nn

from tests.conftest import tiny_config
from vidgan.checkpoint import list_checkpoints, load_checkpoint, load_generator
from vidgan.config import MEMORY_KEYS, PREVIOUS_DEFAULTS, load_config, parent_dict
from vidgan.models import build_discriminator, build_generator
from vidgan.train import Trainer
from vidgan.train.loss import g_loss, global_r1, r1_penalty
from vidgan.train.optim import Adam


def _cfg(tmp_path, root, *extra):
    return tiny_config(f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
                       "data.dataset=folder", "train.checkpoint_interval=1000",
                       "eval.sample_interval=1000", *extra)


def _watch(trainer):
    """Record every G forward's level videos and every D head's inputs, in call order."""
    g_calls, head_calls = [], {name: [] for name in trainer.D.head_levels}
    trainer.G.register_forward_hook(
        lambda m, args, out: g_calls.append([v.detach().clone() for v in out]))
    for name in trainer.D.head_levels:
        trainer.D.head(name).register_forward_pre_hook(
            lambda m, args, name=name: head_calls[name].append(args[0].detach().clone()))
    return g_calls, head_calls


def test_g_first_iteration_is_the_official_updater(tmp_path, synthetic_root):
    """DiracUpdater.update_core with n_dis = 1: one G forward; the G loss through the D of
    before this iteration's D update; the D step on exactly that G output; the G's BatchNorm
    statistics move once (running mean = 0.1 x the batch mean from 0)."""
    trainer = Trainer(_cfg(tmp_path, synthetic_root))
    assert trainer.cfg.train.step_order == "g_first"  # the default
    D_before = copy.deepcopy(trainer.D)
    g_calls, head_calls = _watch(trainer)
    first_bn = next(m for m in trainer.G.modules() if isinstance(m, nn.BatchNorm2d))
    bn_inputs = []
    first_bn.register_forward_pre_hook(lambda m, args: bn_inputs.append(args[0].detach()))

    metrics = trainer.train_step(iter(trainer.loader))

    assert len(g_calls) == 1  # one G forward per iteration
    fakes = g_calls[0]
    levels = list(trainer.D.levels)
    for name, level in trainer.D.head_levels.items():
        # the G phase judges the fakes, the D phase the reals, then the same fakes
        g_phase, real, d_phase = head_calls[name]
        assert torch.equal(g_phase, fakes[levels.index(level)])
        assert torch.equal(d_phase, fakes[levels.index(level)])
        assert not torch.equal(real, d_phase)
    with torch.no_grad():
        expected_g = g_loss(D_before(fakes), trainer.cfg.loss.combine)
    assert float(metrics["loss/G_main"]) == pytest.approx(float(expected_g), rel=1e-5)
    bns = [m for m in trainer.G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 1 for m in bns)
    assert len(bn_inputs) == 1
    torch.testing.assert_close(first_bn.running_mean, 0.1 * bn_inputs[0].mean(dim=(0, 2, 3)))


def test_d_first_is_the_previous_order(tmp_path, synthetic_root):
    """train.step_order=d_first: the D step on its own fakes, then a second G forward (and BN
    update) for the G step, whose fakes the D step never saw."""
    trainer = Trainer(_cfg(tmp_path, synthetic_root, "train.step_order=d_first"))
    g_calls, head_calls = _watch(trainer)
    trainer.train_step(iter(trainer.loader))
    assert len(g_calls) == 2
    real, d_fake, g_fake = head_calls["L4"]
    assert torch.equal(d_fake, g_calls[0][-1]) and torch.equal(g_fake, g_calls[1][-1])
    bns = [m for m in trainer.G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 2 for m in bns)


def test_g_first_with_several_d_steps_draws_new_fakes_after_the_first(tmp_path, synthetic_root):
    """n_dis = 2 in the official loop: the G step (i = 0) and its D step share one G forward;
    the second D step has a G forward of its own."""
    trainer = Trainer(_cfg(tmp_path, synthetic_root, "train.n_dis=2"))
    g_calls, head_calls = _watch(trainer)
    trainer.train_step(iter(trainer.loader))
    assert len(g_calls) == 2
    g_phase, _, d1, _, d2 = head_calls["L4"]
    assert torch.equal(d1, g_calls[0][-1]) and torch.equal(d2, g_calls[1][-1])


# ---------------------------------------------------------------------------------- init
def _std_close(w: torch.Tensor, expected: float, rel: float = 0.05) -> None:
    """std within ``rel`` of ``expected`` (the sampling error here is < 1.5%), mean ~ 0."""
    w = w.detach()
    assert float(w.std()) == pytest.approx(expected, rel=rel)
    assert abs(float(w.mean())) < 4 * expected / math.sqrt(w.numel())


def _fan_in(w: torch.Tensor) -> int:
    return w[0].numel()


def _glorot_std(w: torch.Tensor, gain: float) -> float:
    receptive = w[0, 0].numel()
    return gain * math.sqrt(6.0 / ((w.shape[0] + w.shape[1]) * receptive)) / math.sqrt(3.0)


@torch.no_grad()  # reading weights only
def test_official_init_per_layer_type():
    """Chainer's defaults where the official code sets no initialW: the FC, the ConvLSTM and
    the renderers (c3-c6) LeCun normal, std 1/sqrt(fan_in), zero biases; the Up blocks
    GlorotUniform(sqrt 2) (shortcut: 1); the D's convs likewise."""
    torch.manual_seed(0)
    cfg = load_config("demo.yaml", ["model.init=official", "model.z_dim=64",
                                    "model.clstm_ch=64", "model.ch=16", "model.n_classes=0",
                                    "model.frame_discriminator=none"])
    G, D = build_generator(cfg), build_discriminator(cfg)
    t = G.temporal
    for layer in (t.fc, t.cells[0].w_x, t.cells[0].w_h):
        _std_close(layer.weight, 1 / math.sqrt(_fan_in(layer.weight)))
    assert t.cells[0].w_h.bias is None
    assert float(t.fc.bias.abs().max()) == 0 and float(t.cells[0].w_x.bias.abs().max()) == 0
    # the renderers are small: pooled, each scaled by its expected std
    scaled = torch.cat([(r.conv.weight * math.sqrt(_fan_in(r.conv.weight))).flatten()
                        for r in G.renderers.values()])
    _std_close(scaled, 1.0)
    assert all(float(r.conv.bias.abs().max()) == 0 for r in G.renderers.values())
    up = G.levels[0][0]
    for conv, gain in ((up.c1, math.sqrt(2)), (up.c2, math.sqrt(2)), (up.c_sc, 1.0)):
        _std_close(conv.weight, _glorot_std(conv.weight, gain))
        assert float(conv.weight.abs().max()) <= math.sqrt(3) * _glorot_std(conv.weight, gain)
    block = D.discriminators[0].blocks[1]
    _std_close(block.c1.weight, _glorot_std(block.c1.weight, math.sqrt(2)))


@torch.no_grad()  # reading weights only
def test_legacy_init_keeps_pytorchs_default():
    """model.init=legacy: PyTorch's Linear/Conv default, U(+-1/sqrt(fan_in)), std 0.577x
    LeCun's; renderers Glorot uniform."""
    torch.manual_seed(0)
    cfg = load_config("demo.yaml", ["model.z_dim=64", "model.clstm_ch=64", "model.init=legacy"])
    G = build_generator(cfg)
    for layer in (G.temporal.fc, G.temporal.cells[0].w_h):
        _std_close(layer.weight, 1 / math.sqrt(3 * _fan_in(layer.weight)))
    render = G.renderers["1"].conv.weight
    assert float(render.abs().max()) <= math.sqrt(3) * _glorot_std(render, 1.0)


# ---------------------------------------------------------------------------------- Adam
def _chainer_adam(p, grads, alpha, beta1, beta2, eps):
    """chainer.optimizers.Adam's update (AdamRule.update_core_cpu, amsgrad off, eta 1)."""
    p, m, v = p.clone(), torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g * g - v)
        lr = alpha * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p -= lr * m / (v.sqrt() + eps)
    return p


@pytest.mark.parametrize("betas", [(0.0, 0.9), (0.5, 0.99)])
def test_adam_equals_chainers_update(betas):
    """Gradients of the size of eps, so that where eps enters matters."""
    torch.manual_seed(0)
    p0 = torch.randn(50, dtype=torch.float64)
    grads = [torch.randn(50, dtype=torch.float64) * 1e-7 for _ in range(6)]
    expected = _chainer_adam(p0, grads, 1e-4, *betas, eps=8e-8)

    def run(make):
        p = nn.Parameter(p0.clone())
        opt = make([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p.detach()

    ours = run(lambda ps: Adam(ps, lr=1e-4, betas=betas, eps=8e-8))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-15)
    plain = run(lambda ps: torch.optim.Adam(ps, lr=1e-4, betas=betas, eps=8e-8))
    assert float((plain - expected).abs().max()) > 1e-7  # PyTorch's own form differs
    torch.testing.assert_close(run(lambda ps: Adam(ps, lr=1e-4, betas=betas, eps=8e-8,
                                                   form="torch")), plain, rtol=0, atol=0)


def test_adam_state_dict_is_torchs():
    """Checkpoints hold torch.optim.Adam's state either way: old ones load."""
    p = nn.Parameter(torch.ones(3))
    opt = Adam([p], lr=1e-3, betas=(0.0, 0.9), eps=8e-8)
    p.grad = torch.ones(3)
    opt.step()
    plain = torch.optim.Adam([p], lr=1e-3, betas=(0.0, 0.9), eps=1e-8)
    plain.load_state_dict(opt.state_dict())
    opt.load_state_dict(plain.state_dict())
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


# ------------------------------------------------------------------- batch 128, 4 processes
def test_bs128_config_reproduces_the_official_r1_of_4_processes():
    """The official README run: 4 processes x 32, each adding lambda * R1 of its own 32 clips,
    gradients averaged (ChainerMN): lambda / 4 on the global sum. vidgan's R1 does not depend
    on the process count, so the config sets that weight."""
    cfg = load_config("ucf101_st4_bs128.yaml")
    assert cfg.train.batch_size == 128 and cfg.loss.r1_weight == pytest.approx(0.5 / 4)
    assert cfg.model == load_config("ucf101_st4.yaml").model  # the paper's s_t = 4 model
    small = load_config("ucf101_st4_bs128.yaml", ["model.resolution=64", "model.ch=2",
                                                  "model.dis_ch=2", "model.clstm_ch=8"])
    torch.manual_seed(0)
    D = build_discriminator(small).double()
    from vidgan.models.subsample import real_targets
    m = small.model
    real = torch.rand(8, 3, 16, 64, 64, dtype=torch.float64) * 2 - 1
    inputs = {k: v.requires_grad_(True) for k, v in
              D.head_inputs(real_targets(real, m.subsample, m.dis_levels)).items()}
    ours = small.loss.r1_weight * global_r1(inputs, D(inputs))
    shards = []
    for p in range(4):  # each official process: lambda = 0.5 on its own quarter
        part = {k: v.detach()[2 * p:2 * p + 2].requires_grad_(True) for k, v in inputs.items()}
        shards.append(0.5 * r1_penalty(part, D(part)))
    torch.testing.assert_close(ours, sum(shards) / 4)


# -------------------------------------------------------------------------- old checkpoints
def _make_old(path):
    """A checkpoint as vidgan < 0.2 wrote it: its stored config lacks the keys added with
    the official step and holds the then defaults of the others."""
    state = torch.load(path, weights_only=False)
    for key, value in PREVIOUS_DEFAULTS.items():
        node, name = parent_dict(state["config"], key)
        if key in ("loss.combine", "train.adam_eps"):
            node[name] = value
        else:
            del node[name]
    torch.save(state, path)


def test_old_checkpoint_generates_and_resumes_naming_what_changed(tmp_path, synthetic_root,
                                                                  capsys):
    Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=2")).run()
    path = list_checkpoints(tmp_path / "run")[-1]
    _make_old(path)
    loaded = load_generator(path)
    assert loaded.cfg.model.downsample == "paper" and loaded.cfg.train.step_order == "d_first"
    with torch.no_grad():
        video = loaded.G(loaded.G.sample_z(2))
    assert video.shape == (2, 3, 8, 64, 64) and torch.isfinite(video).all()

    capsys.readouterr()
    resumed = Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=3"), resume=True)
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("note:")]
    assert len(line) == 1
    for change in ("model.downsample paper -> official", "model.init legacy -> official",
                   "loss.combine sum -> mean", "train.adam torch -> chainer",
                   "train.adam_eps 1e-08 -> 8e-08", "train.step_order d_first -> g_first"):
        assert change in line[0]
    resumed.run()
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["step"] == 3

    # with the old values as overrides it continues as it was, and says nothing
    capsys.readouterr()
    old = [f"{k}={v}" for k, v in PREVIOUS_DEFAULTS.items()
           if not k.startswith(MEMORY_KEYS)]  # a run without the memory head refuses those
    _make_old(list_checkpoints(tmp_path / "run")[-1])
    Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=4", *old), resume=True)
    assert "note:" not in capsys.readouterr().out
