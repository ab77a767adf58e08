"""The embedded demo dataset: labelled mp4 clips of moving shapes.

Written on first use by ``build_dataset`` (data.dataset=synthetic), or up front with
``python -m data_prep.synthetic --root data/synthetic [--per-class 64 --frames 32 --size 64]``.

Four classes, one sub-folder each (the folder layout the video datasets read): a disc or a
square moving horizontally or vertically, bouncing off the borders, with a random colour,
size, start and speed on a dark plain background.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidgan.video_io import write_mp4

CLASSES = ("disc_horizontal", "disc_vertical", "square_horizontal", "square_vertical")


def _bounce(start: np.ndarray, speed: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions start + speed*t reflected into [low, high] (a triangle wave)."""
    span = high - low
    p = np.mod(start + speed - low, 2 * span)
    return low + np.where(p > span, 2 * span - p, p)


def render_clip(label: int, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip as uint8 (T, H, W, 3); vectorised over frames and pixels."""
    shape, axis = divmod(label, 2)  # shape 0 disc / 1 square; axis 0 horizontal / 1 vertical
    radius = rng.uniform(0.12, 0.2) * size
    t = np.arange(n_frames, dtype=np.float64)
    speed = rng.uniform(0.04, 0.09) * size * rng.choice([-1, 1])
    moving = _bounce(rng.uniform(radius, size - radius), speed * t, radius, size - radius)
    fixed = np.full(n_frames, rng.uniform(radius, size - radius))
    cx, cy = (moving, fixed) if axis == 0 else (fixed, moving)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]  # (T, H, W)
    inside = (dx ** 2 + dy ** 2 <= radius ** 2) if shape == 0 else \
        (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    background = rng.uniform(0, 60, 3)  # a dark plain background keeps the demo learnable fast
    colour = rng.uniform(140, 255, 3)
    frames = np.where(inside[..., None], colour, background)
    return frames.astype(np.uint8)


def write_dataset(root: str | Path, per_class: int = 64, n_frames: int = 32, size: int = 64,
                  fps: int = 8, seed: int = 0) -> Path:
    """Write ``per_class`` clips for every class under ``root/<class>/``; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip = torch.from_numpy(render_clip(label, n_frames, size, rng)).permute(3, 0, 1, 2)
            write_mp4(root / name / f"{name}_{i:04d}.mp4", clip, fps=fps, crf=18)
    (root / "COMPLETE").write_text(f"{per_class} clips per class, {n_frames} frames, {size}px\n")
    return root

