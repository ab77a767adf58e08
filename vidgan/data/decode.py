"""Frames of one video file at given indices, resized at decode time: the two decoders.

``data.decoder`` picks one; both return uint8 (T, H, W, 3) RGB for sorted frame indices.

- ``pyav`` (default): open, seek to the keyframe at or before the first frame, decode forward,
  convert only the wanted frames with one reused swscale context (bilinear). Frame ``i`` is
  the frame shown at time ``i / fps`` after the first one: the i-th frame of a
  constant-frame-rate video (UCF101, FaceForensics); in a variable-rate one, the frame on
  screen at that time (with the stream's average rate). One core makes 1.09-1.17x the clips
  of a plain PyAV loader (docs/BENCHMARKS.md).
- ``decord``: ``decord.VideoReader(...).get_batch``; frame ``i`` is the i-th frame in
  presentation order. decord reads the whole packet index when it opens a file and sets up
  its converter per reader, a fixed ~2 ms per clip that random access over many files pays
  for every clip (0.83x a plain PyAV loader on one core). decord 0.6.0 also seeks wrongly in
  AVI files with B-frames (tests/test_decode.py).

Both give the same frame for an index (tests/test_decode.py). At the file's own size their
pixels are identical; resized (UCF101's 320x240 -> 256x192) they differ by 0.96/255 on
average, so a run keeps one decoder (it is part of the C3D statistics' cache key).
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np

Decoder = Callable[[str, Sequence[int], int, int, int], np.ndarray]


def _frames_needed_error(available: str, index: int) -> ValueError:
    return ValueError(f"{available}; the clip needs frame {index}")


def decode_decord(path: str, indices: Sequence[int], height: int, width: int,
                  threads: int = 1) -> np.ndarray:
    """Frames ``indices`` of ``path`` at (height, width): uint8 (T, H, W, 3), by decord."""
    import decord

    reader = decord.VideoReader(path, width=width, height=height, num_threads=threads)
    if indices[-1] >= len(reader):
        raise _frames_needed_error(f"{len(reader)} frames decodable", indices[-1])
    return reader.get_batch(list(indices)).asnumpy()


class _Timeline:
    """Frame index <-> pts of a stream, in exact integer arithmetic: index = (pts - first) *
    time_base * rate, rounded to the nearest frame."""

    def __init__(self, stream, first: int):
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError("the video stream declares no frame rate")
        tb = stream.time_base
        self.first = first  # pts of frame 0
        self.num = tb.numerator * rate.numerator  # index = (pts - first) * num / den
        self.den = tb.denominator * rate.denominator

    def index(self, pts: int) -> int:
        return (2 * (pts - self.first) * self.num + self.den) // (2 * self.den)

    def pts(self, index: int) -> int:
        """The earliest pts that rounds to ``index`` or later."""
        return self.first + (index * 2 * self.den - self.den + 2 * self.num - 1) // (2 * self.num)


def _first_packet(container, stream) -> tuple:
    """(pts, dts) of the file's first shown packet. Its pts is frame 0's: an intra frame is
    shown before the B-frames that follow it. Not ``stream.start_time``: AVI with B-frames
    starts at pts 1 with a start_time of 0. Packets an mp4 edit list cuts are not shown."""
    for packet in container.demux(stream):
        if packet.pts is not None and not packet.is_discard:
            return packet.pts, packet.dts if packet.dts is not None else packet.pts
    raise ValueError("no video packet has a timestamp")


def _decode_from(container, stream, timeline: _Timeline, target: int, indices: Sequence[int],
                 convert) -> tuple:
    """Seek to the keyframe at or before pts ``target``, decode forward and ``convert(frame,
    j)`` the frame for every ``indices[j]``. Returns (frames converted, index of the last
    frame decoded or None, whether the seek overshot the first wanted frame)."""
    container.seek(target, stream=stream, backward=True, any_frame=False)
    j, previous, last = 0, None, None
    for frame in container.decode(stream):
        if frame.pts is None:
            raise ValueError("a decoded frame has no timestamp")
        last = timeline.index(frame.pts)
        if j == 0 and previous is None and indices[0] < last:
            return j, last, True  # nothing decoded before the first wanted frame
        # A wanted frame that no decoded frame lands on (a variable frame rate): the one
        # still on screen at its time.
        while j < len(indices) and indices[j] < last:
            convert(previous, j)
            j += 1
        if j < len(indices) and indices[j] == last:
            convert(frame, j)
            j += 1
        if j == len(indices):
            break
        previous = frame
    return j, last, False


def decode_pyav(path: str, indices: Sequence[int], height: int, width: int,
                threads: int = 1) -> np.ndarray:
    """Frames ``indices`` of ``path`` at (height, width): uint8 (T, H, W, 3), by PyAV."""
    import av
    from av.video.reformatter import Interpolation, VideoReformatter

    out = np.empty((len(indices), height, width, 3), dtype=np.uint8)
    # One context for all frames: a fresh one per frame (frame.to_ndarray's default) costs
    # 7-13% of a clip (benchmarks/bench_data.py). threads=1: a worker is one core's work.
    scaler = VideoReformatter()

    def convert(frame, j):
        out[j] = scaler.reformat(frame, width=width, height=height, format="rgb24",
                                 interpolation=Interpolation.BILINEAR, threads=1).to_ndarray()

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        first_pts, first_dts = _first_packet(container, stream)
        timeline = _Timeline(stream, first_pts)
        # Demuxers seek by dts (AVI's index), which trails pts by the B-frame delay.
        delay = max(0, first_pts - first_dts)
        j, last, overshot = _decode_from(container, stream, timeline,
                                         timeline.pts(indices[0]) - delay, indices, convert)
        if overshot:  # the keyframe found is shown after the first wanted frame: from the start
            j, last, overshot = _decode_from(container, stream, timeline,
                                             min(first_pts, first_dts), indices, convert)
    if j == len(indices):
        return out
    if overshot:
        raise ValueError(f"the first frame decodes as frame {last}; the clip needs frame "
                         f"{indices[0]}")
    if last is None:
        raise ValueError("no frame decodes")
    raise _frames_needed_error(f"the video ends at frame {last}", indices[j])


DECODERS: Dict[str, Decoder] = {"pyav": decode_pyav, "decord": decode_decord}
