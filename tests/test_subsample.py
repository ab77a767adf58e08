import math

import pytest
import torch

from tests.conftest import tiny_config
from vidgan.config import n_frames_after
from vidgan.models.subsample import real_targets
from vidgan.models import build_discriminator, build_generator
from vidgan.models.subsample import FrameSubsampler, draw_offset


@pytest.mark.parametrize("s_t", [1, 2, 4])
@pytest.mark.parametrize("T", [16, 8, 5])
def test_level_shapes(s_t, T):
    cfg = tiny_config(f"model.n_frames={T}", f"model.subsample=[{s_t},{s_t},{s_t}]")
    G = build_generator(cfg).train()
    videos = G(G.sample_z(2))
    expected_T = n_frames_after(T, [s_t] * 3)
    assert [tuple(v.shape) for v in videos] == [
        (2, 3, t, 8 * 2 ** i, 8 * 2 ** i) for i, t in enumerate(expected_T)]
    real = torch.rand(2, 3, T, 64, 64) * 2 - 1
    targets = real_targets(real, cfg.model.subsample, cfg.model.dis_levels)
    assert [t.shape for t in targets] == [v.shape for v in videos]
    logits = build_discriminator(cfg)(videos)
    assert {k: tuple(l.shape) for k, l in logits.items()} == {f"L{l}": (2,) for l in range(1, 5)}


@pytest.mark.parametrize("T, s_t, expected", [
    (16, 2, [16, 8, 4, 2]), (16, 4, [16, 4, 1, 1]), (16, 1, [16] * 4),
    (5, 2, [5, 3, 2, 1]), (5, 4, [5, 2, 1, 1]), (8, 4, [8, 2, 1, 1])])
def test_frame_counts_are_ceil(T, s_t, expected):
    assert n_frames_after(T, [s_t] * 3) == expected  # paper §5.4.1: s_t=4 -> [16, 4, 1, 1]
    for t_in, t_out in zip(expected[:-1], expected[1:]):
        assert t_out == math.ceil(t_in / s_t)


def test_subsampler_keeps_t_times_s_plus_b():
    x = torch.arange(7).view(1, 7, 1).expand(3, 7, 2)  # (B, T, C): frame index as value
    assert FrameSubsampler(2)(torch.arange(8).view(1, 8), 1).shape == (1, 4)
    seen = set()
    for _ in range(200):
        out = FrameSubsampler(3)(x, time_dim=1)
        b = int(out[0, 0, 0])
        # Eq. (9): tau = t*s_t + b_t for t < ceil(7/3); past the end -> the last frame
        assert out[0, :, 0].tolist() == [min(t * 3 + b, 6) for t in range(3)]
        seen.add(b)
    assert seen == {0, 1, 2}


def test_batch_subsampling_keeps_every_second_sample():
    x = torch.arange(5).view(5, 1, 1).expand(5, 4, 1)
    out = FrameSubsampler(2, batch_stride=2)(x, time_dim=1)
    assert out[:, 0, 0].tolist() == [0, 2, 4] and out.shape[1] == 2


@pytest.mark.parametrize("s_t, T", [(4, 16), (4, 1), (4, 2), (2, 5), (3, 3)])
def test_offsets_uniform(s_t, T):
    """Chi-square test that b_t ~ U{0..min(s_t, T)-1} (Eq. 9); never outside that range."""
    n, k = 6000, min(s_t, T)
    g = torch.Generator().manual_seed(123)
    counts = torch.bincount(torch.tensor([draw_offset(s_t, T, g) for _ in range(n)]),
                            minlength=k)
    assert counts.numel() == k  # no offset >= min(s_t, T): no level is ever empty
    expected = n / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 99.9% quantiles of chi-square with k-1 degrees of freedom for k <= 4
    assert chi2 < {1: 1e-9, 2: 10.83, 3: 13.82, 4: 16.27}[k]


def test_real_targets_pool_and_subsample():
    T = 16
    frame_id = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1)
    video = frame_id.expand(2, 3, T, 64, 64).contiguous()
    targets = real_targets(video, [2, 2, 2], [1, 2, 3, 4])
    assert [tuple(t.shape[2:]) for t in targets] == [(16, 8, 8), (8, 16, 16), (4, 32, 32),
                                                     (2, 64, 64)]
    ids = targets[3][0, 0, :, 0, 0].tolist()
    assert ids[1] - ids[0] == 8  # three layers of s_t=2 keep every 8th frame
    # spatial average pooling by 8 / 4 / 2 (level 1..3)
    img = torch.rand(1, 3, 1, 64, 64)
    t1 = real_targets(img, [1, 1, 1], [1, 4])[0]
    assert torch.allclose(t1, img.view(1, 3, 1, 8, 8, 8, 8).mean(dim=(4, 6)), atol=1e-6)


def test_real_clips_draw_their_offsets_per_example():
    """The official MultiLevelDataset subsamples each clip on its own: clip i's level-2 frames
    are tau = t * s_t + b_i (Eq. 9) with b_i ~ U{0..s_t-1} of its own; levels chain."""
    torch.manual_seed(0)
    T, s, n = 16, 4, 64
    video = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1).expand(n, 3, T, 8, 8)
    level2, level3 = real_targets(video.contiguous(), [s, s, s], [1, 2, 3, 4])[1:3]
    frames = level2[:, 0, :, 0, 0]  # (n, 4) frame ids, after the level's 4x4 pooling
    offsets = frames[:, 0]
    assert torch.equal(frames, offsets[:, None] + s * torch.arange(T // s))
    assert set(offsets.tolist()) == {0.0, 1.0, 2.0, 3.0}  # 64 clips: every offset occurs
    # level 3: one frame of each clip's level 2, at its own offset
    assert len(set(level3[:, 0, 0, 0, 0].tolist())) > s
    assert all(f in frames[i].tolist() for i, f in enumerate(level3[:, 0, 0, 0, 0].tolist()))


def test_batch_subsampling_through_generator_and_discriminator():
    cfg = tiny_config("model.subsample_batch=true", "loss.combine=mean", "model.n_classes=3")
    G, D = build_generator(cfg).train(), build_discriminator(cfg)
    y = torch.tensor([0, 1, 2, 0])
    videos = G(G.sample_z(4), y)
    assert [v.shape[0] for v in videos] == [4, 2, 1, 1]
    real = real_targets(torch.rand(4, 3, 8, 64, 64), cfg.model.subsample, cfg.model.dis_levels,
                        batch_stride=2)
    assert [r.shape for r in real] == [v.shape for v in videos]
    assert [tuple(l.shape) for l in D(videos, y).values()] == [(4,), (2,), (1,), (1,)]
