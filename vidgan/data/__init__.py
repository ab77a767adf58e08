"""Datasets of real clips and the DataLoader that feeds training."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from vidgan.config import Config
from vidgan.data.folder import ClipSampler, VideoFolderDataset

__all__ = ["build_dataset", "build_loader", "normalize", "ClipSampler", "VideoFolderDataset"]


def build_dataset(cfg: Config, split: str = "train") -> Dataset:
    """The dataset named by ``data.dataset``; the synthetic one is written first if missing."""
    d, m = cfg.data, cfg.model
    if d.dataset == "synthetic":
        from data_prep.synthetic import ensure_dataset
        ensure_dataset(d.root, per_class=d.synthetic_videos_per_class,
                       n_frames=d.synthetic_frames, size=m.resolution, seed=cfg.train.seed)
    # "folder" and (until the UCF101 split lists land) "ucf101" read class sub-folders.
    return VideoFolderDataset(d.root, m.n_frames, m.resolution, d.frame_stride,
                              flip=split == "train")


def build_loader(dataset: Dataset, cfg: Config, start_sample: int = 0) -> DataLoader:
    """Endless loader of (uint8 video (B, 3, T, H, W), label (B,)) batches.

    ``start_sample`` skips that many samples of the stream (resume). The loader gets its own
    torch.Generator so creating it never consumes the global RNG, which the checkpoint restores.
    """
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=cfg.train.batch_size,
                      sampler=ClipSampler(len(dataset), cfg.train.seed, start_sample),
                      num_workers=workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      generator=torch.Generator().manual_seed(cfg.train.seed), drop_last=True)


def normalize(video: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch already is."""
    return video.float().div_(127.5).sub_(1.0)
