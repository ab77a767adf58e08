"""Mode coverage on the modes dataset (vidgan.data.modes): an analytic classifier of clips
into the 128 known modes, and the scores of a set of generated clips.

No learned weights. Per frame: the background is the median of the border pixels; the foreground mask holds the pixels that differ from it in some channel by more
than half the frame's largest difference (and FOREGROUND); its 8-connected components are found by max-pool label propagation on a grid of about
32 px; the largest is the object. Per clip:

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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch.nn import functional as F

from vidgan.data.modes import HUES, N_MODES, mode_factors, mode_id

WORK_SIZE = 32  # objects are found on a grid of about this size
FOREGROUND = 40.0  # 0..255, the least contrast of foreground; objects: >= 177 over the background
AREA = (0.02, 0.20)  # object area as a fraction of the frame
STRAY = 0.10  # foreground outside the object, as a fraction of its area
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
    """Per clip: mode id (-1 = invalid), its factors (-1 where a test failed first) and the
    index of the first failed test in REASONS (0 = valid)."""
    mode: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    direction: torch.Tensor
    reason: torch.Tensor

    def reason_counts(self) -> Dict[str, int]:
        counts = torch.bincount(self.reason, minlength=len(REASONS))
        return {name: int(n) for name, n in zip(REASONS, counts)}


def _components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of (N, H, W) bool masks (0 = background), by propagating
    the largest pixel index through each component with 3x3 max-pooling until it is stable."""
    n, h, w = mask.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(1, 1, h, w)
    m = mask[:, None].float()
    labels = index * m
    for i in range(h + w):  # a component's diameter bounds the rounds it needs
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * m
        if i % 4 == 3 and torch.equal(grown, labels):
            break
        labels = grown
    return labels[:, 0].long()


def _hsv(rgb: torch.Tensor):
    """(..., 3) in [0, 1] -> hue in degrees [0, 360), saturation, value."""
    value, arg = rgb.max(-1)
    low = rgb.min(-1).values
    delta = value - low
    r, g, b = rgb.unbind(-1)
    safe = delta.clamp_min(1e-6)
    hue = torch.where(arg == 0, ((g - b) / safe) % 6,
                      torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    return hue % 360.0, delta / value.clamp_min(1e-6), value


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


def _foreground(frames: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float frames -> (N, H, W) bool: differs from the border's median colour
    by more than half the frame's peak difference (the edge of an object blurred by 4:2:0
    chroma counts either way) and at least FOREGROUND."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0],
                        frames[..., :, -1]], dim=-1)  # (N, 3, 2H + 2W)
    background = border.median(-1).values
    diff = (frames - background[..., None, None]).abs().amax(1)  # (N, H, W)
    return diff > (0.5 * diff.amax((1, 2), keepdim=True)).clamp_min(FOREGROUND)


def _largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of ``mask`` (N, H, W) in its largest 8-connected component, found on a grid
    of about WORK_SIZE px (a cell is foreground if any of its pixels is)."""
    n, h, w = mask.shape
    factor = max(min(h, w) // WORK_SIZE, 1)
    coarse = F.max_pool2d(mask[:, None].float(), factor)[:, 0] > 0 if factor > 1 else mask
    ch, cw = coarse.shape[-2:]
    labels = _components(coarse).view(n, ch * cw)
    sizes = torch.zeros(n, ch * cw + 1, device=mask.device).scatter_add_(
        1, labels, torch.ones_like(labels, dtype=torch.float32))
    sizes[:, 0] = 0
    cells, main = sizes.max(1)
    keep = (labels == main[:, None]).view(n, ch, cw) & (cells > 0)[:, None, None]
    if factor > 1:
        keep = F.interpolate(keep[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0
    return mask & keep


def _geometry(obj: torch.Tensor):
    """Centroid (cy, cx), fill of the bounding box, centroid offset below the box centre in
    box heights, and the box's aspect ratio (>= 1) of (N, H, W) object masks."""
    n, h, w = obj.shape
    area = obj.view(n, -1).sum(1).float().clamp_min(1)
    rows, cols = obj.any(2), obj.any(1)  # (N, H), (N, W)
    ys = torch.arange(h, device=obj.device, dtype=torch.float32)
    xs = torch.arange(w, device=obj.device, dtype=torch.float32)
    top = torch.where(rows, ys, float(h)).amin(1)
    bottom = torch.where(rows, ys, -1.0).amax(1)
    left = torch.where(cols, xs, float(w)).amin(1)
    right = torch.where(cols, xs, -1.0).amax(1)
    box_h, box_w = (bottom - top + 1).clamp_min(1), (right - left + 1).clamp_min(1)
    cy = (obj.sum(2).float() * ys).sum(1) / area
    cx = (obj.sum(1).float() * xs).sum(1) / area
    offset = (cy - (top + bottom) / 2) / box_h
    return cy, cx, area / (box_h * box_w), offset, torch.maximum(box_h / box_w, box_w / box_h)


def _object_colour(frames: torch.Tensor, obj: torch.Tensor):
    """Hue, saturation, value of the mean colour inside the eroded object (its edges mix
    with the background in 4:2:0 chroma); the whole object if erosion leaves < 3 pixels."""
    inner = -F.max_pool2d(-obj[:, None].float(), 3, stride=1, padding=1)[:, 0]
    inner = torch.where(inner.sum((1, 2), keepdim=True) >= 3, inner, obj.float())
    rgb = (frames * inner[:, None]).sum((2, 3)) / inner.sum((1, 2)).clamp_min(1)[:, None]
    return _hsv(rgb.clamp(0, 255) / 255.0)


@torch.no_grad()
def classify_modes(video: torch.Tensor) -> ModePredictions:
    """Classify uint8 clips (B, 3, T, H, W) into the modes of vidgan.data.modes."""
    b, _, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float()  # (N, 3, H, W)
    mask = _foreground(frames)
    obj = _largest_component(mask)
    area = obj.view(b * t, -1).sum(1).float()
    total = mask.view(b * t, -1).sum(1).float()
    cy, cx, fill, offset, aspect = _geometry(obj)
    frac = area / (h * w)
    seen = frac >= AREA[0]
    single = seen & (frac <= AREA[1]) & (total - area <= STRAY * area)

    # shape per frame: 0 disc, 1 square, 2 triangle, 3 diamond, -1 none
    shape_f = _shape_of(fill, offset)
    shape_f[aspect > ASPECT] = -1

    hue_f, sat_f, val_f = _object_colour(frames, obj)

    # per clip
    def per(x):  # (B*T,) -> (B, T)
        return x.view(b, t)

    ok = per(single)
    good = ok.float()
    n_good = good.sum(1)
    enough = n_good >= t - 1
    has_object = per(seen).float().sum(1) >= t - 1

    # the clip's shape from the median fill and offset over its good frames (a single frame
    # at 32 px is +-1 px in its box: disc fills 0.64-0.94 of it, the clip median 0.72-0.85)
    nan = torch.tensor(float("nan"), device=video.device)
    shape = _shape_of(torch.where(ok, per(fill), nan).nanmedian(1).values,
                      torch.where(ok, per(offset), nan).nanmedian(1).values)
    agree = ((per(shape_f) == shape[:, None]) & ok).sum(1)
    shape_ok = (shape >= 0) & (agree >= SHAPE_AGREEMENT * n_good.clamp_min(1))

    # the clip's hue: circular mean over its good frames
    rad = per(hue_f) * (math.pi / 180)
    hue = torch.atan2((torch.sin(rad) * good).sum(1), (torch.cos(rad) * good).sum(1))
    hue = (hue * (180 / math.pi)) % 360.0
    palette = torch.tensor(HUES, dtype=torch.float32, device=video.device)
    to_palette = _hue_distance(hue[:, None], palette[None])
    nearest, colour = to_palette.min(1)

    def mean_of(x):  # over the good frames of each clip
        return (per(x) * good).sum(1) / n_good.clamp_min(1)

    colour_ok = (mean_of(sat_f) >= MIN_SATURATION) & (mean_of(val_f) >= MIN_VALUE) & \
        (nearest <= HUE_TOLERANCE)
    steady = ((_hue_distance(per(hue_f), hue[:, None]) * good).amax(1) <= HUE_TOLERANCE)

    size = float(max(h, w))
    vx, jump_x = _weighted_line(per(cx), good)
    vy, jump_y = _weighted_line(per(cy), good)
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
    # a factor is known when its test and those before it passed
    shape = torch.where(valid | (reason > REASONS.index("no known shape")), shape, invalid)
    colour = torch.where(valid | (reason > REASONS.index("colour changes")), colour, invalid)
    direction = torch.where(valid, direction, invalid)
    mode = torch.where(valid, mode_id(shape, colour, direction), invalid)
    return ModePredictions(mode.cpu(), shape.cpu(), colour.cpu(), direction.cpu(), reason.cpu())


def mode_scores(mode: torch.Tensor, n_modes: int = N_MODES,
                reason: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Scores of clips' mode ids (-1 = invalid): modes covered (of n_modes), KL(p_gen ||
    uniform) over the valid clips, the fraction valid, and how many shapes, colours and
    directions the valid clips cover. With no valid clip the KL is log(n_modes), its value
    for a single mode (its maximum). With the classifier's ``reason`` codes, also the
    fraction of clips invalid for each reason (modes_invalid_no_object, ...): what the
    generator still gets wrong."""
    mode = mode.long()
    valid = mode >= 0
    counts = torch.bincount(mode[valid], minlength=n_modes).double()
    n = counts.sum()
    if n > 0:
        p = counts[counts > 0] / n
        kl = float((p * torch.log(p * n_modes)).sum())
    else:
        kl = math.log(n_modes)
    shapes, colours, directions = mode_factors(mode[valid])
    out = {"modes_covered": float((counts > 0).sum()), "modes_kl": kl,
           "modes_valid": float(valid.double().mean()) if len(mode) else 0.0,
           "modes_shapes": float(len(torch.unique(shapes))),
           "modes_colours": float(len(torch.unique(colours))),
           "modes_directions": float(len(torch.unique(directions)))}
    if reason is not None:
        share = torch.bincount(reason.long(), minlength=len(REASONS)).double() / max(len(reason), 1)
        out.update({f"modes_invalid_{key}": float(f)
                    for key, f in zip(REASON_KEYS[1:], share[1:])})
    return out
