"""A decord-backed folder of videos: the seed of the full data pipeline.

Layout: ``root/<class name>/<clip>.<ext>`` (labels from the sorted sub-folder names, as the
UCF101 archive unpacks) or videos directly in ``root`` (label 0). Each item is one clip of T
frames at a frame stride from a random start, as uint8 (3, T, H, W); normalise on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Sampler

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def list_videos(root: Path) -> Tuple[List[Path], List[int], List[str]]:
    """Video files under ``root`` with labels from their first-level sub-folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"data.root '{root}' is not a directory of videos "
                                f"(expected root/<class>/<clip>.mp4 or root/<clip>.mp4)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXTENSIONS or path.name.startswith("."):
            continue
        rel = path.relative_to(root).parts
        files.append(path)
        labels.append(classes.index(rel[0]) if len(rel) > 1 else 0)
    if not files:
        raise FileNotFoundError(f"data.root '{root}' holds no videos with extensions "
                                f"{', '.join(VIDEO_EXTENSIONS)}")
    return files, labels, classes


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (3, T, size, size): shorter side to ``size``, centre crop."""
    x = frames.permute(3, 0, 1, 2)  # (3, T, H, W)
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True,
                      align_corners=False).round().clamp(0, 255).to(torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


class VideoFolderDataset(Dataset):
    """Clips from a folder of videos, decoded with decord.

    Index with ``(i, seed)`` (what ClipSampler yields): the clip's start frame and flip come
    from ``seed``, so a run is reproducible whatever the number of workers. The decord reader
    is opened inside ``__getitem__``, i.e. inside the DataLoader worker, never before the fork.
    """

    def __init__(self, root: str | Path, n_frames: int, resolution: int, frame_stride: int = 1,
                 flip: bool = True):
        self.root = Path(root)
        self.files, self.labels, self.classes = list_videos(self.root)
        self.n_frames, self.resolution = n_frames, resolution
        self.frame_stride, self.flip = frame_stride, flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> Tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        import decord

        rng = np.random.default_rng(seed)
        path = self.files[index]
        reader = decord.VideoReader(str(path), num_threads=1)
        span = (self.n_frames - 1) * self.frame_stride + 1
        if len(reader) < span:
            raise ValueError(f"video {path} has {len(reader)} frames; a clip needs {span} "
                             f"(model.n_frames={self.n_frames}, "
                             f"data.frame_stride={self.frame_stride})")
        start = int(rng.integers(0, len(reader) - span + 1))
        frames = reader.get_batch(list(range(start, start + span, self.frame_stride)))
        video = resize_center_crop(torch.from_numpy(frames.asnumpy()), self.resolution)
        if self.flip and rng.random() < 0.5:  # tgan2 §5.1: random horizontal flip
            video = video.flip(-1)
        return video.contiguous(), self.labels[index]


class ClipSampler(Sampler):
    """Endless stream of ``(index, clip_seed)``: a fresh permutation per epoch.

    Everything is a function of (seed, position in the stream), so ``start`` resumes the
    stream exactly where a checkpoint left it, in O(1).
    """

    def __init__(self, n: int, seed: int, start: int = 0):
        self.n, self.seed, self.start = n, seed, start

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            epoch_seed = self.seed * 1_000_003 + epoch
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed))
            for pos in range(offset, self.n):
                yield int(perm[pos]), epoch_seed * self.n + pos
            epoch, offset = epoch + 1, 0
