"""Face clips from FaceForensics (v1), as tgan2 §5.1 prepares them.

    python -m data_prep.faceforensics --root FaceForensics_compressed --out data/faceforensics_clips

Input, as the FaceForensics v1 archive unpacks: ``root/{train,val,test}/original/<name>.avi``
and the matching ``root/{train,val,test}/mask/<name>.avi`` (same file name). For each video
the face box is found in the mask, made square with a margin and held fixed over the clip,
the original frames are cropped to it, resized to 256x256 and written as
``out/<split>/<name>.mp4`` (H.264), which ``data.dataset: faceforensics`` reads.

Why one box per clip: the official script crops each frame to that frame's mask box, so the
crop jitters with the mask's edges; a generator trained on that learns the jitter. The paper
only says "cropped only the area of the face"; a fixed box keeps the motion the face's own.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

SPLITS = ("train", "val", "test")
CHUNK = 64  # frames decoded at a time: bounds memory for long videos


def face_boxes(mask: np.ndarray, threshold: float = 30.0) -> np.ndarray:
    """Per-frame face box (top, bottom, left, right), inclusive, from mask frames (T, H, W, 3).

    The foreground is whatever differs from the frame's border colour by more than
    ``threshold`` (summed over channels), so both white-on-black and black-on-white masks work.
    Frames without foreground get NaN.
    """
    m = mask.astype(np.int16)
    border = np.concatenate([m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1]], axis=1)  # (T, P, 3)
    background = np.median(border, axis=1)[:, None, None, :]  # (T, 1, 1, 3)
    fg = np.abs(m - background).sum(-1) > threshold  # (T, H, W)
    rows, cols = fg.any(2), fg.any(1)  # (T, H), (T, W)
    found = rows.any(1)
    h, w = fg.shape[1:]
    top = rows.argmax(1)
    bottom = h - 1 - rows[:, ::-1].argmax(1)
    left = cols.argmax(1)
    right = w - 1 - cols[:, ::-1].argmax(1)
    boxes = np.stack([top, bottom, left, right], 1).astype(np.float64)
    boxes[~found] = np.nan
    return boxes


def stable_square_box(boxes: np.ndarray, height: int, width: int, margin: float = 0.15
                      ) -> Tuple[int, int, int]:
    """One square (top, left, side) for the whole clip: around the union of the per-frame
    face boxes (so the face stays inside in every frame) plus ``margin`` of its side on each
    edge, moved (not shrunk) to lie inside the frame, and at most the frame's shorter side."""
    valid = boxes[~np.isnan(boxes).any(1)]
    if not len(valid):
        raise ValueError("the mask shows no face in any frame")
    top, bottom, left, right = valid[:, 0].min(), valid[:, 1].max(), valid[:, 2].min(), \
        valid[:, 3].max()
    cy, cx = (top + bottom + 1) / 2, (left + right + 1) / 2
    extent = max(bottom - top, right - left) + 1
    side = int(min(round(extent * (1 + 2 * margin)), height, width))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    return y0, x0, side


def crop_resize(frames: np.ndarray, box: Tuple[int, int, int], size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (3, T, size, size): crop the box, bicubic resize
    (antialiased when shrinking; the official script used OpenCV's INTER_CUBIC)."""
    y0, x0, side = box
    x = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y0 + side, x0:x0 + side]))
    x = x.permute(0, 3, 1, 2).float()  # (T, 3, side, side)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=side > size,
                          align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)


def _chunks(reader, n: int):
    for start in range(0, n, CHUNK):
        yield reader.get_batch(list(range(start, min(n, start + CHUNK)))).asnumpy()


def process_video(original: Path, mask: Path, out: Path, size: int = 256, margin: float = 0.15,
                  threshold: float = 30.0) -> str:
    """Write one face clip; returns "" or the reason the video was skipped."""
    import decord

    from vidgan.data.manifest import error_reason
    from vidgan.video_io import write_mp4

    try:
        video = decord.VideoReader(str(original), num_threads=1)
        masks = decord.VideoReader(str(mask), num_threads=1)
    except Exception as err:
        return f"unreadable: {error_reason(err)}"
    n = min(len(video), len(masks))
    if n == 0:
        return "no frames"
    if abs(len(video) - len(masks)) > 1:
        return f"original has {len(video)} frames, mask {len(masks)}"
    boxes = np.concatenate([face_boxes(m, threshold) for m in _chunks(masks, n)])
    height, width = video[0].shape[:2]
    if masks[0].shape[:2] != (height, width):
        return f"mask size {masks[0].shape[:2]} differs from video size {(height, width)}"
    try:
        box = stable_square_box(boxes, height, width, margin)
    except ValueError as err:
        return str(err)
    clip = torch.cat([crop_resize(f, box, size) for f in _chunks(video, n)], dim=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(out, clip, fps=max(1, round(video.get_avg_fps())))
    return ""


def find_pairs(root: Path, splits=SPLITS) -> List[Tuple[str, Path, Path]]:
    """(split, original, mask) for every original video that has a mask of the same name."""
    pairs = []
    for split in splits:
        originals = root / split / "original"
        if not originals.is_dir():
            continue
        for video in sorted(originals.iterdir()):
            mask = root / split / "mask" / video.name
            if video.is_file() and mask.is_file():
                pairs.append((split, video, mask))
    if not pairs:
        raise FileNotFoundError(f"no FaceForensics videos under {root}: expected "
                                f"{root}/<split>/original/<name> with a matching "
                                f"{root}/<split>/mask/<name>, split in {', '.join(splits)}")
    return pairs


def _job(args):
    split, video, mask, out_dir, size, margin, threshold = args
    out = out_dir / split / f"{video.stem}.mp4"
    return video, process_video(video, mask, out, size, margin, threshold)


def prepare(root: str | Path, out_dir: str | Path, size: int = 256, margin: float = 0.15,
            threshold: float = 30.0, workers: int = 1, overwrite: bool = False,
            progress: bool = True) -> List[Tuple[Path, str]]:
    """Write every face clip; returns (video, reason) for the videos that were skipped."""
    root, out_dir = Path(root), Path(out_dir)
    jobs = [(split, v, m, out_dir, size, margin, threshold) for split, v, m in find_pairs(root)
            if overwrite or not (out_dir / split / f"{v.stem}.mp4").exists()]
    skipped = []
    if workers > 1:
        pool: Optional[ProcessPoolExecutor] = ProcessPoolExecutor(workers)
        results = pool.map(_job, jobs)
    else:
        pool, results = None, map(_job, jobs)
    for video, reason in tqdm(results, total=len(jobs), desc="face clips", disable=not progress):
        if reason:
            skipped.append((video, reason))
            tqdm.write(f"skipped {video}: {reason}")
    if pool is not None:
        pool.shutdown()
    return skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="FaceForensics v1 root (train/val/test)")
    parser.add_argument("--out", default="data/faceforensics_clips")
    parser.add_argument("--size", type=int, default=256, help="output side (tgan2 §5.1: 256)")
    parser.add_argument("--margin", type=float, default=0.15,
                        help="added on each side, as a fraction of the largest face box")
    parser.add_argument("--threshold", type=float, default=30.0,
                        help="mask foreground: summed channel difference from the border colour")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        skipped = prepare(args.root, args.out, args.size, args.margin, args.threshold,
                          args.workers, args.overwrite)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"face clips in {args.out}; {len(skipped)} videos skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
