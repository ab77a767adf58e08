"""Random-clip throughput: our dataset (both decoders) against a plain PyAV seek-and-decode loader.

    python -m benchmarks.bench_data [--gops 300,12 --core 0 --videos 24 --frames 175 \
        --clips 120 --rounds 3]

Writes UCF101-like videos (320x240 MPEG-4 Part 2 in AVI with the XVID tag, 25 fps, ~7 s,
keyframe interval 300 as XviD's default) to a temporary folder, then measures how many random
16-frame training clips per second one process (= one DataLoader worker) produces:

- ours: ``VideoClipDataset`` as training uses it (ucf101_st4 geometry: decode-time resize to
  256x192, random 192x192 crop with the 4 px margin, random flip), reading the manifest,
  with the default decoder (``data.decoder=pyav``); ours-decord: the same with decord;
- pyav: a straightforward loader written as the PyAV docs suggest: open, seek to the
  keyframe before the clip's start, decode forward, convert the 16 clip frames to RGB at
  256x192 with swscale, same crop and flip.

All draw the same (video, start) sequence and run in alternating rounds in one process, so
the ratio is measured under the same machine load. The process is pinned to one core
(``--core``, as ``taskset -c``), and one set of files is written per keyframe interval:
300 (XviD's default) and 12 (PyAV's/ffmpeg's default GOP), where seeking is cheap for both.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.fake_ucf101 import moving_frames, write_avi
from vidgan.config import load_config
from vidgan.data import build_dataset


def write_videos(folder: Path, n: int, frames: int, gop: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_avi(folder / f"v_{i:03d}.avi", moving_frames(frames, 240, 320, rng), gop=gop)


class PyAVClips:
    """The baseline: everything a straightforward PyAV loader does for one random clip."""

    def __init__(self, files, n_frames: int, size=(192, 256), crop: int = 192, margin: int = 4):
        self.files, self.n_frames, self.size, self.crop, self.margin = files, n_frames, size, \
            crop, margin

    def clip(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        import av

        with av.open(str(self.files[index])) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            fps, tb = float(stream.average_rate), stream.time_base
            start = int(rng.integers(0, stream.frames - self.n_frames + 1))
            container.seek(int(start / fps / tb), stream=stream, backward=True, any_frame=False)
            out = []
            for frame in container.decode(stream):
                k = round(float(frame.pts * tb) * fps)
                if k < start:
                    continue
                out.append(frame.to_ndarray(width=self.size[1], height=self.size[0],
                                            format="rgb24"))
                if len(out) == self.n_frames:
                    break
        frames = torch.from_numpy(np.stack(out))  # (T, H, W, 3)
        left = int(rng.integers(self.margin, self.size[1] - self.crop - self.margin + 1))
        clip = frames[:, :, left:left + self.crop]
        if rng.random() < 0.5:
            clip = clip.flip(2)
        return clip.permute(3, 0, 1, 2).contiguous()


def measure(fn, n: int, seed: int) -> float:
    """Clips per second of ``fn(rng) -> clip`` over ``n`` clips."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(n):
        clip = fn(rng)
        assert clip.shape == (3, 16, 192, 192), clip.shape
    return n / (time.perf_counter() - t0)


def compare(folder: Path, args, gop: int) -> dict:
    """Alternating rounds of both loaders on files with keyframe interval ``gop``."""
    write_videos(folder, args.videos, args.frames, gop)
    folder_keys = ["data.dataset=folder", f"data.root={folder}"]
    cfg = load_config("ucf101_st4.yaml", folder_keys)
    ours = build_dataset(cfg, "train", progress=False)  # indexes once, like training
    decord = build_dataset(load_config("ucf101_st4.yaml", folder_keys + ["data.decoder=decord"]),
                           "train", progress=False)
    pyav = PyAVClips([folder / f for f in ours.files], cfg.model.n_frames)
    n = len(ours)
    loaders = {"ours": lambda r: ours.read_clip(int(r.integers(n)), r),
               "ours-decord": lambda r: decord.read_clip(int(r.integers(n)), r),
               "pyav": lambda r: pyav.clip(int(r.integers(n)), r)}
    rates = {name: [] for name in loaders}
    for fn in loaders.values():
        measure(fn, 5, 99)  # warm-up
    for round_ in range(args.rounds):
        for name, fn in loaders.items():
            rates[name].append(measure(fn, args.clips, round_))
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=175, help="frames per video (~7 s)")
    parser.add_argument("--gops", default="300,12", help="keyframe intervals of the files")
    parser.add_argument("--core", type=int, default=0, help="the one CPU core to run on")
    parser.add_argument("--clips", type=int, default=120, help="clips per round per loader")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    torch.set_num_threads(1)
    print(f"{args.videos} videos 320x240 mpeg4/AVI, {args.frames} frames; random 16-frame "
          f"clips -> 192x192, one process pinned to core {args.core}")
    for gop in (int(g) for g in args.gops.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rates = compare(Path(tmp), args, gop)
        print(f"gop {gop}:")
        for name, values in rates.items():
            print(f"  {name:11s} {np.mean(values):7.1f} clips/s  (rounds: "
                  f"{', '.join(f'{v:.1f}' for v in values)})")
        for name in ("ours", "ours-decord"):
            ratio = np.array(rates[name]) / np.array(rates["pyav"])
            print(f"  ratio {name}/pyav {ratio.mean():.2f} (per round: "
                  f"{', '.join(f'{r:.2f}' for r in ratio)})", flush=True)


if __name__ == "__main__":
    main()
