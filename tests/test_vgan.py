"""VGAN's networks as the official Torch7 code builds them (VGAN §2, Fig. 1)."""
import pytest
import torch

from vidgan.models.vgan import VGANDiscriminator, VGANGenerator, n_upsamplings


def test_vgan_video_is_the_masked_sum_of_its_streams():
    """VGAN Eq. (2): G(z) = m(z) * f(z) + (1 - m(z)) * b(z), b the same image at every frame;
    in eval mode a metric may ask for the first 16 of its 32 frames."""
    torch.manual_seed(0)
    G = VGANGenerator(z_dim=8, ch=16, resolution=64).eval()
    z = G.sample_z(2)
    video = G(z)
    assert video.shape == (2, 3, 32, 64, 64)
    f, m, b = G.streams(z)
    assert m.shape == (2, 1, 32, 64, 64) and 0 < m.min() and m.max() < 1
    for t in (0, 13, 31):
        torch.testing.assert_close(video[:, :, t], m[:, :, t] * f[:, :, t] + (1 - m[:, :, t]) * b)
    torch.testing.assert_close(G(z, n_frames=16), video[:, :, :16])
    with pytest.raises(ValueError, match="32 frames"):
        G(z, n_frames=33)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_sizes_follow_the_resolution(resolution):
    """T = H / 2 at every size: the 4x4 map and 2 frames double together; D's last layer
    covers its whole last map, one pair of logits per clip."""
    torch.manual_seed(0)
    G = VGANGenerator(z_dim=4, ch=8 * 2 ** (n_upsamplings(resolution) - 2),
                      resolution=resolution).eval()
    D = VGANDiscriminator(ch=2, resolution=resolution)
    with torch.no_grad():
        video = G(G.sample_z(2))
        assert video.shape == (2, 3, resolution // 2, resolution, resolution)
        assert D(video).shape == (2,)
