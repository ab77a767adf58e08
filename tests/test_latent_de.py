"""Latent neural ODE/SDE temporal generators (Gordon & Parde 2021) and the ConvLSTM's step
noise: the solutions against their equations, the authors' parameter counts, seeded Brownian
paths, longer clips, and the shipped configs training and resuming at tiny sizes."""
import math

import pytest
import torch
from torch import nn

from tests.conftest import WIDTHS, tiny_config
from vidgan.config import ConfigError, load_config
from vidgan.models import build_generator
from vidgan.models.latent_de import GridBrownian, LatentDE, frame_times
from vidgan.models.temporal import ConvLSTMTemporalGenerator
from vidgan.train import Trainer


def _linear_f(de: LatentDE, a: torch.Tensor) -> None:
    """Make f(y) = A y (no bias, no nonlinearity): the equations then have closed forms."""
    lin = nn.Linear(a.shape[0], a.shape[0], bias=False).double()
    lin.weight.data.copy_(a)
    de.field.f = lin


def _matrix(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)


def test_first_order_linear_ode_is_the_matrix_exponential():
    """y' = A y: y(t_k) = expm(A t_k) y(0) at the frame times linspace(0, 1, T)."""
    d, T = 6, 16
    a = _matrix(d, 0)
    y0 = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(a * t).T
                         for t in frame_times(T, T, like=y0)], dim=1)
    # the authors' solver: rk4, one step per frame interval (h = 1/15, error O(h^4))
    de = LatentDE("ode", (d,), T).double()
    _linear_f(de, a)
    coarse = de(y0, T)
    assert coarse.shape == (3, T, d)
    assert (coarse - exact).abs().max() < 1e-4
    # a finer step converges to it (1/150: ten steps per frame interval, so no frame time
    # falls between steps, where the fixed-grid solver would interpolate linearly)
    de.step_size = 1 / 150
    assert (de(y0, T) - exact).abs().max() < 1e-7
    assert (de(y0, T) - exact).abs().max() < (coarse - exact).abs().max() / 100


def test_third_order_ode_equals_its_first_order_system():
    """y''' = A y'' as the system x' = M x, x = (y'', y', y), M = [[A, 0, 0], [I, 0, 0],
    [0, I, 0]]; the initial values are the three encoders' maps of h (highest first)."""
    d, T = 4, 16
    a = _matrix(d, 2)
    de = LatentDE("ode", (d,), T, order=3, step_size=1 / 150).double()
    _linear_f(de, a)
    h = torch.randn(2, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x0 = torch.cat([enc(h) for enc in de.encoders], dim=1)  # (y''(0), y'(0), y(0))
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    m = torch.cat([torch.cat([a, zero, zero], 1), torch.cat([eye, zero, zero], 1),
                   torch.cat([zero, eye, zero], 1)], 0)
    exact = torch.stack([(x0 @ torch.linalg.matrix_exp(m * t).T)[:, 2 * d:]
                         for t in frame_times(T, T, like=h)], dim=1)
    assert (de(h, T) - exact).abs().max() < 1e-7
    # and y = y(0) + t y'(0) + ... is not what order 1 gives: the order matters
    first = LatentDE("ode", (d,), T, step_size=1 / 150).double()
    _linear_f(first, a)
    assert (first(x0[:, 2 * d:], T) - exact).abs().max() > 1e-3


def test_sde_without_diffusion_is_the_ode_under_the_same_solver():
    d, T, dt = 5, 16, 0.025
    sde = LatentDE("sde", (d,), T, hidden=7, sde_dt=dt).double()
    ode = LatentDE("ode", (d,), T, hidden=7, method="euler", step_size=dt).double()
    ode.field.f.load_state_dict(sde.field.drift.state_dict())
    for p in sde.field.diffusion.parameters():
        nn.init.zeros_(p)  # sigma = tanh(0) = 0
    h = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    noise = sde.sample_noise(3, T, torch.Generator().manual_seed(5), "cpu").double()
    torch.testing.assert_close(sde(h, T, noise), ode(h, T), rtol=0, atol=1e-12)


def test_sde_path_is_the_latents_brownian_increments():
    """Drift 0, constant diffusion s: y(t) = y(0) + s W(t), W the increments' sum (Euler-
    Maruyama is exact here); at t = 1 (grid step 40) exactly y(0) + s sum(dW)."""
    d, T, dt = 3, 16, 0.025
    sde = LatentDE("sde", (d,), T, sde_dt=dt).double()
    for p in sde.field.drift.parameters():
        nn.init.zeros_(p)
    nn.init.zeros_(sde.field.diffusion[0].weight)
    nn.init.constant_(sde.field.diffusion[0].bias, 0.5)
    s = math.tanh(0.5)
    h = torch.randn(2, d, dtype=torch.float64)
    noise = sde.sample_noise(2, T, torch.Generator().manual_seed(6), "cpu").double()
    assert noise.shape == (2, 40 * d)  # 40 Euler-Maruyama steps of 0.025 reach t = 1
    y = sde(h, T, noise)
    dw = noise.view(2, 40, d)
    torch.testing.assert_close(y[:, -1], h + s * dw.sum(1), rtol=0, atol=1e-12)
    torch.testing.assert_close(y[:, 0], h)
    bm = GridBrownian(dw, dt)
    torch.testing.assert_close(bm(0.0, 10 * dt), dw[:, :10].sum(1))


def _clip_and_gradient(de: LatentDE, h, n_frames, noise=None):
    de.zero_grad()
    y = de(h, n_frames, noise)
    y.square().mean().backward()
    return y.detach(), torch.cat([p.grad.flatten() for p in de.parameters()])


def _relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_the_adjoint_gives_the_same_clip_and_for_an_ode_the_same_gradients():
    """model.de.adjoint: the forward is the same solve; an ODE's adjoint gradients equal
    back-propagation's up to the solver's error. For the SDE the adjoint reads the same
    Brownian increments (same clip) and, with additive noise, its gradients converge to
    back-propagation's as dt shrinks."""
    import copy
    d, T = 5, 16
    h = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for order in (1, 2):
        direct = LatentDE("ode", (d,), T, order=order, hidden=7).double()
        adjoint = copy.deepcopy(direct)
        adjoint.adjoint = True
        (y1, g1), (y2, g2) = _clip_and_gradient(direct, h, T), _clip_and_gradient(adjoint, h, T)
        assert torch.equal(y1, y2) and _relative(g2, g1) < 1e-5
    gaps = []
    for dt in (0.025, 0.0025):
        direct = LatentDE("sde", (d,), T, hidden=7, sde_dt=dt).double()
        for layer in direct.field.diffusion:  # sigma = its last bias: additive noise
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.weight)
        adjoint = copy.deepcopy(direct)
        adjoint.adjoint = True
        noise = direct.sample_noise(3, T, torch.Generator().manual_seed(8), "cpu").double()
        (y1, g1), (y2, g2) = (_clip_and_gradient(direct, h, T, noise),
                              _clip_and_gradient(adjoint, h, T, noise))
        assert torch.equal(y1, y2)
        gaps.append(_relative(g2, g1))
    assert gaps[1] < gaps[0] / 4 and gaps[1] < 0.01, gaps


def test_a_latent_of_the_wrong_width_is_a_clear_error():
    """MoCoGAN with an ODE takes [z_C | z_m] for any clip length, and nothing wider."""
    G = build_generator(load_config("demo_mocogan", ["model.latent_de=ode",
                                                     "model.n_classes=0"])).eval()
    z = G.sample_z(2, torch.Generator().manual_seed(0))
    assert G(z, n_frames=2 * G.n_frames).shape[2] == 2 * G.n_frames
    with pytest.raises(ValueError, match=rf"latent of width {z.shape[1] + 1}, expected "
                                         rf"{z.shape[1]}"):
        G(torch.cat([z, z[:, :1]], dim=1))


def test_brownian_increments_are_seeded_and_have_variance_dt():
    de = LatentDE("sde", (4,), 16, sde_dt=0.025)
    draw = lambda seed, n=16: de.sample_noise(4096, n, torch.Generator().manual_seed(seed), "cpu")
    a, b = draw(0), draw(0)
    assert torch.equal(a, b) and not torch.equal(a, draw(1))
    assert a.var().item() == pytest.approx(0.025, rel=0.02) and abs(a.mean().item()) < 1e-3
    longer = draw(0, 31)  # t_30 = 2: 80 steps; it begins with the 16-frame draw
    assert longer.shape[1] == 80 * 4 and torch.equal(longer[:, :a.shape[1]], a)
    assert de.frames_held(longer.shape[1]) == 31 and de.frames_held(a.shape[1]) == 16


@pytest.mark.parametrize("overrides", [["model.latent_de=ode"], ["model.latent_de=sde"],
                                       ["model.temporal=gru", "model.latent_de=sde"],
                                       ["model.step_noise=true"]])
def test_same_seed_same_clip_and_longer_clips_extend_the_time_grid(overrides):
    """One latent, one clip; a 2T-frame clip from the 2T-frame draw of the same seed starts
    with the T-frame clip and goes on moving (the ODE's grid extended past t = 1)."""
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    T = cfg.model.n_frames
    draw = lambda seed, n=None: G.sample_z(2, torch.Generator().manual_seed(seed), n_frames=n)
    with torch.no_grad():
        short = G(draw(3))
        assert torch.equal(short, G(draw(3))) and not torch.allclose(short, G(draw(4)))
        long = G(draw(3, 2 * T), n_frames=2 * T)
    assert long.shape[2] == 2 * T
    # float32: the solvers' step times accumulate rounding differently past t = 1
    torch.testing.assert_close(long[:, :, :T], short, rtol=0, atol=1e-4)
    assert not torch.allclose(long[:, :, T:], long[:, :, T - 1:T].expand_as(long[:, :, T:]))


def test_step_noise_reaches_every_step_and_only_when_asked():
    torch.manual_seed(0)
    T, dz = 6, 5
    on = ConvLSTMTemporalGenerator(dz, 0, 8, 1, step_noise=True, n_frames=T).double()
    off = ConvLSTMTemporalGenerator(dz, 0, 8, 1, n_frames=T).double()
    off.load_state_dict(on.state_dict())  # no new parameter
    assert off.z_dim == dz and on.z_dim == dz * T
    z = on.sample_z(3, torch.Generator().manual_seed(0)).double()
    base = on(z, T)
    # all z_t = 0: exactly the official rollout (no bias enters with the noise)
    quiet = torch.cat([z[:, :dz], torch.zeros_like(z[:, dz:])], dim=1)
    torch.testing.assert_close(on(quiet, T), off(z[:, :dz], T), rtol=0, atol=0)
    for t in range(1, T):  # z_t changes frame t and later, never earlier
        poked = z.clone()
        poked[:, dz * t:dz * (t + 1)] += 0.5
        moved = (on(poked, T) - base).abs().amax(dim=(0, 1, 3, 4))
        assert (moved[:t] == 0).all() and moved[t] > 0, t
    # the input at t >= 1 is W_z z_t: the FC's z columns, without bias
    w = on.fc.weight[:, :dz]
    cell = on.cells[0]
    x0 = on.fc(z[:, :dz]).view(3, 8, 1, 1)
    c = cell(x0, (torch.zeros_like(x0),) * 2)
    h2, _ = cell((z[:, dz:2 * dz] @ w.T).view(3, 8, 1, 1), c)
    torch.testing.assert_close(base[:, :, 1], h2)


def _n(module):
    return sum(p.numel() for p in module.parameters())


def _dynamics(G):
    t = G.temporal
    return getattr(t, "dynamics", None) or t.frame_latents.dynamics


@pytest.mark.parametrize("name,temporal,field", [
    # the authors' counts: TGAN's G_0 with the FCN (their tgan_ode VideoGenerator(linear=True)
    # and VideoGeneratorSDE), MoCoGAN's f against the GRU's 1,632, TGANv2's conv f
    ("ucf101_tgan_ode", 638_424, 10_100),
    ("ucf101_tgan_sde", 648_524, 20_200),
    ("ucf101_mocogan_ode", None, 1_633),
    ("ucf101_mocogan_sde", None, 3_266),
    ("ucf101_st4_ode", None, 9_438_208),
])
def test_shipped_configs_have_the_authors_parameter_counts(name, temporal, field):
    G = build_generator(load_config(name))
    dyn = _dynamics(G)
    assert _n(dyn.field) == field
    if temporal is not None:
        assert _n(G.temporal) == temporal
    else:  # no FCN (and no encoder): f is all of the dynamics
        assert _n(dyn) == field
    if "mocogan" in name:  # the GRU it replaces, on the same 16-d motion code
        gru = build_generator(load_config("ucf101_mocogan", ["model.motion_dim=16"])).temporal.gru
        assert _n(gru) == 1_632 and not hasattr(G.temporal, "gru")
    if name == "ucf101_st4_ode":  # the ConvLSTM it replaces
        assert _n(build_generator(load_config("ucf101_st4")).temporal.cells) == 75_501_568


@pytest.mark.parametrize("order,count", [(2, 658_624), (3, 668_724)])
def test_higher_order_tgan_ode_counts(order, count):
    """Their "tgan SVC ODE 2/3" (VideoGeneratorNOODE(linear=True, order=n)): one encoder
    Linear(100, 100) per order on the FCN's output."""
    G = build_generator(load_config("ucf101_tgan_ode", [f"model.de.order={order}"]))
    assert _n(G.temporal) == count


TGAN_TINY = ["model.resolution=32", "model.n_frames=16", "model.z_dim=8", "model.ch=32",
             "model.dis_ch=4"]
TGANV2_TINY = [o for o in WIDTHS if not o.startswith(("model.z_dim", "model.resolution",
                                                      "train.", "eval.", "data."))] + [
    "model.resolution=32"]


def _tiny(name, out, root, *extra):
    sizes = TGAN_TINY if "tgan" in name else TGANV2_TINY
    if "mocogan" in name:
        sizes = [o for o in sizes if not o.startswith("model.z_dim")]
    return load_config(name, [
        *sizes, "train.batch_size=4", "data.dataset=folder", f"data.root={root}",
        "data.num_workers=0", f"train.out_dir={out}", "train.device=cpu",
        "train.checkpoint_interval=1000", "train.log_interval=1", "eval.sample_interval=0",
        "train.head_gradients=false", *extra])


@pytest.fixture(scope="module")
def root32(tmp_path_factory):
    from vidgan.data.synthetic import write_dataset
    base = tmp_path_factory.mktemp("latent_de")
    return write_dataset(base, per_class=2, n_frames=16, size=32)


def _weights(trainer):
    return {**{f"G.{k}": v for k, v in trainer.G.state_dict().items()},
            **{f"D.{k}": v for k, v in trainer.D.state_dict().items()},
            **{f"E.{k}": v for k, v in trainer.G_ema.state_dict().items()}}


@pytest.mark.parametrize("name", ["ucf101_tgan_ode", "ucf101_mocogan_ode", "ucf101_st4_ode"])
def test_shipped_ode_configs_train(tmp_path, root32, name):
    root = root32
    trainer = Trainer(_tiny(name, tmp_path / "run", root, "train.iterations=2"))
    before = {k: v.clone() for k, v in _dynamics(trainer.G).state_dict().items()}
    result = trainer.run()
    assert result.checkpoint.exists()
    after = _dynamics(trainer.G).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # f learns
    # the checkpoint draws clips twice its training length (the grid goes on past t = 1)
    from tests.test_generate import decode
    from vidgan import generate
    out = tmp_path / "gen"
    frames = 2 * trainer.cfg.model.n_frames
    assert generate.main(["--checkpoint", str(result.checkpoint), "--out", str(out), "--grid",
                          "1x2", "--frames", str(frames), "--device", "cpu"]) == 0
    assert len(decode(out / "grid.mp4")[0]) == frames


@pytest.mark.parametrize("name", ["ucf101_tgan_sde", "ucf101_mocogan_sde"])
def test_shipped_sde_configs_train_and_resume_bitwise(tmp_path, root32, name):
    """The Brownian increments come from the run's seeded generator: a run resumed at
    iteration 2 of 4 ends where the straight run ends."""
    root = root32
    straight = Trainer(_tiny(name, tmp_path / "a", root, "train.iterations=4"))
    straight.run()
    Trainer(_tiny(name, tmp_path / "b", root, "train.iterations=2")).run()
    resumed = Trainer(_tiny(name, tmp_path / "b", root, "train.iterations=4"), resume=True)
    assert resumed.step == 2
    resumed.run()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_keep_best_keeps_the_best_scored_state(tmp_path, synthetic_root, c3d_pt, capsys):
    """eval.keep_best: checkpoints/best.pt holds the state of the best in-training score so
    far (IS of a random-weight C3D: it varies from step to step); a resumed run keeps
    comparing against it, or against best.pt's when that is better."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidgan.checkpoint import list_checkpoints, load_checkpoint
    run = tmp_path / "run"
    common = [f"data.root={synthetic_root}", "eval.sample_interval=0", "eval.metrics=[is]",
              f"eval.c3d_weights={c3d_pt}", "eval.interval=1", "eval.n_samples=2",
              "eval.batch_size=2", "eval.keep_best=is", "train.checkpoint_interval=1",
              "train.keep_checkpoints=10"]
    Trainer(tiny_config(*common, f"train.out_dir={run}", "train.iterations=2")).run()
    events = EventAccumulator(str(run / "tb")).Reload()
    scores = {e.step: e.value for e in events.Scalars("eval/is")}
    assert sorted(scores) == [1, 2] and scores[1] != scores[2]
    step = max(sorted(scores), key=lambda s: scores[s])
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["step"] == step and best["best"]["step"] == step
    assert best["best"]["value"] == pytest.approx(scores[step], rel=1e-6)
    assert all(p.name != "best.pt" for p in list_checkpoints(run))  # never what --resume picks
    # a resumed run compares against best.pt's record when it beats the checkpoint's (as
    # when resumed from a checkpoint older than best.pt), else against the checkpoint's
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    better = {**best["best"], "value": best["best"]["value"] + 1.0}
    torch.save({**state, "best": better}, run / "checkpoints" / "best.pt")
    resumed = Trainer(tiny_config(*common, f"train.out_dir={run}", "train.iterations=3"),
                      resume=True)
    assert resumed.step == 2 and resumed.best == better
    worse = {**best["best"], "value": best["best"]["value"] - 1.0}
    torch.save({**state, "best": worse}, run / "checkpoints" / "best.pt")
    assert resumed.best_to_resume(best["best"]) == best["best"]
    torch.save(state, run / "checkpoints" / "best.pt")
    resumed.best = resumed.best_to_resume(best["best"])
    assert resumed.best == best["best"]
    resumed.run()  # the log keeps what was logged up to the checkpoint's step, that step too
    events = EventAccumulator(str(run / "tb")).Reload()
    after = {e.step: e.value for e in events.Scalars("eval/is")}
    assert sorted(after) == [1, 2, 3]
    assert all(after[s] == scores[s] for s in scores)
    # without the C3D weights IS is off, and the warning says no best.pt will be kept
    capsys.readouterr()
    Trainer(tiny_config(*common[:3], *common[4:], f"train.out_dir={tmp_path / 'none'}"))
    assert "eval.keep_best=is keeps no best.pt" in capsys.readouterr().out


def test_which_way_each_score_improves():
    """keep_best's comparison: distances, KLs and the shares of clips turned away are
    better lower; a ratio to the data's value nearer 1 (in log space); the rest higher;
    a class share or a spread across repeats cannot be kept."""
    from vidgan.config import score_order
    from vidgan.train.outputs import is_better
    for name in ("fid", "fvd2048_16f", "kvd", "modes_kl", "modes_shape_kl", "synthetic_kl",
                 "modes_invalid_still"):
        assert score_order(name) == "lower" and is_better(name, 1.0, 2.0), name
    for name in ("is", "modes_covered", "modes_valid", "modes_direction_read"):
        assert score_order(name) == "higher" and is_better(name, 2.0, 1.0), name
    assert is_better("synthetic_motion_ratio", 0.6, 2.0)  # |log 0.6| < |log 2|
    assert not is_better("synthetic_motion_ratio", 0.4, 2.0)
    assert not is_better("synthetic_motion_ratio", 0.0, 2.0)
    for name in ("synthetic_share_disc_vertical", "is_std"):
        assert score_order(name) is None
        with pytest.raises(ConfigError, match="no better direction"):
            load_config("demo", [f"eval.keep_best={name}", "eval.metrics=[synthetic,is]"])


@pytest.mark.parametrize("override,needle", [
    (["model.temporal=gru", "model.step_noise=true"], "model.step_noise"),
    (["model.latent_de=ode", "model.step_noise=true"], "model.step_noise"),
    (["model.de.order=2"], "model.de.order"),  # read only with model.latent_de
    (["model.latent_de=sde", "model.de.order=2"], "model.de.order=2"),
    (["model.latent_de=ode", "model.de.fcn=[16]"], "model.de.fcn"),
    (["model.latent_de=ode", "model.de.method=rk5"], "model.de.method"),
    (["model.temporal=tgan"], "model.n_frames=8"),
    (["eval.keep_best=fvd"], "eval.keep_best"),
])
def test_config_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        tiny_config(*override)


def test_cost_profile_runs_a_latent_ode_generator():
    """The solvers read time values, so the profile runs these configs on the CPU."""
    from vidgan.profile import profile_step
    ode = profile_step(tiny_config("model.latent_de=ode"))
    lstm = profile_step(tiny_config())
    assert ode["G"]["frames"] == lstm["G"]["frames"]
    # the same FC and level-1 blocks; rk4 evaluates f (a 3x3 conv, 8 -> 8 channels on the
    # 1x1 map: 576 MACs) 4 times per frame interval, 7 intervals; the ConvLSTM runs its two
    # 3x3 convs (8 -> 32 channels each: 2 x 2,304 MACs) at each of the 8 frames
    c = 8
    assert ode["G"]["macs"]["L1"] - lstm["G"]["macs"]["L1"] == 4 * 7 * c * c * 9 - 8 * 2 * c * 4 * c * 9
