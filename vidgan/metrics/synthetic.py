"""What the demo's samples show: an analytic reading of clips of the embedded demo dataset
(vidgan.data.synthetic: a disc or a square of a random bright colour moving horizontally or
vertically on a dark plain background, bouncing off the borders), and the scores of a set.

No learned weights: every frame's object is measured by vidgan.metrics.objects. A clip holds
**one coherent moving object** when, in all but at most one frame, a single component covers
2-25% of the frame (the data's: 4-13%), keeps its size (largest / smallest area <= 1.6) and its
colour (every frame within 40/255 per channel of the clip's median), moves at least 1% of the
frame per frame (median step; the data: 4-9%) without jumping (no step over 20%), and along one
axis (the other axis' path at most half as long). Its class is shape x axis: disc or square from
the median fill of its bounding box (disc pi/4, square 1), horizontal or vertical from the
longer path.

Scores of a set (``synthetic_*``): the fraction of coherent clips, how many of the 4 classes
they hold, KL(p || uniform) over them and each class's share; the colour spread (RMS over the
channels of the std of their colours, 0..255) and the typical motion (median step, fraction of
the frame). Both depend on the data, so with the real clips' values (``reference``) they are
also given as ratios to the data's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from vidgan.data.synthetic import CLASSES
from vidgan.metrics.objects import measure_objects
from vidgan.metrics.registry import Metric, Reader, Reference
from vidgan.metrics.stats import kl_to_uniform
from vidgan.video_io import to_uint8

AREA = (0.02, 0.25)  # object area as a fraction of the frame
SIZE_CHANGE = 1.6  # largest / smallest area of the object over the clip
COLOUR_CHANGE = 40.0  # 0..255, per channel, from the clip's median colour
MIN_STEP, MAX_STEP = 0.01, 0.20  # fractions of the frame size per frame
CROSS_PATH = 0.5  # path along the minor axis / along the major one
FILL_SQUARE = 0.90  # disc pi/4 = 0.785, square 1.0 (measured on mp4 clips: see the tests)
N_CLASSES = len(CLASSES)


@dataclass
class SyntheticReading:
    """Per clip: one coherent moving object or not, its class (CLASSES index, -1 if not
    coherent), median colour (3,) in 0..255 and median step as a fraction of the frame."""
    coherent: torch.Tensor
    label: torch.Tensor
    colour: torch.Tensor
    step: torch.Tensor

    @classmethod
    def cat(cls, readings) -> "SyntheticReading":
        """One reading of the clips of several (batches in order)."""
        readings = list(readings)
        return cls(*(torch.cat([getattr(r, f) for r in readings])
                     for f in ("coherent", "label", "colour", "step")))


def _nanmedian(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Median over dim 1 of ``x`` (B, T, ...) where ``keep`` (B, T) holds."""
    mask = keep.view(*keep.shape, *([1] * (x.dim() - 2)))
    return torch.where(mask, x, torch.full_like(x, float("nan"))).nanmedian(1).values


@torch.no_grad()
def read_synthetic(video: torch.Tensor) -> SyntheticReading:
    """Read uint8 clips (B, 3, T, H, W) of the demo dataset's kind."""
    b, _, t, h, w = video.shape
    obj = measure_objects(video)
    ok = (obj.area >= AREA[0]) & (obj.area <= AREA[1]) & obj.alone  # (B, T)
    enough = ok.sum(1) >= t - 1

    area = torch.where(ok, obj.area, torch.nan)
    steady_size = area.nan_to_num(0).amax(1) <= SIZE_CHANGE * area.nan_to_num(1.0).amin(1)
    colour = _nanmedian(obj.rgb, ok)  # (B, 3)
    off = (obj.rgb - colour[:, None]).abs().amax(2)  # (B, T)
    steady_colour = torch.where(ok, off, torch.zeros_like(off)).amax(1) <= COLOUR_CHANGE

    # steps between consecutive good frames (a bad frame breaks the path there)
    size = float(max(h, w))
    pair = ok[:, 1:] & ok[:, :-1]
    dx, dy = (obj.cx.diff(dim=1).abs() / size), (obj.cy.diff(dim=1).abs() / size)
    step = torch.hypot(dx, dy)
    median_step = _nanmedian(step, pair).nan_to_num(0.0)
    no_jump = torch.where(pair, step, torch.zeros_like(step)).amax(1) <= MAX_STEP
    path_x, path_y = (dx * pair).sum(1), (dy * pair).sum(1)
    major, minor = torch.maximum(path_x, path_y), torch.minimum(path_x, path_y)
    one_axis = minor <= CROSS_PATH * major
    coherent = (enough & steady_size & steady_colour & (median_step >= MIN_STEP) & no_jump
                & one_axis)

    fill = _nanmedian(obj.fill, ok)
    square = fill >= FILL_SQUARE
    vertical = path_y > path_x
    label = square.long() * 2 + vertical.long()  # CLASSES order: shape-major, then axis
    label = torch.where(coherent, label, torch.full_like(label, -1))
    return SyntheticReading(coherent.cpu(), label.cpu(), colour.cpu(), median_step.cpu())


def colour_spread(colour: torch.Tensor) -> float:
    """RMS over the channels of the std of (N, 3) colours (0..255); 0 for fewer than 2."""
    if len(colour) < 2:
        return 0.0
    return float(colour.double().var(0).mean().sqrt())


def synthetic_scores(reading: SyntheticReading,
                     reference: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Scores of a set of read clips; ``reference``: the real clips' scores, for the ratios."""
    coherent = reading.coherent
    labels = reading.label[coherent]
    counts = torch.bincount(labels, minlength=N_CLASSES).double()
    n = counts.sum()
    p = counts / n if n > 0 else counts
    kl = kl_to_uniform(counts)
    out = {"synthetic_coherent": float(coherent.double().mean()) if len(coherent) else 0.0,
           "synthetic_classes": float((counts > 0).sum()), "synthetic_kl": kl,
           "synthetic_colour_spread": colour_spread(reading.colour[coherent]),
           "synthetic_motion": float(reading.step[coherent].median()) if n > 0 else 0.0}
    out.update({f"synthetic_share_{name}": float(share) for name, share in zip(CLASSES, p)})
    if reference is not None:
        out["synthetic_colour_ratio"] = out["synthetic_colour_spread"] / max(
            reference["synthetic_colour_spread"], 1e-9)
        out["synthetic_motion_ratio"] = out["synthetic_motion"] / max(
            reference["synthetic_motion"], 1e-9)
    return out


_REPORT = (("synthetic_coherent", "clips with one coherent moving object", "{:.2f}"),
           ("synthetic_classes", "classes present (disc/square x horizontal/vertical)", "{:.0f}"),
           ("synthetic_kl", "KL(classes || uniform)", "{:.3f}"),
           ("synthetic_colour_spread", "colour spread (std of the colours, 0-255)", "{:.1f}"),
           ("synthetic_motion", "typical motion (median step, fraction of the frame)", "{:.3f}"))


def report(scores: Dict[str, float], reference: Optional[Dict[str, float]],
           heading: str) -> str:
    """The scores of the generated clips beside those of the real clips (``reference``), one
    line each, for a person to read."""
    def cell(values, key, fmt):
        return fmt.format(values[key]) if values and key in values else "-"
    lines = [heading, f"  {'':<52} {'samples':>8} {'real data':>10}"]
    for key, label, fmt in _REPORT:
        if key in scores:
            lines.append(f"  {label:<52} {cell(scores, key, fmt):>8} "
                         f"{cell(reference, key, fmt):>10}")
    for name in CLASSES:
        key = f"synthetic_share_{name}"
        lines.append(f"  {'share of ' + name:<52} {cell(scores, key, '{:.2f}'):>8} "
                     f"{cell(reference, key, '{:.2f}'):>10}")
    return "\n".join(lines)


READERS = (Reader("synthetic", None, read=lambda x, _: read_synthetic(to_uint8(x)),
                  cat=SyntheticReading.cat),)
# the scores of 256 random real training clips (seconds to read: not cached); the colour
# spread and motion of generated clips are reported as ratios to them
REAL_CLIPS = Reference("synthetic_train_256", "train", 256, reduce=synthetic_scores,
                       videos="random", cache=False, optional=True)
METRICS = (Metric("synthetic", "synthetic",
                  lambda reads, reference, options: synthetic_scores(reads, reference),
                  reference=REAL_CLIPS, weights="none (analytic)",
                  comparable="the CPU demo's data only (docs/DEMO.md)"),)
