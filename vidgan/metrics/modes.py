"""Mode coverage on the modes dataset (vidgan.data.modes): an analytic classifier of clips
into the 128 known modes, and the scores of a set of generated clips.

No learned weights. Every frame's object is measured by vidgan.metrics.objects (foreground
against the border's median colour, its largest 8-connected component). Per clip:

- object: in all but at most one frame a single component holds the foreground (others add
  <= 10% of its area) and covers 2-20% of the frame (the data's objects: 5-13%);
- shape from the mask: fill = area / bounding-box area (disc pi/4, square 1, triangle and
  diamond 1/2) and, for the half-filling two, the centroid's offset below the box centre in
  box heights (triangle 1/6, diamond 0), medians over the frames; at least half of the
  frames read alone must give the same shape;
- colour: the mean colour of the eroded mask -> HSV; the nearest of the 8 hues if saturation
  >= 0.5, value >= 0.4 and it lies within 15 degrees (the hues are 45 apart); every frame's
  hue within 15 degrees of the clip's, else the colour flickers;
- direction: a least-squares line through the centroid track; the object must move at least
  0.6% of the frame per frame (the data: >= 1.8%), mostly along one axis (the other slope at
  most 0.35 of it), and stay within 6% of the frame of the line (no jumps).

A clip that fails any test is invalid (mode -1) with the first failed test as its reason.
Each factor is also read on its own (shape, colour, direction: the object tests and that
factor's tests): a generator that draws the right shapes in drifting colours still shows its
shape coverage, long before any clip passes every test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Dict, Iterable, Optional

import torch

from vidgan.data.modes import DIRECTIONS, HUES, N_MODES, SHAPES, mode_factors, mode_id
from vidgan.metrics.objects import hsv, measure_objects
from vidgan.metrics.registry import Metric, Reader
from vidgan.metrics.stats import kl_to_uniform
from vidgan.video_io import to_uint8

AREA = (0.02, 0.20)  # object area as a fraction of the frame
# Lower bounds of the fill classes and the triangle's centroid offset (in box heights), set
# between the clip medians measured on mp4 clips at 32 px (disc 0.72-0.85, square >= 0.94,
# triangle and diamond 0.50-0.68; offset triangle >= 0.11, diamond <= 0.035).
FILL_SQUARE, FILL_DISC, FILL_HALF = 0.90, 0.70, 0.40
OFFSET_TRIANGLE = 0.07
ASPECT = 1.5  # the bounding box of every shape is square
SHAPE_AGREEMENT = 0.5  # of the good frames, read one by one
MIN_SATURATION, MIN_VALUE, HUE_TOLERANCE = 0.5, 0.4, 15.0
MIN_SPEED, CROSS_SPEED, MAX_JUMP = 0.006, 0.35, 0.06  # fractions of the frame size / ratio

REASONS = ("valid", "no object", "not one object", "no known shape", "off palette",
           "colour changes", "still", "not a straight line")
REASON_KEYS = ("valid", "no_object", "not_one_object", "no_known_shape", "off_palette",
               "colour_changes", "still", "not_straight")  # as score names


@dataclass
class ModePredictions:
    """Per clip: mode id (-1 = invalid), each factor read on its own (-1 where the object
    tests or that factor's tests fail, whatever the other factors do) and the index of the
    first failed test in REASONS (0 = valid)."""
    mode: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    direction: torch.Tensor
    reason: torch.Tensor

    @classmethod
    def cat(cls, parts: Iterable["ModePredictions"]) -> "ModePredictions":
        parts = list(parts)
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def reason_counts(self) -> Dict[str, int]:
        counts = torch.bincount(self.reason, minlength=len(REASONS))
        return {name: int(n) for name, n in zip(REASONS, counts)}


def _hue_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs() % 360.0
    return torch.minimum(d, 360.0 - d)


def _weighted_line(track: torch.Tensor, weight: torch.Tensor):
    """Least-squares slope and largest residual of (B, T) tracks over the frames weighted 1."""
    t = torch.arange(track.shape[1], dtype=track.dtype, device=track.device).expand_as(track)
    n = weight.sum(1).clamp_min(1)
    t_mean = (weight * t).sum(1) / n
    x_mean = (weight * track).sum(1) / n
    dt = t - t_mean[:, None]
    slope = (weight * dt * (track - x_mean[:, None])).sum(1) / (weight * dt ** 2).sum(1).clamp_min(1e-6)
    fit = x_mean[:, None] + slope[:, None] * dt
    return slope, ((track - fit).abs() * weight).amax(1)


def _shape_of(fill: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """0 disc, 1 square, 2 triangle, 3 diamond, -1 none, from fill and centroid offset."""
    shape = torch.full(fill.shape, -1, dtype=torch.long, device=fill.device)
    shape[(fill >= FILL_DISC) & (fill < FILL_SQUARE)] = 0
    shape[fill >= FILL_SQUARE] = 1
    half = (fill >= FILL_HALF) & (fill < FILL_DISC)
    shape[half & (offset >= OFFSET_TRIANGLE)] = 2
    shape[half & (offset.abs() < OFFSET_TRIANGLE)] = 3
    return shape


@torch.no_grad()
def classify_modes(video: torch.Tensor) -> ModePredictions:
    """Classify uint8 clips (B, 3, T, H, W) into the modes of vidgan.data.modes."""
    b, _, t, h, w = video.shape
    obj = measure_objects(video)
    seen = obj.area >= AREA[0]
    ok = seen & (obj.area <= AREA[1]) & obj.alone

    # shape per frame: 0 disc, 1 square, 2 triangle, 3 diamond, -1 none
    shape_f = _shape_of(obj.fill, obj.offset)
    shape_f[obj.aspect > ASPECT] = -1

    hue_f, sat_f, val_f = hsv(obj.rgb / 255.0)

    good = ok.float()
    n_good = good.sum(1)
    enough = n_good >= t - 1
    has_object = seen.float().sum(1) >= t - 1

    # the clip's shape from the median fill and offset over its good frames (a single frame
    # at 32 px is +-1 px in its box: disc fills 0.64-0.94 of it, the clip median 0.72-0.85)
    nan = torch.tensor(float("nan"), device=video.device)
    shape = _shape_of(torch.where(ok, obj.fill, nan).nanmedian(1).values,
                      torch.where(ok, obj.offset, nan).nanmedian(1).values)
    agree = ((shape_f == shape[:, None]) & ok).sum(1)
    shape_ok = (shape >= 0) & (agree >= SHAPE_AGREEMENT * n_good.clamp_min(1))

    # the clip's hue: circular mean over its good frames
    rad = hue_f * (math.pi / 180)
    hue = torch.atan2((torch.sin(rad) * good).sum(1), (torch.cos(rad) * good).sum(1))
    hue = (hue * (180 / math.pi)) % 360.0
    palette = torch.tensor(HUES, dtype=torch.float32, device=video.device)
    to_palette = _hue_distance(hue[:, None], palette[None])
    nearest, colour = to_palette.min(1)

    def mean_of(x):  # over the good frames of each clip
        return (x * good).sum(1) / n_good.clamp_min(1)

    colour_ok = (mean_of(sat_f) >= MIN_SATURATION) & (mean_of(val_f) >= MIN_VALUE) & \
        (nearest <= HUE_TOLERANCE)
    steady = ((_hue_distance(hue_f, hue[:, None]) * good).amax(1) <= HUE_TOLERANCE)

    size = float(max(h, w))
    vx, jump_x = _weighted_line(obj.cx, good)
    vy, jump_y = _weighted_line(obj.cy, good)
    major = torch.maximum(vx.abs(), vy.abs())
    minor = torch.minimum(vx.abs(), vy.abs())
    moving = major >= MIN_SPEED * size
    straight = (minor <= CROSS_SPEED * major) & (torch.maximum(jump_x, jump_y) <= MAX_JUMP * size)
    horizontal = vx.abs() >= vy.abs()
    direction = torch.where(horizontal, torch.where(vx > 0, 0, 1), torch.where(vy > 0, 2, 3))

    # the first failed test, in REASONS order
    checks = [has_object, enough, shape_ok, colour_ok, steady, moving, straight]
    reason = torch.zeros(b, dtype=torch.long, device=video.device)
    for i, passed in reversed(list(enumerate(checks, start=1))):
        reason = torch.where(passed, reason, torch.full_like(reason, i))
    valid = reason == 0
    invalid = torch.full_like(reason, -1)
    readable = has_object & enough
    shape = torch.where(readable & shape_ok, shape, invalid)
    colour = torch.where(readable & colour_ok & steady, colour, invalid)
    direction = torch.where(readable & moving & straight, direction, invalid)
    mode = torch.where(valid, mode_id(shape.clamp_min(0), colour.clamp_min(0),
                                      direction.clamp_min(0)), invalid)
    return ModePredictions(mode.cpu(), shape.cpu(), colour.cpu(), direction.cpu(), reason.cpu())


FACTORS = (("shape", len(SHAPES)), ("colour", len(HUES)), ("direction", len(DIRECTIONS)))


def _coverage(values: torch.Tensor, k: int):
    """Covered values (of k) and KL(p || uniform over k) of the values >= 0; with none the
    KL is log(k), its value for a single value (its maximum)."""
    counts = torch.bincount(values[values >= 0].long(), minlength=k)
    return float((counts > 0).sum()), kl_to_uniform(counts)


def mode_scores(mode: torch.Tensor, n_modes: int = N_MODES,
                reason: Optional[torch.Tensor] = None,
                factors: Optional[ModePredictions] = None) -> Dict[str, float]:
    """Scores of clips' mode ids (-1 = invalid): modes covered (of n_modes), KL(p_gen ||
    uniform) over the valid clips, the fraction valid, and how many shapes, colours and
    directions the valid clips cover. With no valid clip the KL is log(n_modes), its value
    for a single mode (its maximum). With the classifier's ``reason`` codes, also the
    fraction of clips invalid for each reason (modes_invalid_no_object, ...): what the
    generator still gets wrong. With the classifier's predictions as ``factors``, each
    factor read on its own: the fraction of clips where it reads (modes_shape_read, ...),
    the values covered and KL(p || uniform) over those clips (modes_shape_covered,
    modes_shape_kl, ...), so a factor that collapses shows before any clip is valid."""
    mode = mode.long()
    valid = mode >= 0
    covered, kl = _coverage(mode, n_modes)
    shapes, colours, directions = mode_factors(mode[valid])
    out = {"modes_covered": covered, "modes_kl": kl,
           "modes_valid": float(valid.double().mean()) if len(mode) else 0.0,
           "modes_shapes": float(len(torch.unique(shapes))),
           "modes_colours": float(len(torch.unique(colours))),
           "modes_directions": float(len(torch.unique(directions)))}
    if reason is not None:
        share = torch.bincount(reason.long(), minlength=len(REASONS)).double() / max(len(reason), 1)
        out.update({f"modes_invalid_{key}": float(f)
                    for key, f in zip(REASON_KEYS[1:], share[1:])})
    if factors is not None:
        for name, k in FACTORS:
            values = getattr(factors, name)
            covered, kl = _coverage(values, k)
            out.update({f"modes_{name}_read": float((values >= 0).double().mean())
                        if len(values) else 0.0,
                        f"modes_{name}_covered": covered, f"modes_{name}_kl": kl})
    return out


def _score(reads: ModePredictions, reference, options) -> Dict[str, float]:
    return mode_scores(reads.mode, reason=reads.reason, factors=reads)


READERS = (Reader("modes", None, read=lambda x, _: classify_modes(to_uint8(x)),
                  cat=ModePredictions.cat),)
METRICS = (Metric("modes", "modes", _score, weights="none (analytic)",
                  comparable="vidgan's modes dataset only (docs/BENCHMARKS.md)"),)
