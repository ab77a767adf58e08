"""Datasets of real clips and the DataLoader that feeds training.

Every dataset kind goes through one path: list its files (``VideoList``) -> bring the
manifest up to date (probing only new or changed files) -> leave out unusable files with a
reason -> ``VideoClipDataset``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from vidgan import distributed
from vidgan.config import Config
from vidgan.signals import ignore_in_worker
from vidgan.data.clips import (ClipDecodeError, ClipGeometry, ClipSampler, DataError,
                               VideoClipDataset, collate_clips)
from vidgan.data.faceforensics import list_faceforensics
from vidgan.data.folder import VideoList, list_folder
from vidgan.data.manifest import MANIFEST_NAME, Manifest, index_videos
from vidgan.data.ucf101 import list_ucf101
from vidgan.lock import WRITE_LOCK, DirectoryLock

__all__ = ["build_dataset", "build_loader", "normalize", "list_videos", "manifest_path",
           "geometry", "select_usable", "bad_files_error", "reason_kind",
           "ClipSampler", "VideoClipDataset", "ClipGeometry", "ClipDecodeError", "DataError",
           "summarize_excluded"]

TOO_SHORT = "too short"


def list_videos(cfg: Config, subset: str) -> VideoList:
    """The files of ``subset`` for ``data.dataset`` (the synthetic one is written if missing)."""
    d, m = cfg.data, cfg.model
    if Path(d.root).exists() and not Path(d.root).is_dir():
        raise DataError(f"data.root='{d.root}' is a file; data.dataset={d.dataset} expects a "
                        f"directory")
    if d.dataset == "synthetic":
        from vidgan.data.synthetic import write_dataset
        _write_if_missing(d.root, d.dataset, write_dataset, per_class=d.synthetic_videos_per_class,
                          n_frames=d.synthetic_frames, size=m.resolution, seed=cfg.train.seed)
        return list_folder(d.root)
    if d.dataset == "modes":
        from vidgan.data.modes import write_dataset
        _write_if_missing(d.root, d.dataset, write_dataset, per_mode=d.synthetic_videos_per_class,
                          n_frames=d.synthetic_frames, size=m.resolution)
        return list_folder(d.root)
    if d.dataset == "folder":
        return list_folder(d.root)
    if d.dataset == "ucf101":
        return list_ucf101(d.root, d.split, subset)
    if d.dataset == "faceforensics":
        return list_faceforensics(d.root, subset)
    raise DataError(f"data.dataset='{d.dataset}' has no reader")


def _write_if_missing(root: str, kind: str, write: Callable[..., Path], **kwargs) -> None:
    """Write a generated dataset (``write`` leaves ``root/COMPLETE`` last) unless a complete
    one is already at ``root``; a failed write is a DataError naming data.root.

    Runs started together on a fresh checkout (benchmarks with --jobs 2, two terminals) would
    write the same files at once and trip over each other's temporary files: the first
    takes ``root/.vidgan_writing.lock`` and writes, the others wait for it and find COMPLETE.
    """
    done = Path(root) / "COMPLETE"
    if done.is_file():
        return
    try:
        with DirectoryLock(root, WRITE_LOCK):  # waits for another writer
            if not done.is_file():
                write(root, **kwargs)
    except OSError as err:
        raise DataError(f"data.root='{root}': cannot write the {kind} dataset there "
                        f"({err})") from None


def manifest_path(cfg: Config) -> Path:
    return Path(cfg.data.manifest) if cfg.data.manifest else Path(cfg.data.root) / MANIFEST_NAME


def geometry(cfg: Config, augment: bool) -> ClipGeometry:
    d, m = cfg.data, cfg.model
    return ClipGeometry(m.n_frames, m.resolution, d.frame_stride, tuple(d.resize),
                        d.crop_margin, augment, d.flip)


def select_usable(videos: VideoList, manifest: Manifest, span: int,
                  ) -> Tuple[List[int], List[Tuple[str, str]]]:
    """Indices into ``videos`` that can give a clip, and (file, reason) for the rest."""
    keep = []
    excluded = [(f, "missing: listed in the split file, not on disk") for f in videos.missing]
    for i, rel in enumerate(videos.files):
        info = manifest.entries.get(rel)
        if info is None:
            excluded.append((rel, "missing: removed while indexing"))
        elif info.error:
            excluded.append((rel, info.error))
        elif info.frames < span:
            excluded.append((rel, f"{TOO_SHORT}: {info.frames} frames, a clip needs {span}"))
        else:
            keep.append(i)
    return keep, excluded


def reason_kind(reason: str) -> str:
    """Reasons read "kind: detail"."""
    return reason.split(":")[0]


def summarize_excluded(excluded: List[Tuple[str, str]]) -> str:
    """'3 excluded: 2 empty file, 1 too short' (or '0 excluded')."""
    if not excluded:
        return "0 excluded"
    counts = Counter(reason_kind(r) for _, r in excluded)
    return f"{len(excluded)} excluded: " + ", ".join(f"{n} {k}" for k, n in counts.most_common())


def bad_files_error(bad: List[Tuple[str, str]], total: int, limit: float, when: str) -> DataError:
    shown = "\n".join(f"  {f}: {r}" for f, r in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return DataError(f"{len(bad)} of {total} videos are unusable {when} (more than "
                     f"data.max_bad_fraction={limit:g}); check the data or raise the limit:\n"
                     f"{shown}{more}")


def build_dataset(cfg: Config, split: Optional[str] = None, augment: Optional[bool] = None,
                  progress: bool = True) -> VideoClipDataset:
    """Clips of ``split`` (train | val | test | all; default ``data.subset``) as (uint8 video
    (3, T, H, W), label). ``augment`` (random crop offset + flip) defaults to split == train.
    """
    d = cfg.data
    subset = split or d.subset
    augment = subset == "train" if augment is None else augment
    videos = list_videos(cfg, subset)
    manifest = index_videos(videos.root, videos.label_names(), manifest_path(cfg),
                            d.index_workers, progress)
    geo = geometry(cfg, augment)
    keep, excluded = select_usable(videos, manifest, geo.span)
    total = len(videos.files) + len(videos.missing)
    bad = [(f, r) for f, r in excluded if not r.startswith(TOO_SHORT)]
    if len(bad) > d.max_bad_fraction * total:
        raise bad_files_error(bad, total, d.max_bad_fraction, f"in '{d.root}' ({subset})")
    if not keep:
        raise DataError(f"no usable videos in '{d.root}' ({d.dataset}, {subset}): "
                        f"{summarize_excluded(excluded)}; e.g. {excluded[0][0]}: {excluded[0][1]}"
                        if excluded else f"no videos in '{d.root}' ({d.dataset}, {subset})")
    infos = [manifest.entries[videos.files[i]] for i in keep]
    dataset = VideoClipDataset(videos.root, [videos.files[i] for i in keep],
                               [videos.labels[i] for i in keep], [x.frames for x in infos],
                               [(x.height, x.width) for x in infos], geo, videos.classes,
                               d.decode_threads, d.decoder)
    dataset.excluded = excluded
    return dataset


def build_loader(dataset: VideoClipDataset, cfg: Config, start_sample: int = 0) -> DataLoader:
    """Endless loader of (uint8 video (B, 3, T, H, W), label (B,), skipped [(file, reason)]).

    ``start_sample`` skips that many samples of the global stream (resume); under torchrun
    each process loads its share of every global batch (``ClipSampler``). The loader gets its own
    torch.Generator so creating it never consumes the global RNG, which the checkpoint restores.
    Clip randomness comes from the sampler's seeds, so workers need no seeding of their own.
    Workers ignore the run signals (vidgan.signals): the main process checkpoints and stops.
    """
    workers = cfg.data.num_workers
    batch = distributed.local_batch(cfg.train.batch_size)  # this process's share (torchrun)
    sampler = ClipSampler(len(dataset), cfg.train.seed, start_sample, distributed.rank(),
                          distributed.world_size(), batch)
    return DataLoader(dataset, batch_size=batch, sampler=sampler,
                      num_workers=workers, collate_fn=collate_clips,
                      pin_memory=torch.cuda.is_available(),
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      worker_init_fn=init_worker,
                      generator=torch.Generator().manual_seed(cfg.train.seed), drop_last=True)


def init_worker(worker_id: int) -> None:
    """A DataLoader worker ignores the run signals and drops its copies of the process
    group's connections, so that a killed process's peers hear of it at once."""
    ignore_in_worker(worker_id)
    distributed.close_inherited_connections()


def normalize(video: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch already is (float32; a
    float64 batch of 0..255 values stays float64, for exactness tests in double precision)."""
    dtype = torch.float64 if video.dtype == torch.float64 else torch.float32
    return video.to(dtype, copy=True).div_(127.5).sub_(1.0)  # the caller's batch untouched
