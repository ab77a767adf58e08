"""vidgan.video_io: uint8 conversion, grids, mp4 round trip."""
import decord
import numpy as np
import pytest
import torch

from vidgan.video_io import make_grid, to_uint8, write_mp4

def test_mp4_roundtrip(tmp_path):
    """write_mp4 -> decord: frame count, size, fps and PSNR > 35 dB."""
    t = torch.linspace(0, 1, 10).view(1, 10, 1, 1)
    yy = torch.linspace(0, 1, 48).view(1, 1, 48, 1)
    xx = torch.linspace(0, 1, 64).view(1, 1, 1, 64)
    shape = (1, 10, 48, 64)
    video = torch.cat([(0.5 * xx + 0.5 * t).expand(shape), yy.expand(shape),
                       (xx * yy).expand(shape)], 0)  # smooth gradients, moving in time
    video_u8 = to_uint8(video * 2 - 1)
    write_mp4(tmp_path / "v.mp4", video_u8, fps=12)
    reader = decord.VideoReader(str(tmp_path / "v.mp4"))
    decoded = torch.from_numpy(reader.get_batch(list(range(len(reader)))).asnumpy())
    assert len(reader) == 10 and reader.get_avg_fps() == pytest.approx(12)
    assert decoded.shape == (10, 48, 64, 3)
    mse = ((decoded.permute(3, 0, 1, 2).float() - video_u8.float()) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / float(mse)) > 35


def test_odd_sizes_are_padded(tmp_path):
    write_mp4(tmp_path / "odd.mp4", torch.zeros(3, 2, 33, 35, dtype=torch.uint8))
    assert decord.VideoReader(str(tmp_path / "odd.mp4"))[0].shape == (34, 36, 3)


def test_to_uint8_rounds_and_clips():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]


def test_grid_geometry():
    videos = torch.ones(5, 3, 2, 4, 6, dtype=torch.uint8)
    grid = make_grid(videos, rows=2, pad=1)
    assert grid.shape == (3, 2, 2 * 5 - 1, 3 * 7 - 1)
    assert grid[:, :, 5:, 14:].sum() == 0  # the 6th tile is empty
