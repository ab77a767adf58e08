"""TGAN's networks as the official code's UCF101 run builds them (TGAN Table 1)."""
import math

import pytest
import torch

from vidgan.models.tgan import TGAN_FRAMES, TGANDiscriminator, TGANGenerator


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    return TGANGenerator(z_dim=100, ch=512), TGANDiscriminator(ch=64)


def test_parameter_counts_are_the_official_models(official):
    G, D = official
    assert n_params(G.temporal) == 825_444  # fsgen
    assert n_params(G.image) == 3_622_691  # vgen
    assert n_params(D) == 11_032_385  # vdis without its unused bn0 (64)


def test_initialisers_are_the_official_ones(official):
    G, D = official
    # Chainer's default, LeCun normal over fan_in = prod(W.shape[1:]): for a deconvolution
    # (in, out, k) that is out * k (fsgen dc1: 256 * 4 -> std 1/32)
    for deconv in G.temporal.deconvs:
        fan_in = deconv.weight[0].numel()
        assert deconv.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)
        assert deconv.bias.abs().max() == 0
    assert G.temporal.deconvs[1].weight.std().item() == pytest.approx(1 / 32, rel=0.05)
    for conv in (*D.convs, D.score):
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.1)
    # the image generator: U(-0.01, 0.01), std 0.01 / sqrt(3); BN gamma 1, beta 0
    for layer in (G.image.slow, G.image.fast, *G.image.deconvs, G.image.to_rgb):
        w = layer.weight
        assert w.abs().max() <= 0.01 and w.std().item() == pytest.approx(0.01 / math.sqrt(3),
                                                                         rel=0.05)
    assert G.image.to_rgb.bias.abs().max() == 0
    bn = G.image.norms[0]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    # BN without beta: a scale and no shift
    assert [name for name, _ in D.norms[0].named_parameters()] == ["gamma"]


def test_shapes_and_ranges():
    torch.manual_seed(0)
    G, D = TGANGenerator(z_dim=8, ch=32), TGANDiscriminator(ch=4)
    z = G.sample_z(3, torch.Generator().manual_seed(1))
    assert z.shape == (3, 8) and z.min() >= -1 and z.max() <= 1
    z1 = G.temporal(z)
    assert z1.shape == (3, 8, TGAN_FRAMES) and z1.abs().max() <= 1
    videos = G(z)
    assert isinstance(videos, list) and videos[0].shape == (3, 3, 16, 64, 64)
    assert D(videos[0]).shape == (3,)
    G.eval()
    clip = G(z)
    assert clip.shape == (3, 3, 16, 64, 64) and clip.abs().max() <= 1
    with pytest.raises(ValueError, match="16 frames"):
        G(z, n_frames=8)


def test_every_frame_shares_z0_and_takes_its_own_z1():
    """TGAN Eq. (3): frame t is G_1(z_0, z_1^t). Frames drawn one at a time through the image
    generator (in eval mode, so BN uses its running statistics) equal the clip's frames."""
    torch.manual_seed(0)
    G = TGANGenerator(z_dim=8, ch=32).eval()
    z0 = G.sample_z(2)
    clip = G(z0)
    z1 = G.temporal(z0)
    for t in (0, 7, 15):
        frame = G.image(z0, z1[:, :, t])
        torch.testing.assert_close(frame, clip[:, :, t])


def test_the_image_generator_normalises_over_all_frames_of_the_batch():
    """The official code renders B * 16 frames in one call: BN's statistics are over those
    B * 16 rows, where z_0's are B distinct values each repeated 16 times."""
    torch.manual_seed(0)
    G = TGANGenerator(z_dim=8, ch=32)
    z0 = G.sample_z(2)
    G(z0)
    rows = G.image.slow(z0.repeat_interleave(TGAN_FRAMES, dim=0)).detach()  # (32, 256)
    bn = G.image.slow_norm
    torch.testing.assert_close(bn.running_mean, 0.1 * rows.mean(0))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * rows.var(0, unbiased=True))


def test_the_papers_henormal_init_is_sqrt2_times_the_official_std():
    """model.init=paper (TGAN §6, HeNormal): the temporal generator's and D's weights at
    sqrt(2)/sqrt(fan_in), the same fan_in as Chainer's default; the image generator keeps
    U(-0.01, 0.01)."""
    torch.manual_seed(0)
    G, D = TGANGenerator(z_dim=100, ch=512, init="paper"), TGANDiscriminator(ch=64, init="paper")
    for layer in (*G.temporal.deconvs, *D.convs, D.score):
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)
        assert layer.bias.abs().max() == 0
    assert G.image.slow.weight.abs().max() <= 0.01
    with pytest.raises(ValueError, match="official or paper"):
        TGANDiscriminator(ch=4, init="legacy")
