"""Draw the temporal-generator comparison from a bench_modes directory: per config one row,
the frames of sample clips of its seed-0 generator and the change per frame over t (grey
levels, mean absolute difference from the previous frame, over 16 fixed latents; one thin
line per seed, the mean thick), with the modes dataset's own clips as the first row and
their change curve dashed in every row (a real object moves 1-2 px per frame: a curve far
above it is flicker, not motion).

    python -m benchmarks.plot_temporal --bench runs/bench_modes_temporal \
        --configs modes_st4,modes_st4_noise,... [--iterations 1000] [--clips 2] \
        [--out docs/img/temporal_generators.png]

Reads ``<bench>/results.json`` (the ``change_curve`` bench_modes records) and the runs'
final checkpoints; PIL only, no plotting library.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from PIL import Image, ImageDraw

SCALE = 2  # each 32 px frame drawn at 64 px
PLOT_W, LABEL_W, PAD = 260, 150, 8
RIGHT = 24  # room for the grid labels
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]


@torch.no_grad()
def sample_frames(checkpoint: Path, clips: int, seed: int = 123) -> torch.Tensor:
    """(clips, T, H, W, 3) uint8 frames of the run's EMA generator, latents of ``seed`` (the
    first of the 16 that bench_modes' change curve averages)."""
    from vidgan.checkpoint import load_generator
    G = load_generator(checkpoint, device="cpu").G
    z = G.sample_z(16, generator=torch.Generator().manual_seed(seed))[:clips]
    video = G(z)  # (clips, 3, T, H, W) in [-1, 1]
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


def strip(frames: torch.Tensor) -> Image.Image:
    """(clips, T, H, W, 3) -> one image: each clip a row of its T frames."""
    clips, t, h, w, _ = frames.shape
    grid = frames.permute(0, 2, 1, 3, 4).reshape(clips * h, t * w, 3).numpy()
    image = Image.fromarray(grid)
    return image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)


def height(v: float, y_max: float) -> float:
    """A value's height in its box, 0-1, on a square-root scale: the curves span 0.5-40 grey
    levels, and the small ones (real motion is about 2) matter most."""
    return min(max(v, 0.0) / y_max, 1.0) ** 0.5


def curve_points(box, curve, y_max: float) -> list:
    """``curve``'s values as points in ``box`` (x0, y0, x1, y1), evenly spread over x."""
    x0, y0, x1, y1 = box
    n = len(curve)
    return [(x0 + (x1 - x0) * i / max(n - 1, 1), y1 - (y1 - y0) * height(v, y_max))
            for i, v in enumerate(curve)]


def draw_curves(draw: ImageDraw.ImageDraw, box, curves, y_max: float, colour) -> None:
    """Change per frame over t = 2..T in ``box`` (x0, y0, x1, y1): thin per seed, thick mean."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    n = len(curves[0])
    for level in (1, 2, 5, 10, 20, 40):  # grid lines, labelled on the right
        if level < y_max:
            y = y1 - (y1 - y0) * height(level, y_max)
            draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
            draw.text((x1 + 3, y - 6), str(level), fill=(120, 120, 120))
    for curve in curves:
        draw.line(curve_points(box, curve, y_max), fill=colour + (90,), width=1)
    mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
    draw.line(curve_points(box, mean, y_max), fill=colour, width=3)
    for frame in (3, 8, 16):  # ticks at frames 3, 8, 16 (the curve starts at frame 2)
        x = x0 + (x1 - x0) * (frame - 2) / max(n - 1, 1)
        draw.line([(x, y1), (x, y1 + 4)], fill=(0, 0, 0))
        draw.text((x - 4, y1 + 5), str(frame), fill=(0, 0, 0))


def real_row(config: str, clips: int, runs: int):
    """The dataset's own clips as the figure's first row: frames of ``clips`` real clips and
    their change curve (drawn as flat across the seeds, ``runs`` copies of one curve)."""
    from benchmarks.bench_modes import real_clips, real_motion
    curve = real_motion(config)["change_curve"]
    return "real clips", [curve] * runs, strip(real_clips(config, clips, seed=123)), None


def render(bench: Path, configs: list, iterations: int, clips: int) -> Image.Image:
    results = json.loads((bench / "results.json").read_text())
    rows = []
    for name in configs:
        runs = [r for r in results if r["config"] == name and r["iterations"] == iterations
                and "change_curve" in r]
        if not runs:
            raise SystemExit(f"{bench}/results.json has no {iterations}-iteration run of "
                             f"{name} with a change curve")
        ckpt = bench / f"{name}_seed0" / "checkpoints" / f"ckpt_{iterations:08d}.pt"
        covered = statistics.mean(r["modes_covered"] for r in runs if "modes_covered" in r)
        rows.append((name, [r["change_curve"] for r in runs], strip(sample_frames(ckpt, clips)),
                     covered))
    rows.insert(0, real_row(configs[0], clips, len(rows[0][1])))
    y_max = max(max(c) for _, curves, *_ in rows for c in curves) * 1.05
    row_h = max(image.height for _, _, image, _ in rows) + 2 * PAD + 14
    width = LABEL_W + max(image.width for _, _, image, _ in rows) + PLOT_W + 4 * PAD + RIGHT
    canvas = Image.new("RGB", (width, row_h * len(rows) + 24), (255, 255, 255))
    draw = ImageDraw.Draw(canvas, "RGBA")
    draw.text((PAD, 6), f"{iterations} iterations; right: change per frame (grey levels, "
                        "square-root scale) over frames 2-16, mean over the seeds (thick) and "
                        "each seed; dashed: the real clips'", fill=(0, 0, 0))
    real_curve = rows[0][1][0]
    for k, (name, curves, image, covered) in enumerate(rows):
        top = 24 + k * row_h
        colour = (0, 0, 0) if covered is None else COLOURS[(k - 1) % len(COLOURS)]
        draw.text((PAD, top + PAD), name, fill=colour)
        late = statistics.mean(statistics.mean(c[2:]) for c in curves)
        early = statistics.mean(statistics.mean(c[:2]) for c in curves)
        draw.text((PAD, top + PAD + 16), f"frames 2-3: {early:.1f}", fill=(0, 0, 0))
        draw.text((PAD, top + PAD + 30), f"frames 4-16: {late:.1f}", fill=(0, 0, 0))
        if covered is not None:
            draw.text((PAD, top + PAD + 44), f"modes: {covered:.1f} of 128", fill=(0, 0, 0))
            draw.text((PAD, top + PAD + 58), f"{len(curves)} seed{'s' * (len(curves) > 1)}",
                      fill=(0, 0, 0))
        canvas.paste(image, (LABEL_W, top + PAD))
        x0 = LABEL_W + image.width + 2 * PAD
        box = (x0, top + PAD, x0 + PLOT_W, top + row_h - PAD - 14)
        draw_curves(draw, box, curves, y_max, colour)
        draw_dashed(draw, box, real_curve, y_max)
    return canvas


def draw_dashed(draw: ImageDraw.ImageDraw, box, curve, y_max: float) -> None:
    """``curve`` in ``box`` as a dashed grey line: the reference each row is read against."""
    points = curve_points(box, curve, y_max)
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        for f in range(0, 10, 2):  # 5 dashes per segment
            draw.line([(xa + (xb - xa) * f / 10, ya + (yb - ya) * f / 10),
                       (xa + (xb - xa) * (f + 1) / 10, ya + (yb - ya) * (f + 1) / 10)],
                      fill=(90, 90, 90), width=2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="runs/bench_modes_temporal")
    parser.add_argument("--configs", default="modes_st4,modes_st4_noise,modes_mocogan,"
                                             "modes_st4_tgan1d,modes_st4_ode,modes_st4_sde")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--out", default="docs/img/temporal_generators.png")
    args = parser.parse_args(argv)
    image = render(Path(args.bench), args.configs.split(","), args.iterations, args.clips)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
