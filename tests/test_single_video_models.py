"""TGAN and VGAN through vidgan's run: config, training step, resume, generation and
evaluation (model.family=tgan|vgan), at tiny widths on 32 px, 16-frame clips."""
import json

import pytest
import torch

from tests.conftest import tiny_config
from vidgan import evaluate, generate
from vidgan.checkpoint import load_checkpoint
from vidgan.config import ConfigError, load_config
from vidgan.models import build_discriminator, build_generator
from vidgan.train import Trainer

# tiny TGAN: the official layers at 1/16 of the widths, 32 px (one image deconvolution fewer)
TGAN = ["model.family=tgan", "model.resolution=32", "model.n_frames=16", "model.z_dim=8",
        "model.ch=32", "model.dis_ch=4", "loss.type=wgan", "loss.r1_weight=0",
        "train.optimizer=rmsprop", "train.lr=5e-5", "train.lr_decay_iterations=0",
        "train.d_constraint=svc", "train.ema_beta=0"]


@pytest.fixture(scope="module")
def root32(tmp_path_factory):
    from vidgan.data.synthetic import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synthetic32"), per_class=2, n_frames=16,
                         size=32)


def _tgan_is(ckpt, c3d, n_samples: int, capsys) -> float:
    """The C3D IS of ``ckpt`` by the evaluation CLI, TGAN's protocol, one repeat."""
    code = evaluate.main(["--checkpoint", str(ckpt), "--c3d-weights", str(c3d),
                          "--protocol", "tgan", "--metrics", "is", "--n-samples",
                          str(n_samples), "--repeats", "1", "--batch-size", "2",
                          "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(ckpt.with_name(f"{ckpt.stem}_eval_tgan.json").read_text())
    return record["scores"]["is"]["values"][0]


def _cfg(tmp_path, root, family, *extra):
    return tiny_config(*family, f"data.root={root}", "data.dataset=folder",
                       f"train.out_dir={tmp_path / 'run'}", "train.checkpoint_interval=1000",
                       "eval.sample_interval=1000", *extra)


def _shipped(name, tmp_path, root, *extra):
    """The shipped config ``name`` at tiny sizes (32 px, 16 frames, batch 4) on ``root``."""
    ch = {"ucf101_tgan.yaml": 32, "ucf101_vgan.yaml": 16}[name]
    return load_config(name, [
        "model.resolution=32", "model.n_frames=16", "model.z_dim=8", f"model.ch={ch}",
        "model.dis_ch=4", "train.batch_size=4", "data.dataset=folder", f"data.root={root}",
        "data.num_workers=0", f"train.out_dir={tmp_path / 'run'}", "train.device=cpu",
        "train.checkpoint_interval=1000", "train.log_interval=1", "eval.sample_interval=0",
        "eval.metrics=[]", *extra])


def _weights(trainer):
    return {**{f"G.{k}": v for k, v in trainer.G.state_dict().items()},
            **{f"D.{k}": v for k, v in trainer.D.state_dict().items()},
            **{f"E.{k}": v for k, v in trainer.G_ema.state_dict().items()},
            # the optimizer's state (RMSprop's square_avg, Adam's moments)
            **{f"oD.{k}.{name}": v for k, state in trainer.opt_D.state_dict()["state"].items()
               for name, v in state.items() if torch.is_tensor(v)}}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_ucf101_tgan_is_the_official_run():
    cfg = load_config("ucf101_tgan.yaml")
    m, t = cfg.model, cfg.train
    assert (m.family, m.resolution, m.n_frames, m.z_dim) == ("tgan", 64, 16, 100)
    assert (cfg.loss.type, cfg.loss.r1_weight) == ("wgan", 0.0)
    assert (t.optimizer, t.lr, t.lr_decay_iterations, t.batch_size) == ("rmsprop", 5e-5, 0, 32)
    assert (t.d_constraint, t.d_constraint_interval, t.step_order) == ("svc", 5, "g_first")
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert (n_params(G.temporal), n_params(G.image), n_params(D)) == \
        (825_444, 3_622_691, 11_032_385)


@pytest.mark.parametrize("override, needle", [
    (["model.n_frames=8"], "model.n_frames=8"),
    (["model.resolution=192"], "power of two"),
    (["model.temporal=gru"], "model.family=tganv2"),
    (["model.subsample=[2,2,2]"], "model.family=tganv2"),
])
def test_tgan_config_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config("ucf101_tgan.yaml", override)


@pytest.mark.parametrize("config, override, needle", [
    ("ucf101_vgan.yaml", ["model.n_frames=16"], "model.n_frames=16"),
    ("ucf101_vgan.yaml", ["loss.mask_weight=-1"], "loss.mask_weight=-1"),
    ("ucf101_st4.yaml", ["loss.mask_weight=0.5"], "model.family=vgan"),
    ("ucf101_st4.yaml", ["model.family=gan"], "tganv2, tgan, vgan"),
    ("ucf101_st4.yaml", ["model.init=paper"], "only model.family=tgan"),
    ("ucf101_vgan.yaml", ["model.init=paper"], "takes official"),
    ("ucf101_tgan.yaml", ["model.init=legacy"], "official or paper"),
    ("ucf101_st4.yaml", ["train.bn_scale_bound=paper"], "train.d_constraint=svc"),
])
def test_family_config_errors_name_the_key(config, override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(config, override)


def test_tgan_step_is_g_then_d_on_the_same_fakes(tmp_path, root32):
    """The official update_core: the G step through the D of before this iteration's update,
    then the D step on that very batch of fakes; D's BN statistics move once per batch
    judged (fake, then real), G's once."""
    trainer = Trainer(_cfg(tmp_path, root32, TGAN, "train.iterations=1"))
    seen = []
    before = [p.detach().clone() for p in trainer.D.parameters()]
    trainer.D.net.register_forward_hook(lambda mod, args, out: seen.append(
        (args[0].detach().clone(), [p.detach().clone() for p in mod.parameters()])))
    trainer.train_step(iter(trainer.loader))
    assert len(seen) == 3  # G step (fake), D step (real, fake)
    (g_fake, w1), (real, w2), (d_fake, w3) = seen
    torch.testing.assert_close(g_fake, d_fake, rtol=0, atol=0)
    assert not torch.equal(g_fake, real)
    for ws in (w1, w2, w3):  # all three judged by the D of before the update
        assert all(torch.equal(a, b) for a, b in zip(ws, before))
    assert not all(torch.equal(a, b) for a, b in zip(trainer.D.parameters(), before))
    for norm in trainer.D.net.norms:
        assert norm.bn.num_batches_tracked.item() == 2
    assert trainer.G.image.slow_norm.num_batches_tracked.item() == 1


def test_tgan_clips_after_the_d_step_of_iterations_5_and_10(tmp_path, root32):
    """TGANUpdaterWGANSVC(freq=5): the counter, incremented after the D step, is a multiple of
    5 after iterations 5, 10, ...: D's weights leave iterations 1-4 with some spectral norm
    above 1 and iteration 5 with none; iteration 6's G step judges with that clipped D."""
    trainer = Trainer(_cfg(tmp_path, root32, TGAN, "train.d_constraint_interval=5",
                           "train.lr=1e-3"))
    batches = iter(trainer.loader)

    def largest_norm():
        return max(torch.linalg.matrix_norm(p.detach().flatten(1), ord=2).item()
                   for p in trainer.D.parameters() if p.dim() >= 4)
    norms = []
    for _ in range(5):
        trainer.train_step(batches)
        norms.append(largest_norm())
    assert min(norms[:4]) > 1.01 and norms[4] <= 1 + 1e-5
    clipped = [p.detach().clone() for p in trainer.D.parameters()]
    seen = []
    trainer.D.net.register_forward_pre_hook(lambda mod, args: seen.append(
        [p.detach().clone() for p in mod.parameters()]))
    trainer.train_step(batches)
    assert all(torch.equal(a, b) for a, b in zip(seen[0], clipped))
    assert largest_norm() > 1.0  # iteration 6's D step moves D again, unclipped until 10


def test_ucf101_tgan_trains_and_resumes_bitwise(tmp_path, root32, capsys):
    extra = ["train.d_constraint_interval=2"]  # clipping at iterations 2 and 4
    name = "ucf101_tgan.yaml"
    straight = Trainer(_shipped(name, tmp_path / "a", root32, "train.iterations=4", *extra))
    straight.run()
    Trainer(_shipped(name, tmp_path / "b", root32, "train.iterations=2", *extra)).run()
    resumed = Trainer(_shipped(name, tmp_path / "b", root32, "train.iterations=4", *extra),
                      resume=True)
    assert resumed.step == 2
    result = resumed.run()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and any(k.startswith("oD.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the generator moved, and SVC ran last at iteration 4: every D weight's spectral norm <= 1
    init = _weights(Trainer(_shipped(name, tmp_path / "c", root32)))
    assert not torch.equal(init["G.temporal.deconvs.0.weight"], a["G.temporal.deconvs.0.weight"])
    for conv in straight.D.net.convs:
        assert torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2) <= 1 + 1e-5
    # the checkpoint samples: a grid through the generation CLI
    out = tmp_path / "gen"
    assert generate.main(["--checkpoint", str(result.checkpoint), "--out", str(out),
                          "--grid", "2x2", "--device", "cpu"]) == 0
    assert (out / "grid.mp4").stat().st_size > 0
    # what needs a TGANv2 generator is refused in one line naming the family
    capsys.readouterr()
    for layout in (["--content-motion", "2x2"], ["--memory-slots", "2"]):
        assert generate.main(["--checkpoint", str(result.checkpoint), "--out", str(out),
                              *layout]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1
    state = load_checkpoint(result.checkpoint)
    assert state["config"]["model"]["family"] == "tgan"


def test_tgan_checkpoint_evaluates_with_the_tgan_protocol(tmp_path, root32, c3d_pt,
                                                          capsys):
    """The C3D inception score as TGAN reported it (protocol tgan), on a random-weight C3D:
    the clips go through the metric unchanged (16 frames, upscaled to C3D's input)."""
    cfg = _cfg(tmp_path, root32, TGAN, "train.iterations=1")
    ckpt = Trainer(cfg).run().checkpoint
    assert 1.0 <= _tgan_is(ckpt, c3d_pt, 4, capsys) <= 4.0


# ---------------------------------------------------------------------------------- VGAN
VGAN = ["model.family=vgan", "model.resolution=32", "model.n_frames=16", "model.z_dim=8",
        "model.ch=16", "model.dis_ch=4", "loss.r1_weight=0", "loss.mask_weight=0.1",
        "train.betas=[0.5,0.999]", "train.lr=2e-4", "train.adam_eps=1e-8",
        "train.lr_decay_iterations=0", "train.step_order=d_first", "train.ema_beta=0"]


def test_ucf101_vgan_is_the_official_model():
    cfg = load_config("ucf101_vgan.yaml")
    m, t = cfg.model, cfg.train
    assert (m.family, m.resolution, m.n_frames, m.z_dim) == ("vgan", 64, 32, 100)
    assert (cfg.loss.type, cfg.loss.mask_weight, cfg.loss.r1_weight) == ("logistic", 0.1, 0.0)
    assert (t.lr, list(t.betas), t.batch_size, t.step_order) == (2e-4, [0.5, 0.999], 64,
                                                                 "d_first")
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    # the official main.lua's networks, counted layer by layer (docs/FIDELITY.md, VGAN)
    assert (n_params(G.trunk), n_params(G.foreground), n_params(G.mask),
            n_params(G.background), n_params(D)) == \
        (12_651_328, 12_291, 4_097, 3_577_667, 11_057_858)
    # official weights_init: (de)convolutions N(0, 0.01) and zero bias, BN gamma N(1, 0.02)
    convs = [mod for mod in (*G.modules(), *D.modules())
             if isinstance(mod, (torch.nn.ConvTranspose3d, torch.nn.ConvTranspose2d,
                                 torch.nn.Conv3d))]
    assert len(convs) == 16
    for conv in convs:
        if conv.weight.numel() > 10_000:
            assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
            assert abs(conv.weight.mean().item()) < 1e-3
        assert conv.bias.abs().max() == 0
    gammas = torch.cat([mod.weight for mod in (*G.modules(), *D.modules())
                        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.002)
    assert gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert [mod.eps for mod in D.net.norms] == [1e-3] * 3


def test_vgan_losses_are_the_official_criterion_and_mask_prior(tmp_path, root32):
    """D's one logit is logit_real - logit_fake of its two outputs, so the logistic losses equal
    the official 2-way CrossEntropyCriterion; G's mask prior is lambda * mean(m) (L1Penalty with
    sizeAverage), in the G phase only."""
    from torch.nn import functional as F
    trainer = Trainer(_cfg(tmp_path, root32, VGAN, "train.iterations=1"))
    G, D, loss = trainer.G, trainer.D, trainer.loss
    torch.manual_seed(1)
    result = loss.generator(4, None)
    f, m, b = G.streams(result.fakes.z)
    torch.testing.assert_close(result.terms["G_mask"], 0.1 * m.mean())
    video = result.fakes.videos[0]
    h = video
    net = D.net
    h = F.leaky_relu(net.convs[0](h), 0.2)
    for conv, norm in zip(net.convs[1:], net.norms):
        h = F.leaky_relu(norm(conv(h)), 0.2)
    two = net.classify(h).flatten(1)
    real_label = torch.zeros(4, dtype=torch.long)  # official real_label 1 (Lua), the first logit
    torch.testing.assert_close(result.terms["G_main"], F.cross_entropy(two, real_label))
    d = loss.discriminator(video, None, r1=False)
    assert "D_mask" not in d.terms and set(d.terms) == {"D_main"}


def test_mask_norm_sum_is_the_papers_l1_norm_per_clip():
    """loss.mask_norm=sum: ||m||_1 of each clip (VGAN §2.2 as written), averaged over the
    batch: T x H x W times the official mean for a mask of one channel."""
    from vidgan.train.loss import mask_sparsity
    mask = torch.rand(3, 1, 4, 5, 6)
    per_clip = torch.stack([m.abs().sum() for m in mask])
    torch.testing.assert_close(mask_sparsity(mask, "sum"), per_clip.mean())
    torch.testing.assert_close(mask_sparsity(mask, "sum"), 120 * mask_sparsity(mask, "mean"))
    with pytest.raises(ValueError, match="mask_norm"):
        mask_sparsity(mask, "max")


def test_ucf101_vgan_trains_and_resumes_bitwise(tmp_path, root32):
    name = "ucf101_vgan.yaml"
    straight = Trainer(_shipped(name, tmp_path / "a", root32, "train.iterations=4"))
    straight.run()
    Trainer(_shipped(name, tmp_path / "b", root32, "train.iterations=2")).run()
    resumed = Trainer(_shipped(name, tmp_path / "b", root32, "train.iterations=4"),
                      resume=True)
    resumed.run()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    init = _weights(Trainer(_shipped(name, tmp_path / "c", root32)))
    assert not torch.equal(init["G.mask.weight"], a["G.mask.weight"])


def test_vgan_32_frames_evaluate_on_their_first_16(tmp_path, c3d_pt, capsys):
    """The C3D score of a 32-frame VGAN (64 px) takes frames 1-16 of each clip."""
    from vidgan.data.synthetic import write_dataset
    root = write_dataset(tmp_path / "data", per_class=1, n_frames=32, size=64)
    cfg = _cfg(tmp_path, root, VGAN, "model.resolution=64", "model.n_frames=32",
               "train.iterations=1", "train.batch_size=2")
    ckpt = Trainer(cfg).run().checkpoint
    assert 1.0 <= _tgan_is(ckpt, c3d_pt, 2, capsys) <= 2.0


@pytest.mark.parametrize("config, params", [("ucf101_tgan.yaml", (4_448_135, 11_032_385)),
                                            ("ucf101_vgan.yaml", (16_245_383, 11_057_858))])
def test_cost_profile_counts_one_clip(config, params):
    """vidgan.profile at batch 1: the whole generator is its one level. TGAN's D: the MACs of
    its five convolutions written out (4x4x4 kernels, stride 2, 64 px, 16 frames)."""
    from vidgan.profile import profile_step
    result = profile_step(load_config(config))
    assert (result["params"]["G"], result["params"]["D"]) == params
    assert set(result["G"]["macs"]) <= {"L1", "other"} and result["G"]["macs"]["L1"] > 0
    if config == "ucf101_tgan.yaml":
        shapes = [(3, 64, 16, 64), (64, 128, 8, 32), (128, 256, 4, 16), (256, 512, 2, 8)]
        convs = sum(o * (t // 2) * (s // 2) ** 2 * i * 64 for i, o, t, s in shapes)
        assert result["D"]["macs"]["video"] == convs + 512 * 16  # + c4 on the 4x4 map
