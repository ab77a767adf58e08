import itertools

import decord
import numpy as np
import pytest
import torch

from data_prep.synthetic import CLASSES
from vidgan.data import normalize
from vidgan.data.folder import ClipSampler, VideoFolderDataset
from vidgan.video_io import make_grid, to_uint8, write_mp4


def test_synthetic_dataset_layout(synthetic_root):
    ds = VideoFolderDataset(synthetic_root, n_frames=8, resolution=64)
    assert ds.classes == sorted(CLASSES) and len(ds) == 3 * len(CLASSES)
    assert sorted(set(ds.labels)) == list(range(len(CLASSES)))
    video, label = ds[(0, 1)]
    assert video.dtype == torch.uint8 and video.shape == (3, 8, 64, 64)
    assert ds.classes[label] == ds.files[0].parent.name


def test_synthetic_shapes_move(synthetic_root):
    """The demo data must have motion: consecutive frames differ."""
    ds = VideoFolderDataset(synthetic_root, n_frames=8, resolution=64, flip=False)
    video, _ = ds[(0, 0)]
    diffs = (video[:, 1:].float() - video[:, :-1].float()).abs().mean(dim=(0, 2, 3))
    assert (diffs > 0.5).all()


def test_clip_is_deterministic_per_seed(synthetic_root):
    ds = VideoFolderDataset(synthetic_root, n_frames=4, resolution=64, frame_stride=2)
    a, b = ds[(5, 42)], ds[(5, 42)]
    assert torch.equal(a[0], b[0])
    assert any(not torch.equal(ds[(5, s)][0], a[0]) for s in range(43, 53))


def test_resize_and_center_crop(tmp_path):
    frames = torch.zeros(3, 4, 80, 120, dtype=torch.uint8)
    frames[:, :, :, 60:] = 255
    (tmp_path / "a").mkdir()
    write_mp4(tmp_path / "a" / "clip.mp4", frames, fps=8)
    video, label = VideoFolderDataset(tmp_path, 4, 64, flip=False)[(0, 0)]
    assert video.shape == (3, 4, 64, 64) and label == 0
    # 80x120 -> 64x96, centre crop keeps columns 16..80: the edge sits at column 32
    row = video[0, 0, 32].float()
    assert row[:28].max() < 40 and row[36:].min() > 215


def test_too_short_video_names_file(tmp_path):
    write_mp4(tmp_path / "short.mp4", torch.zeros(3, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="short.mp4 has 3 frames; a clip needs 8"):
        VideoFolderDataset(tmp_path, 8, 64)[(0, 0)]


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no videos"):
        VideoFolderDataset(tmp_path, 8, 64)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        VideoFolderDataset(tmp_path / "missing", 8, 64)


def test_sampler_resumes_the_stream():
    full = list(itertools.islice(iter(ClipSampler(7, seed=3)), 40))
    tail = list(itertools.islice(iter(ClipSampler(7, seed=3, start=17)), 23))
    assert tail == full[17:]
    for epoch in range(5):  # each epoch is a permutation
        assert sorted(i for i, _ in full[7 * epoch:7 * epoch + 7]) == list(range(7))
    assert len({s for _, s in full}) == 40  # every clip draw has its own seed


def test_normalize_range():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert normalize(x).tolist() == [-1.0, 1.0]


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
