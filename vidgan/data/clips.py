"""Random clips decoded on the fly (vidgan.data.decode), sampled as TGANv2 samples them.

tgan2 §5.1 and the official loader: T frames at a frame stride from a random start; every
frame resized keeping the aspect so that the shorter side is the model resolution (UCF101's
320x240 -> 256x192, done at decode time); in training a crop at a random horizontal
offset that stays ``margin`` px from both edges and a random horizontal flip; in evaluation
the centre crop. (The paper's text says "cropped 240x240 from the centre, resized to 192";
the official code, which produced its numbers, does the above; we follow the code here.)

Items are addressed by ``(index, seed)`` (what ClipSampler yields): start, crop and flip come
from ``seed`` alone, so a run is reproducible whatever the number of workers. A clip that
fails to decode is skipped: another index is drawn from the same seed, and the failure is
recorded in this process's ``FAILURES`` log, which ``collate_clips`` attaches to the batch so
the training loop can count and report it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from vidgan.data.decode import DECODERS
from vidgan.data.manifest import error_reason

# Per-process log of (file, reason) for clips skipped since the last collate. Module level,
# not on the dataset, because a DataLoader worker may hold a different copy of the dataset
# than the one its collate_fn sees (spawn start method).
FAILURES: List[Tuple[str, str]] = []
MAX_ATTEMPTS = 10  # consecutive skips within one item before the worker gives up


class DataError(ValueError):
    """The dataset is unusable as configured (too many bad files, nothing left, ...)."""


class ClipDecodeError(DataError):
    """Every attempt to decode a clip for one item failed."""


@dataclass(frozen=True)
class ClipGeometry:
    """Where a clip comes from in a video: frames, decode size and crop (all from the config)."""

    n_frames: int
    resolution: int
    frame_stride: int = 1
    resize: Tuple[int, ...] = ()  # fixed (H, W) decode size; () = keep each video's aspect
    margin: int = 4  # official xmargin
    augment: bool = True  # random crop offset + flip (training) or centre crop (evaluation)
    flip: bool = True

    @property
    def span(self) -> int:
        """Source frames one clip covers."""
        return (self.n_frames - 1) * self.frame_stride + 1

    def decode_size(self, height: int, width: int) -> Tuple[int, int]:
        """(H, W) to decode at: the configured size, else the shorter side to the resolution."""
        if self.resize:
            return int(self.resize[0]), int(self.resize[1])
        r = self.resolution
        if height <= width:
            return r, max(r, round(width * r / height))
        return max(r, round(height * r / width)), r

    def frame_indices(self, n_available: int, rng: np.random.Generator) -> List[int]:
        # Any start with a whole clip after it (the official loader's randint(0, n - span)
        # never picks the last such start; the difference is one position per video).
        start = int(rng.integers(0, n_available - self.span + 1))
        return list(range(start, start + self.span, self.frame_stride))

    def crop_offset(self, height: int, width: int, rng: np.random.Generator) -> Tuple[int, int]:
        """Top-left corner of the square crop in a (height, width) frame."""
        r = self.resolution
        top, left = (height - r) // 2, (width - r) // 2
        slack = width - r
        if self.augment and slack > 0:
            m = self.margin if slack >= 2 * self.margin else 0
            left = int(rng.integers(m, slack - m + 1))
        return top, left


class VideoClipDataset(Dataset):
    """Clips of ``files`` (paths under ``root``) as (uint8 (3, T, H, W), label).

    ``frames[i]`` and ``sizes[i]`` come from the manifest, so nothing is probed here; files
    are opened in ``__getitem__``, i.e. inside the DataLoader worker after the fork.
    ``decoder`` names one of vidgan.data.decode.DECODERS.
    """

    def __init__(self, root, files: Sequence[str], labels: Sequence[int], frames: Sequence[int],
                 sizes: Sequence[Tuple[int, int]], geometry: ClipGeometry,
                 classes: Sequence[str] = (), decode_threads: int = 1,
                 decoder: str = "pyav"):
        self.root = str(root)
        self.files, self.labels = list(files), list(labels)
        self.frames, self.sizes = list(frames), list(sizes)
        self.geometry, self.classes = geometry, list(classes)
        self.decode_threads, self.decoder = decode_threads, decoder
        self.excluded: List[Tuple[str, str]] = []  # (file, reason), filled by build_dataset

    def __len__(self) -> int:
        return len(self.files)

    def read_clip(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """One clip of video ``index``: uint8 (3, T, res, res)."""
        g = self.geometry
        height, width = g.decode_size(*self.sizes[index])
        n = self.frames[index]
        if n < g.span:
            raise ValueError(f"{n} frames decodable; a clip needs {g.span}")
        # Decode-time resize (ffmpeg's scaler): no full-size frames in Python.
        frames = torch.from_numpy(DECODERS[self.decoder](
            f"{self.root}/{self.files[index]}", g.frame_indices(n, rng), height, width,
            self.decode_threads))
        top, left = g.crop_offset(*frames.shape[1:3], rng)
        clip = frames[:, top:top + g.resolution, left:left + g.resolution]  # (T, H, W, 3)
        if g.augment and g.flip and rng.random() < 0.5:  # tgan2 §5.1: random horizontal flip
            clip = clip.flip(2)
        return clip.permute(3, 0, 1, 2).contiguous()

    def __getitem__(self, key) -> Tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        tried = []
        for _ in range(MAX_ATTEMPTS):
            try:
                return self.read_clip(index, rng), self.labels[index]
            except Exception as err:  # PyAV: av.FFmpegError; decord: DECORDError/RuntimeError
                reason = error_reason(err)
                FAILURES.append((self.files[index], reason))
                tried.append(f"{self.files[index]} ({reason})")
                index = int(rng.integers(len(self.files)))  # skip: draw another video
        raise ClipDecodeError(f"{MAX_ATTEMPTS} clips in a row failed to decode under "
                              f"{self.root}: " + "; ".join(tried))


def collate_clips(samples):
    """default_collate plus the clips this process skipped since the last batch:
    (video (B, 3, T, H, W) uint8, label (B,), skipped [(file, reason), ...])."""
    video, label = default_collate(samples)
    skipped = list(FAILURES)
    FAILURES.clear()
    return video, label, skipped


class ClipSampler(Sampler):
    """Endless stream of ``(index, clip_seed)``: a fresh permutation per epoch.

    Everything is a function of (seed, position in the stream), so ``start`` resumes the
    stream exactly where a checkpoint left it, in O(1). The stream is global: with ``world``
    processes taking ``local_batch`` samples each, process ``rank`` gets its slice of every
    global batch of ``world * local_batch``, so the clips a run sees do not depend on the
    number of processes, and a checkpoint resumes with any number.
    """

    def __init__(self, n: int, seed: int, start: int = 0, rank: int = 0, world: int = 1,
                 local_batch: int = 1):
        self.n, self.seed, self.start = n, seed, start
        self.rank, self.world, self.local_batch = rank, world, local_batch

    def _mine(self, position: int) -> bool:
        return self.world == 1 or \
            position % (self.world * self.local_batch) // self.local_batch == self.rank

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            epoch_seed = self.seed * 1_000_003 + epoch
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed))
            for pos in range(offset, self.n):
                if self._mine(epoch * self.n + pos):
                    yield int(perm[pos]), epoch_seed * self.n + pos
            epoch, offset = epoch + 1, 0
