"""The two decoders (vidgan.data.decode): the same frame for an index, in every container and
codec the datasets use, and pixels that agree to well under 1/255 on average."""
import numpy as np
import pytest

from data_prep.fake_ucf101 import moving_frames
from vidgan.data.decode import DECODERS, decode_decord, decode_pyav

N_FRAMES = 30
STEP = 8  # frame i is a flat grey of (i + 1) * STEP: its index survives compression


def write(path, frames, codec, fmt, gop, b_frames=0, fps=25):
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "12", "bf": str(b_frames), "keyint_min": str(gop)}
        else:
            stream.bit_rate = 2_000_000
            stream.codec_context.max_b_frames = b_frames
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def numbered_frames(n=N_FRAMES, height=48, width=64):
    grey = (np.arange(n) + 1) * STEP
    return np.broadcast_to(grey[:, None, None, None], (n, height, width, 3)).astype(np.uint8)


def frame_numbers(frames: np.ndarray) -> list:
    return [int(round(f.mean() / STEP)) - 1 for f in frames]


# UCF101: MPEG-4 Part 2 in AVI (long and short keyframe intervals, with and without B-frames);
# FaceForensics: H.264 in mp4 with B-frames, whose edit list shifts the timestamps.
FILES = {"avi_gop300": ("mpeg4", "avi", 300, 0), "avi_gop5": ("mpeg4", "avi", 5, 0),
         "avi_bframes": ("mpeg4", "avi", 6, 2), "mp4_h264_bframes": ("libx264", "mp4", 7, 3),
         "mp4_h264": ("libx264", "mp4", 300, 0)}


# decord 0.6.0 seeks wrongly in AVI with B-frames: a clip starting at frame 20 gets frames
# 19, 20, ...; one starting at 26 gets 28, 29, 29, 29 (read from frame 0 it is right). The
# PyAV decoder is the default partly for this (UCF101's XviD files may carry B-frames).
DECORD_BUG = pytest.mark.xfail(strict=True, reason="decord 0.6.0: off-by-one seeks in AVI "
                               "with B-frames")
CASES = [pytest.param(decoder, kind, marks=DECORD_BUG if (decoder, kind) == ("decord",
                                                                            "avi_bframes") else ())
         for decoder in sorted(DECODERS) for kind in sorted(FILES)]


@pytest.mark.parametrize("decoder, kind", CASES)
def test_an_index_means_the_same_frame(tmp_path, kind, decoder):
    path = write(tmp_path / f"v.{FILES[kind][1]}", numbered_frames(), *FILES[kind])
    rng = np.random.default_rng(0)
    cases = [[0, 1, 2], [N_FRAMES - 3, N_FRAMES - 2, N_FRAMES - 1], [5, 7, 9, 11]]
    for _ in range(10):
        start = int(rng.integers(0, N_FRAMES - 8))
        cases.append(list(range(start, start + 8)))
    for indices in cases:
        frames = DECODERS[decoder](path, indices, 48, 64, 1)
        assert frames.shape == (len(indices), 48, 64, 3) and frames.dtype == np.uint8
        assert frame_numbers(frames) == indices, (kind, indices)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_past_the_end_is_an_error_naming_the_frame(tmp_path, decoder):
    path = write(tmp_path / "v.avi", numbered_frames(), "mpeg4", "avi", 12)
    with pytest.raises(ValueError, match=f"needs frame {N_FRAMES}"):
        DECODERS[decoder](path, [N_FRAMES - 2, N_FRAMES - 1, N_FRAMES], 48, 64, 1)


def test_resized_pixels_agree(tmp_path):
    """UCF101's geometry: 320x240 decoded at 256x192. The decoders' scalers differ (decord's
    filter graph, PyAV's bilinear swscale), by well under 1/255 on average; each PyAV frame
    is nearest to decord's frame of the same index."""
    frames = moving_frames(40, 240, 320, np.random.default_rng(1))
    path = write(tmp_path / "v.avi", frames, "mpeg4", "avi", 12)
    indices = list(range(9, 25, 1))
    a = decode_pyav(path, indices, 192, 256).astype(np.float64)
    b = decode_decord(path, indices, 192, 256).astype(np.float64)
    assert np.abs(a - b).mean() < 1.5
    distance = np.abs(a[:, None] - b[None]).mean(axis=(2, 3, 4))  # (pyav frame, decord frame)
    assert (distance.argmin(axis=1) == np.arange(len(indices))).all()


def test_same_size_pixels_agree(tmp_path):
    """No resize (the demo's data): only the YUV -> RGB conversion (identical here)."""
    frames = moving_frames(12, 64, 64, np.random.default_rng(2))
    path = write(tmp_path / "v.mp4", frames, "libx264", "mp4", 12, b_frames=2)
    a = decode_pyav(path, list(range(12)), 64, 64).astype(np.float64)
    b = decode_decord(path, list(range(12)), 64, 64).astype(np.float64)
    assert np.abs(a - b).mean() < 0.5
