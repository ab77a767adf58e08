"""The mode-coverage dataset: 128 known modes of moving shapes (data.dataset=modes).

A mode is (shape, colour, direction): 4 shapes x 8 hues x 4 motion directions. Inside a mode
the size, start position, speed, brightness and background level are random; every clip
holds one object moving in a straight line (no bounce, it never leaves the frame) on a plain
dark background. Modes are balanced and the writer is deterministic for a seed.

The factors are chosen so that ``vidgan.metrics.modes`` can tell them apart with no learned
weights, at 32 x 32 after mp4's 4:2:0 chroma subsampling: the shapes differ in how much of
their bounding box they fill (disc pi/4, square 1, diamond and triangle 1/2) and the two
half-filling ones in where their mass sits (a triangle's centroid is h/6 below its box
centre, a diamond's at it); the hues are 45 degrees apart at full saturation.

Layout: ``root/<mode name>/<mode name>_<i>.mp4`` (one folder per mode, so the folder dataset
reads the mode id as the label) and ``root/modes.json`` recording every clip's mode.
Written on first use, or with ``python -m data_prep.modes``.
"""
from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import torch

from vidgan.video_io import write_mp4

SHAPES = ("disc", "square", "triangle", "diamond")
HUES = (0, 45, 90, 135, 180, 225, 270, 315)  # degrees
COLOURS = ("red", "orange", "chartreuse", "green", "cyan", "azure", "violet", "magenta")
DIRECTIONS = ("right", "left", "down", "up")
VELOCITY = ((1, 0), (-1, 0), (0, 1), (0, -1))  # unit (dx, dy) in image coordinates
N_MODES = len(SHAPES) * len(HUES) * len(DIRECTIONS)  # K = 128

# Ranges inside a mode, as fractions of the frame size (speed: per frame)
HALF_SIZE = (0.14, 0.2)  # disc radius; the other shapes have about the disc's area
SPEED = (0.018, 0.035)
VALUE = (0.85, 1.0)  # HSV value of the object
BACKGROUND = (0.0, 40.0)  # grey level of the background, 0..255
# The dataset's own seed, not train.seed: runs with different seeds see the same data.
DATA_SEED = 0


def mode_id(shape, colour, direction):
    """(shape, colour, direction) -> mode id; ints or integer tensors alike."""
    return (shape * len(HUES) + colour) * len(DIRECTIONS) + direction


def mode_factors(mode) -> Tuple:
    """mode id -> (shape, colour, direction); an int or an integer tensor."""
    rest, direction = mode // len(DIRECTIONS), mode % len(DIRECTIONS)
    return rest // len(HUES), rest % len(HUES), direction


def mode_name(mode: int) -> str:
    """'017_disc_chartreuse_left': the id first, so sorted folder names are in id order and
    the folder dataset's label of a clip is its mode id."""
    shape, colour, direction = mode_factors(mode)
    return f"{mode:03d}_{SHAPES[shape]}_{COLOURS[colour]}_{DIRECTIONS[direction]}"


def shape_mask(shape: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Inside-test of ``shape`` centred on its bounding box, for offsets (dx, dy) in pixels."""
    if shape == 0:  # disc, area pi r^2
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == 1:  # square, area (1.7 r)^2
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    w = 1.25 * r  # triangle and diamond: area 2 w^2 ~ pi r^2, bounding box 2w x 2w
    if shape == 2:  # triangle, apex up, base down
        return (np.abs(dy) <= w) & (np.abs(dx) <= (dy + w) / 2)
    return np.abs(dx) + np.abs(dy) <= w  # diamond


def render_clip(mode: int, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``mode`` as uint8 (T, H, W, 3); vectorised over frames and pixels."""
    shape, colour, direction = mode_factors(mode)
    r = rng.uniform(*HALF_SIZE) * size
    half = r if shape < 2 else 1.25 * r  # half the bounding box
    room = size - 2 * half - 2  # the path stays a pixel inside the frame
    fastest = min(SPEED[1] * size, room / max(n_frames - 1, 1))
    speed = rng.uniform(min(SPEED[0] * size, fastest), fastest)
    travel = speed * (n_frames - 1)
    vx, vy = VELOCITY[direction]
    start = rng.uniform(half + 1, size - half - 1 - travel)  # along the motion, forward
    across = rng.uniform(half + 1, size - half - 1)
    t = np.arange(n_frames, dtype=np.float64)
    along = start + speed * t if vx + vy > 0 else size - start - speed * t
    cx, cy = (along, np.full(n_frames, across)) if vx else (np.full(n_frames, across), along)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    inside = shape_mask(shape, xx[None] - cx[:, None, None], yy[None] - cy[:, None, None], r)
    rgb = np.array(colorsys.hsv_to_rgb(HUES[colour] / 360, 1.0, rng.uniform(*VALUE))) * 255
    background = np.full(3, rng.uniform(*BACKGROUND))
    return np.where(inside[..., None], rgb, background).astype(np.uint8)


def dataset_clips(per_mode: int = 8, n_frames: int = 16, size: int = 64,
                  seed: int = DATA_SEED) -> Iterator[Tuple[str, int, np.ndarray]]:
    """(relative path, mode id, uint8 (T, H, W, 3)) of every clip of the dataset, in order;
    a function of the arguments alone."""
    rng = np.random.default_rng(seed)
    for mode in range(N_MODES):
        name = mode_name(mode)
        for i in range(per_mode):
            yield f"{name}/{name}_{i:04d}.mp4", mode, render_clip(mode, n_frames, size, rng)


def write_dataset(root: str | Path, per_mode: int = 8, n_frames: int = 16, size: int = 64,
                  fps: int = 8, seed: int = DATA_SEED) -> Path:
    """Write ``per_mode`` clips of each of the 128 modes under ``root/<mode name>/`` and
    ``root/modes.json`` ({file: mode id}, plus the factor names); returns root.

    The clips are a function of the seed; their mp4 bytes may differ between writes by
    x264's noise (a few grey levels at edges), never by content.
    """
    root = Path(root)
    files = {}
    for rel, mode, clip in dataset_clips(per_mode, n_frames, size, seed):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_mp4(root / rel, torch.from_numpy(clip).permute(3, 0, 1, 2), fps=fps, crf=18)
        files[rel] = mode
    record = {"shapes": SHAPES, "colours": COLOURS, "hues": HUES, "directions": DIRECTIONS,
              "per_mode": per_mode, "n_frames": n_frames, "size": size, "seed": seed,
              "files": files}
    (root / "modes.json").write_text(json.dumps(record, indent=1) + "\n")
    (root / "COMPLETE").write_text(f"{per_mode} clips per mode, {n_frames} frames, {size}px\n")
    return root

