"""One moving object per clip, measured frame by frame: the part of the analytic classifiers
of the generated datasets (vidgan.metrics.modes for the modes dataset, vidgan.metrics.synthetic
for the demo's) that does not depend on which dataset it is.

No learned weights. Per frame: the background is the median of the border pixels; the
foreground mask holds the pixels that differ from it in some channel by more than half the
frame's largest difference (and FOREGROUND); its 8-connected components are found by max-pool
label propagation on a grid of about WORK_SIZE px; the largest is the object. Its area,
centroid, bounding box and mean colour are what the classifiers read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

WORK_SIZE = 32  # objects are found on a grid of about this size
FOREGROUND = 40.0  # 0..255, the least contrast of foreground; objects: >= 80 over the background
STRAY = 0.10  # foreground outside the object, as a fraction of its area


@dataclass
class ObjectFrames:
    """Per frame of (B, T) clips: the largest component's area as a fraction of the frame,
    whether it is the only foreground (others add <= STRAY of its area), its centroid in
    pixels, fill of its bounding box, centroid offset below the box centre in box heights,
    box aspect ratio (>= 1), and mean colour (..., 3) in 0..255 inside the eroded object."""
    area: torch.Tensor
    alone: torch.Tensor
    cy: torch.Tensor
    cx: torch.Tensor
    fill: torch.Tensor
    offset: torch.Tensor
    aspect: torch.Tensor
    rgb: torch.Tensor


def measure_objects(video: torch.Tensor) -> ObjectFrames:
    """The largest object of every frame of uint8 clips (B, 3, T, H, W)."""
    b, _, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w).float()  # (N, 3, H, W)
    mask = foreground(frames)
    obj = largest_component(mask)
    area = obj.view(b * t, -1).sum(1).float()
    total = mask.view(b * t, -1).sum(1).float()
    cy, cx, fill, offset, aspect = geometry(obj)
    per = [x.view(b, t) for x in (area / (h * w), total - area <= STRAY * area, cy, cx, fill,
                                  offset, aspect)]
    return ObjectFrames(*per, rgb=object_rgb(frames, obj).view(b, t, 3))


def components(mask: torch.Tensor) -> torch.Tensor:
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


def foreground(frames: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float frames -> (N, H, W) bool: differs from the border's median colour
    by more than half the frame's peak difference (the edge of an object blurred by 4:2:0
    chroma counts either way) and at least FOREGROUND."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0],
                        frames[..., :, -1]], dim=-1)  # (N, 3, 2H + 2W)
    background = border.median(-1).values
    diff = (frames - background[..., None, None]).abs().amax(1)  # (N, H, W)
    return diff > (0.5 * diff.amax((1, 2), keepdim=True)).clamp_min(FOREGROUND)


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of ``mask`` (N, H, W) in its largest 8-connected component, found on a grid
    of about WORK_SIZE px (a cell is foreground if any of its pixels is)."""
    n, h, w = mask.shape
    factor = max(min(h, w) // WORK_SIZE, 1)
    coarse = F.max_pool2d(mask[:, None].float(), factor)[:, 0] > 0 if factor > 1 else mask
    ch, cw = coarse.shape[-2:]
    labels = components(coarse).view(n, ch * cw)
    sizes = torch.zeros(n, ch * cw + 1, device=mask.device).scatter_add_(
        1, labels, torch.ones_like(labels, dtype=torch.float32))
    sizes[:, 0] = 0
    cells, main = sizes.max(1)
    keep = (labels == main[:, None]).view(n, ch, cw) & (cells > 0)[:, None, None]
    if factor > 1:
        keep = F.interpolate(keep[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0
    return mask & keep


def geometry(obj: torch.Tensor):
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


def object_rgb(frames: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """Mean colour (N, 3) in 0..255 inside the eroded object of (N, 3, H, W) frames (its edges
    mix with the background in 4:2:0 chroma); the whole object if erosion leaves < 3 pixels."""
    inner = -F.max_pool2d(-obj[:, None].float(), 3, stride=1, padding=1)[:, 0]
    inner = torch.where(inner.sum((1, 2), keepdim=True) >= 3, inner, obj.float())
    rgb = (frames * inner[:, None]).sum((2, 3)) / inner.sum((1, 2)).clamp_min(1)[:, None]
    return rgb.clamp(0, 255)


def hsv(rgb: torch.Tensor):
    """(..., 3) in [0, 1] -> hue in degrees [0, 360), saturation, value."""
    value, arg = rgb.max(-1)
    low = rgb.min(-1).values
    delta = value - low
    r, g, b = rgb.unbind(-1)
    safe = delta.clamp_min(1e-6)
    hue = torch.where(arg == 0, ((g - b) / safe) % 6,
                      torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    return hue % 360.0, delta / value.clamp_min(1e-6), value


