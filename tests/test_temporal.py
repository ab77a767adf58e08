"""Temporal generators (models/temporal.py): MoCoGAN's content + GRU motion (mocogan §3,
Eq. 3-4, official code) beside TGANv2's ConvLSTM, both feeding the same image generator."""
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import tiny_config
from vidgan.config import n_frames_after
from vidgan.generate import content_motion_latents
from vidgan.models import build_generator

GRU = ["model.temporal=gru", "model.content_dim=6", "model.motion_dim=4"]


def _gru(*extra):
    return build_generator(tiny_config(*GRU, *extra))


def _trained_bn(G):
    """One training pass so eval-mode BN uses real running statistics, and a bigger FC so
    frames depend visibly on their codes (a fresh tiny generator renders near-uniform grey)."""
    with torch.no_grad():
        G.temporal.fc.weight.mul_(8)
    G.train()(G.sample_z(4), torch.tensor([0, 1, 2, 0]) if G.n_classes else None)
    return G.eval()


@pytest.mark.parametrize("s_t", [1, 2, 4])
def test_level_shapes_match_the_convlstm_generator(s_t):
    extra = [f"model.subsample=[{s_t},{s_t},{s_t}]"]
    gru, lstm = _gru(*extra).train(), build_generator(tiny_config(*extra)).train()
    frames = n_frames_after(8, [s_t] * 3)
    for G in (gru, lstm):
        videos = G(G.sample_z(2))
        assert [tuple(v.shape) for v in videos] == [
            (2, 3, t, 8 * 2 ** i, 8 * 2 ** i) for i, t in enumerate(frames)]
    # the same first feature map, so the image generator is shared unchanged
    assert gru.levels[0][0].b1.norm.num_features == lstm.levels[0][0].b1.norm.num_features


def test_latent_is_content_h0_and_per_frame_noise():
    G = _gru()
    z = G.sample_z(4096, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4096, 6 + 4 * (1 + 8)) == (4096, G.z_dim)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.01  # N(0, I)
    # a longer draw starts with the shorter one: rollouts extend the same video
    long = G.sample_z(4096, generator=torch.Generator().manual_seed(0), n_frames=16)
    assert long.shape[1] == 6 + 4 * 17 and torch.equal(long[:, :z.shape[1]], z)


def test_frame_codes_follow_mocogan_eq3_and_the_official_gru():
    """Frame t is FC([z_C, one-hot y, h_t]) with h_t = GRUCell(eps_t, h_{t-1}); h_0 only
    starts the recurrence (the official code drops it)."""
    G = _gru("model.n_classes=3")
    temporal = G.temporal
    z = G.sample_z(2)
    y = F.one_hot(torch.tensor([2, 0]), 3).float()
    maps = temporal(z, 8, y)  # (B, C, T, h0, w0)
    content, h, eps = z[:, :6], z[:, 6:10], z[:, 10:].view(2, 8, 4)
    for t in range(8):
        h = temporal.gru(eps[:, t], h)
        expected = temporal.fc(torch.cat([content, y, h], dim=1)).view(2, -1, 1, 1)
        torch.testing.assert_close(maps[:, :, t], expected)
    assert not torch.allclose(temporal.motion_codes(z[:, 6:], 8)[:, 0], z[:, 6:10])


def test_rollout_to_twice_t_extends_the_video_and_same_seed_same_clip():
    G = _trained_bn(_gru())
    with torch.no_grad():
        short = G(G.sample_z(2, generator=torch.Generator().manual_seed(3)))
        z_long = G.sample_z(2, generator=torch.Generator().manual_seed(3), n_frames=16)
        long = G(z_long, n_frames=16)
        again = G(G.sample_z(2, generator=torch.Generator().manual_seed(3), n_frames=16),
                  n_frames=16)
        other = G(G.sample_z(2, generator=torch.Generator().manual_seed(4), n_frames=16),
                  n_frames=16)
    assert long.shape == (2, 3, 16, 64, 64)
    torch.testing.assert_close(long[:, :, :8], short)
    assert torch.equal(long, again) and not torch.allclose(long, other)
    # frames past T are new frames, not a copy of the last one
    assert not torch.allclose(long[:, :, 8:], long[:, :, 7:8].expand_as(long[:, :, 8:]))


def test_a_latent_too_short_for_the_rollout_is_a_clear_error():
    G = _gru().eval()
    with pytest.raises(ValueError, match=r"holds noise for 8 frames, 12 asked.*n_frames=12"):
        G(G.sample_z(1), n_frames=12)


def test_content_and_motion_are_separate_factors():
    """mocogan Fig. 1: a row keeps its content code, a column its motion sequence; fixing one
    and changing the other changes the frames."""
    torch.manual_seed(0)  # a random tiny G: 2 of 20 seeds render near-constant frames
    G = _trained_bn(_gru())
    z, _ = content_motion_latents(G, rows=2, cols=3, seed=0)  # row-major (2 x 3)
    content, motion = G.temporal.split(z)
    codes = G.temporal.motion_codes(motion, 8)  # (6, T, dM)
    with torch.no_grad():
        videos = G(z).view(2, 3, 3, 8, 64, 64)
    for r in range(2):
        for c in range(3):
            i = 3 * r + c
            assert torch.equal(content[i], content[3 * r])  # same content along a row
            assert torch.equal(codes[i], codes[c])  # same motion down a column
    assert not torch.equal(content[0], content[3]) and not torch.allclose(codes[0], codes[1])
    # same content, new motion: frames differ; same motion, new content: frames differ
    assert (videos[0, 0] - videos[0, 1]).abs().mean() > 1e-3
    assert (videos[0, 0] - videos[1, 0]).abs().mean() > 1e-3
    # and the content code alone does not move: with one motion the frames still change in t
    assert (videos[0, 0, :, 1:] - videos[0, 0, :, :-1]).abs().mean() > 1e-4
