"""Discriminator heads (models/discriminator.py): the 2D frame head (MoCoGAN's D_I, tgan2
§5.3 "3D+2D") beside the 3D level heads, and R1 over every head (Eq. 10)."""
import pytest
import torch

from tests.conftest import tiny_config
from vidgan.models import build_discriminator, build_generator
from vidgan.train.loss import GANLoss

FRAME = ["model.frame_discriminator=resnet2d", "model.subsample=[1,1,1]"]


def _frames_seen(D):
    """Record every batch of frames the frame head's 2D ResNet receives."""
    seen = []
    D.frame.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    return seen


def _index_video(b, t, size, level):
    """(b, 3, t, size, size) whose frame i holds the constant level * 100 + i."""
    stamp = level * 100 + torch.arange(t, dtype=torch.float32)
    return stamp.view(1, 1, t, 1, 1).expand(b, 3, t, size, size).contiguous()


@pytest.mark.parametrize("level, k", [(4, 1), (4, 3), (2, 2)])
def test_frame_head_sees_k_distinct_frames_of_its_level(level, k):
    cfg = tiny_config(*FRAME, f"model.frame_level={level}", f"model.frames_per_video={k}")
    D = build_discriminator(cfg)
    seen = _frames_seen(D)
    videos = [_index_video(5, 8, 8 * 2 ** i, i + 1) for i in range(4)]
    logits = D(videos)
    assert set(logits) == {"L1", "L2", "L3", "L4", "frame"} and logits["frame"].shape == (5,)
    (frames,) = seen
    size = 8 * 2 ** (level - 1)
    assert frames.shape == (5 * k, 3, size, size)
    stamps = frames[:, 0, 0, 0].view(5, k)  # video-major
    assert ((stamps // 100) == level).all()  # frames of the right level
    for row in stamps:
        assert len(set(row.tolist())) == k  # k distinct frames per video


def test_real_and_fake_frames_follow_one_uniform_draw():
    """In a D step the frame head judges real and fake videos alike: the same number of frames
    of the same level, drawn by the same rule, uniform over the frames of a video."""
    cfg = tiny_config(*FRAME)
    G, D = build_generator(cfg).train(), build_discriminator(cfg)
    seen = _frames_seen(D)
    real = _index_video(4, 8, 64, 0) / 8 - 1  # in [-1, 1); frame i = i/8 - 1
    GANLoss(G, D, cfg.loss).discriminator(real, None)
    assert [x.shape for x in seen] == [(4, 3, 64, 64)] * 2  # real, then fake
    counts = torch.zeros(8)
    for _ in range(400):
        seen.clear()
        D.frame(real.repeat(4, 1, 1, 1, 1))
        counts += torch.bincount(((seen[0][:, 0, 0, 0] + 1) * 8).round().long(), minlength=8)
    expected = counts.sum() / 8  # 800 per frame
    assert ((counts - expected).abs() < 5 * expected.sqrt()).all(), counts


def test_r1_is_the_sum_of_every_heads_own_gradient_norm():
    """Eq. (10) over heads: the frame head judges the same level-4 video as the 3D head L4, yet
    R1 is ||grad D_L4||^2 + ||grad D_frame||^2 (+ the other levels), not the norm of the
    summed gradient."""
    cfg = tiny_config(*FRAME, "model.frames_per_video=2")
    torch.manual_seed(0)
    G, D = build_generator(cfg).train(), build_discriminator(cfg)
    real = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    torch.manual_seed(1)
    r1 = GANLoss(G, D, cfg.loss).discriminator(real, None).stats["loss/R1"]
    # the same draws again, by hand: every head's gradient on its own
    torch.manual_seed(1)
    from vidgan.models.subsample import real_targets
    with torch.no_grad():
        G(G.sample_z(2))
    targets = real_targets(real, cfg.model.subsample, cfg.model.dis_levels)
    norms = {}
    for name, x in D.head_inputs(targets).items():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D.head(name)(x).sum(), x)
        norms[name] = float(g.pow(2).sum())
    assert norms["frame"] > 0
    assert float(r1.detach()) == pytest.approx(sum(norms.values()), rel=1e-4)


def test_frames_per_video_is_checked_against_the_level():
    from vidgan.config import ConfigError
    with pytest.raises(ConfigError, match=r"frames_per_video=2: level 4 has 1 frame"):
        tiny_config("model.frame_discriminator=resnet2d", "model.frames_per_video=2")
    with pytest.raises(ConfigError, match="frame_level=2"):
        tiny_config("model.frame_discriminator=resnet2d", "model.dis_levels=[3,4]",
                    "model.frame_level=2")


# ------------------------------------------------------------------- memory head
MEMORY = ["model.frame_discriminator=memory", "model.memory.slots=32", "model.memory.key_dim=8",
          "model.memory.topk=4"]


def test_memory_head_logit_is_the_clipped_log_odds_of_p_averaged_over_frames():
    """memoryGAN §3.1.1, with model.memory.clip: each frame's logit is logit(clip(p, 1e-3,
    1 - 1e-3)), so softplus(-logit) = -log p; a video's logit is the mean over its frames."""
    cfg = tiny_config(*MEMORY, "model.subsample=[1,1,1]", "model.frames_per_video=8",
                      "model.memory.clip=true", "model.memory.g_step_write=false")
    D = build_discriminator(cfg)
    memory = D.frame.memory
    torch.manual_seed(0)
    memory.keys.copy_(torch.nn.functional.normalize(torch.randn(32, 8), dim=1))
    memory.hist.uniform_(0.5, 2.0)
    video = torch.rand(3, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        logits, aux = D.frame(video)  # all 8 frames, in a random order: the mean does not care
    frames = video.transpose(1, 2).flatten(0, 1)  # (24, 3, 64, 64)
    with torch.no_grad():
        p = memory(D.frame.queries(frames))
    assert 0 < float(p.min()) and float(p.max()) < 1  # a mixed read, not a clipped one
    expected = torch.logit(p.clamp(1e-3, 1 - 1e-3)).view(3, 8).mean(dim=1)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert aux["q"].shape == (24, 8) and aux["p"].shape == (24,)
    one = torch.logit(p[:1].clamp(1e-3, 1 - 1e-3))
    torch.testing.assert_close(torch.nn.functional.softplus(-one), -torch.log(p[:1]))
    # the memory is D's state, not a trainable part of it
    assert not any(n.startswith("frame.memory") for n, _ in D.named_parameters())
    assert {"frame.memory.keys", "frame.memory.values", "frame.memory.ages",
            "frame.memory.hist"} <= set(D.state_dict())


# ------------------------------------------------------------------ minibatch std (option)
def test_minibatch_std_is_the_mean_over_features_of_each_groups_std():
    from vidgan.models.discriminator import minibatch_std
    h = torch.randn(12, 5, dtype=torch.float64)
    for group, g in [(4, 4), (5, 4), (8, 6), (1, 1), (20, 12)]:  # g: largest divisor of 12
        out = minibatch_std(h, group)
        m = 12 // g
        for i in range(12):
            members = h[[i % m + k * m for k in range(g)]]  # samples i % M, + M, + 2M, ...
            want = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            assert float(out[i, 0]) == pytest.approx(float(want), rel=1e-9)


def test_minibatch_std_makes_a_head_see_the_batch_and_is_off_by_default():
    plain = build_discriminator(tiny_config().model)
    on = build_discriminator(tiny_config("model.minibatch_std=4", *FRAME).model)
    # off: the paper's D, with the state-dict shapes of old checkpoints
    assert plain.discriminators[0].fc.in_features == 16 * tiny_config().model.dis_ch
    assert on.discriminators[0].fc.in_features == plain.discriminators[0].fc.in_features + 1
    assert on.frame.net.fc.in_features == on.discriminators[0].fc.in_features
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 64, 64)
    same = x[:1].expand(4, -1, -1, -1, -1)
    head_off, head_on = plain.discriminators[3], on.discriminators[3]
    # without it, a clip's logit does not depend on the others in its batch
    assert torch.allclose(head_off(x)[0], head_off(same)[0], atol=1e-6)
    # with it, the same clip scores differently among copies of itself than among others:
    # by the std entry's weight times the difference of the two batches' stds
    with torch.no_grad():
        head_on.fc.weight[0, -1] = 10.0
    gap = head_on(x)[0] - head_on(same)[0]
    assert float(gap.detach()) > 1e-3
    with pytest.raises(Exception, match="model.minibatch_std"):
        tiny_config("model.minibatch_std=-1")
