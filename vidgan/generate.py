"""Sample videos from a checkpoint: ``python -m vidgan.generate --checkpoint CKPT --out DIR``.

Clips, grids, z interpolations (tgan2 §5.5, Fig. 12), per-level renders (tgan2 §5.6,
Fig. 13-14) and, for MoCoGAN generators, content x motion grids (mocogan Fig. 1), written as
mp4 (H.264, yuv420p), GIF or PNG frame strips, with a JSON sidecar that records how they were
made. The Python API (``load_generator``, ``sample_videos``, ``interpolate_videos``,
``content_motion_videos``) is what a notebook calls; ``main`` is a thin CLI over it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch

from vidgan.checkpoint import CheckpointError, LoadedGenerator, load_generator
from vidgan.config import ConfigError
from vidgan.models import Generator
from vidgan.models.temporal import MoCoGANTemporalGenerator
from vidgan.video_io import frame_strip, make_grid, to_uint8, write_gif, write_mp4, write_png

FORMATS = {"mp4": "mp4", "gif": "gif", "png-strip": "png"}  # format -> file extension


class Samples(NamedTuple):
    videos: torch.Tensor  # uint8 (N, 3, F, H, W) on the CPU; W spans all levels with levels=True
    z: torch.Tensor  # (N, z_dim), on the generator's device
    y: Optional[torch.Tensor]  # (N,) labels, None for an unconditional generator


def check_labels(G: Generator, labels: Optional[torch.Tensor], n: int) -> None:
    if labels is None:
        return
    if G.n_classes == 0:
        raise ValueError("this is an unconditional model (model.n_classes=0); it takes no "
                         "class labels")
    if labels.shape != (n,):
        raise ValueError(f"expected {n} labels, got shape {tuple(labels.shape)}")
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < G.n_classes):
        raise ValueError(f"labels must lie in 0..{G.n_classes - 1}, got {labels.tolist()}")


def draw_latents(G: Generator, n: int, seed: int,
                 labels: Optional[torch.Tensor] = None, n_frames: Optional[int] = None):
    """Latents (``G.sample_z``: z ~ U[-1, 1] for the ConvLSTM, tgan2 §4.1; content and motion
    noise for ``n_frames`` frames for the GRU) and labels for ``n`` clips, reproducible from
    ``seed``.

    Drawn on the CPU from a torch.Generator, then moved: CPU and GPU runs see the same z.
    z comes first, so a seed gives the same z whether or not labels are drawn. A conditional
    generator without ``labels`` gets labels from the class prior (uniform).
    """
    check_labels(G, labels, n)
    rng = torch.Generator().manual_seed(seed)
    z = G.sample_z(n, generator=rng, n_frames=n_frames)
    if G.n_classes and labels is None:
        labels = torch.randint(G.n_classes, (n,), generator=rng)
    return z, None if labels is None else labels.to(z.device)


def upscale_nearest(video: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (..., size, size) by pixel repetition; levels differ by powers of 2."""
    factor = size // video.shape[-1]
    if factor * video.shape[-1] != size or video.shape[-2] != video.shape[-1]:
        raise ValueError(f"cannot upscale {tuple(video.shape[-2:])} to {size}x{size} by an "
                         f"integer factor")
    return video.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def side_by_side(videos: Sequence[torch.Tensor], pad: int = 1) -> torch.Tensor:
    """Same-shape (N, 3, T, H, W) videos -> (N, 3, T, H, L*(W+pad)-pad), left to right,
    separated by ``pad`` zero (black) columns."""
    stacked = torch.stack(list(videos), dim=-2)  # (N, 3, T, H, L, W)
    stacked = torch.nn.functional.pad(stacked, (0, pad))
    n, c, t, h, n_levels, w = stacked.shape
    return stacked.reshape(n, c, t, h, n_levels * w)[..., :n_levels * w - pad]


def render(G: Generator, z: torch.Tensor, y: Optional[torch.Tensor], n_frames: int,
           levels: bool = False, batch_size: int = 16) -> torch.Tensor:
    """Dense videos from ``G`` in eval mode (Eq. 5: subsampling off), as uint8 on the CPU.

    ``levels=False``: the last level, (N, 3, F, H, W). ``levels=True``: every rendered level
    for the same z, each upscaled (nearest) to H x W and laid side by side (tgan2 §5.6,
    Fig. 13-14), (N, 3, F, H, L*(W+1)-1). ``n_frames`` may exceed the training length: the
    ConvLSTM rolls on.
    """
    if G.training:
        raise ValueError("render needs the generator in eval mode (G.eval()): in train mode "
                         "it subsamples frames between levels")
    render_levels = G.levels_rendered if levels else G.levels_rendered[-1:]
    out = []
    with torch.inference_mode():
        for start in range(0, z.shape[0], batch_size):
            zb = z[start:start + batch_size]
            yb = None if y is None else y[start:start + batch_size]
            per_level = [to_uint8(G(zb, yb, n_frames=n_frames, render_level=l)).cpu()
                         for l in render_levels]
            size = per_level[-1].shape[-1]
            out.append(side_by_side([upscale_nearest(v, size) for v in per_level]))
    return torch.cat(out)


def sample_videos(G: Generator, n: int, seed: int = 0, n_frames: Optional[int] = None,
                  labels: Optional[torch.Tensor] = None, levels: bool = False,
                  batch_size: int = 16) -> Samples:
    """``n`` clips from fresh z (seeded), as uint8 (N, 3, F, H, W) on the CPU.

    ``labels``: (n,) class indices for a conditional generator; None draws them from the
    uniform class prior. ``n_frames`` defaults to the training length. See ``render``.
    """
    n_frames = n_frames or G.n_frames
    z, y = draw_latents(G, n, seed, labels, n_frames)
    return Samples(render(G, z, y, n_frames, levels, batch_size), z, y)


def interpolation_latents(G: Generator, pairs: int, steps: int, seed: int,
                          labels: Optional[torch.Tensor] = None,
                          n_frames: Optional[int] = None):
    """z moving linearly between random endpoints (tgan2 §5.5, Fig. 12): (pairs*steps, z_dim),
    pair-major, ``steps`` points per pair including both endpoints.

    The endpoints are clips 2i and 2i+1 of ``draw_latents(G, 2*pairs, seed)``. A conditional
    generator keeps one label per pair (``labels`` (pairs,), else that of endpoint 2i), so only
    z moves along a row.
    """
    if steps < 2:
        raise ValueError(f"interpolation needs >= 2 steps per pair (the endpoints), got {steps}")
    check_labels(G, labels, pairs)
    z, y = draw_latents(G, 2 * pairs, seed,
                        None if labels is None else labels.repeat_interleave(2), n_frames)
    start, end = z[0::2, None], z[1::2, None]  # (pairs, 1, z_dim)
    w = torch.linspace(0, 1, steps, device=z.device)[None, :, None]  # (1, steps, 1)
    # torch.lerp returns start exactly at w=0 and end exactly at w=1.
    z_path = torch.lerp(start, end, w).reshape(pairs * steps, -1)
    y_path = None if y is None else y[0::2].repeat_interleave(steps)
    return z_path, y_path


def interpolate_videos(G: Generator, pairs: int, steps: int, seed: int = 0,
                       n_frames: Optional[int] = None, labels: Optional[torch.Tensor] = None,
                       levels: bool = False, batch_size: int = 16) -> Samples:
    """Clips along ``pairs`` linear paths in z, ``steps`` each (pair-major; a grid with
    ``rows=pairs`` shows one path per row). See ``interpolation_latents`` and ``render``."""
    n_frames = n_frames or G.n_frames
    z, y = interpolation_latents(G, pairs, steps, seed, labels, n_frames)
    return Samples(render(G, z, y, n_frames, levels, batch_size), z, y)


def check_content_motion(G: Generator, source: str = "this generator") -> None:
    temporal = getattr(G, "temporal", G)  # TGAN's and VGAN's latent: one z, no split either
    if not isinstance(temporal, MoCoGANTemporalGenerator):
        raise ValueError(f"{source} has a {type(temporal).__name__}, whose single z has no "
                         f"content/motion split; content x motion needs a MoCoGAN generator "
                         f"(model.temporal=gru)")


def content_motion_latents(G: Generator, rows: int, cols: int, seed: int,
                           labels: Optional[torch.Tensor] = None,
                           n_frames: Optional[int] = None):
    """MoCoGAN's content x motion grid (mocogan Fig. 1, §4.1): (rows*cols, width) latents,
    row-major, where row r keeps the content code z_C of draw r and column c the motion noise
    (h_0, eps_1..eps_N) of draw rows + c. A conditional generator keeps one label per row
    (``labels`` (rows,), else drawn from the class prior): the label is part of the frame
    code with the content, not of the motion.
    """
    check_content_motion(G)
    temporal = G.temporal
    check_labels(G, labels, rows)
    z, y = draw_latents(G, rows + cols, seed, n_frames=n_frames)
    content, _ = temporal.split(z[:rows])
    _, motion = temporal.split(z[rows:])
    z_grid = torch.cat([content.repeat_interleave(cols, dim=0), motion.repeat(rows, 1)], dim=1)
    if y is not None:
        y = (y[:rows] if labels is None else labels.to(y.device)).repeat_interleave(cols)
    return z_grid, y


def content_motion_videos(G: Generator, rows: int, cols: int, seed: int = 0,
                          n_frames: Optional[int] = None, labels: Optional[torch.Tensor] = None,
                          levels: bool = False, batch_size: int = 16) -> Samples:
    """rows x cols clips, row-major (``make_grid(videos, rows)`` lays them out): one content
    per row, one motion per column. See ``content_motion_latents`` and ``render``."""
    n_frames = n_frames or G.n_frames
    z, y = content_motion_latents(G, rows, cols, seed, labels, n_frames)
    return Samples(render(G, z, y, n_frames, levels, batch_size), z, y)


def memory_slot_latents(G: Generator, n_slots: int, per_slot: int, seed: int,
                        n_frames: Optional[int] = None):
    """Latents of a memory-conditional generator (MCGN, memoryGAN §3.2) for the ``n_slots``
    most probable slots of its memory (p(c) = h v / sum h v), ``per_slot`` fresh noises each,
    slot-major; returns (z, slot indices (n_slots,))."""
    if G.memory is None:
        raise ValueError("memory slots need a memory-conditional generator "
                         "(model.frame_discriminator=memory, model.memory.condition_generator"
                         "=true) with its memory attached (load_generator attaches it)")
    probs = G.memory.slot_probs()
    if n_slots > int((probs > 0).sum()):
        raise ValueError(f"{n_slots} slots asked, the memory has {int((probs > 0).sum())} "
                         f"real slots with p(c) > 0")
    top = torch.sort(probs, descending=True, stable=True).indices[:n_slots]
    z = G.sample_z(n_slots * per_slot, generator=torch.Generator().manual_seed(seed),
                   n_frames=n_frames, slots=top.repeat_interleave(per_slot))
    return z, top


def memory_slot_videos(G: Generator, n_slots: int, per_slot: int, seed: int = 0,
                       n_frames: Optional[int] = None, levels: bool = False,
                       batch_size: int = 16) -> Samples:
    """One row per slot of the ``n_slots`` most probable memory slots, ``per_slot`` clips
    each (``make_grid(videos, n_slots)``). See ``memory_slot_latents`` and ``render``."""
    n_frames = n_frames or G.n_frames
    z, _ = memory_slot_latents(G, n_slots, per_slot, seed, n_frames)
    return Samples(render(G, z, None, n_frames, levels, batch_size), z, None)


# ---------------------------------------------------------------------------------- CLI


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got '{text}'") \
                from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)


def _crf(text: str) -> int:
    value = _int_at_least(0)(text)
    if value > 51:
        raise argparse.ArgumentTypeError(f"H.264 crf runs from 0 to 51, got {value}")
    return value


def _grid(text: str):
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 4x4, got '{text}'")
    return int(match[1]), int(match[2])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidgan-generate",
        description="Sample videos from a vidgan checkpoint: clips, grids, z interpolations "
                    "and per-level renders, as mp4 (default), GIF or PNG frame strips.",
        epilog="A JSON sidecar (<name>.json) next to the outputs records checkpoint, step, seed "
               "and options.")
    p.add_argument("--checkpoint", required=True, help="a ckpt_*.pt written by training")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--n", type=_positive_int,
                   help="clips (per class with --classes all; pairs with --interpolate; per "
                        "slot with --memory-slots); default 8, or what --grid holds")
    p.add_argument("--seed", type=int, default=0, help="seed of z and labels (default 0)")
    p.add_argument("--frames", type=_positive_int,
                   help="frames per clip (default: the training length; more rolls the "
                        "ConvLSTM on)")
    p.add_argument("--fps", type=_positive_int, default=8, help="frames per second (default 8)")
    p.add_argument("--crf", type=_crf, default=10,
                   help="H.264 quality 0-51, lower is better (default 10, near lossless)")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw generator weights G instead of the EMA copy G_ema")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--grid", type=_grid, metavar="RxC", help="one video with R x C clips")
    layout.add_argument("--interpolate", type=_int_at_least(2), metavar="K",
                        help="linear paths in z between random endpoints, K steps each, one "
                             "row per pair in one video (tgan2 §5.5)")
    layout.add_argument("--content-motion", type=_grid, metavar="RxC",
                        help="MoCoGAN checkpoints: one video with R x C clips, each row one "
                             "content code, each column one motion sequence (mocogan Fig. 1)")
    layout.add_argument("--memory-slots", type=_positive_int, metavar="K",
                        help="memory-conditional checkpoints: one video with a row per slot "
                             "for the K most probable memory slots, --n clips each (default 4)")
    p.add_argument("--levels", action="store_true",
                   help="every rendered level side by side for the same z, upscaled "
                        "(nearest) to the output size (tgan2 §5.6)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--gif", action="store_const", dest="format", const="gif",
                     help="animated GIF instead of mp4")
    fmt.add_argument("--png-strip", action="store_const", dest="format", const="png-strip",
                     help="one PNG per video with its frames side by side, instead of mp4")
    cls = p.add_mutually_exclusive_group()
    cls.add_argument("--class", dest="class_", metavar="K",
                     help="conditional models: class index or name (default: drawn uniformly)")
    cls.add_argument("--classes", choices=["all"],
                     help="conditional models: --n clips of every class, class by class")
    p.set_defaults(format="mp4")
    return p


def resolve_class(model: LoadedGenerator, text: str) -> int:
    """A class index or a label name from the checkpoint -> the index."""
    n_classes = model.G.n_classes
    if text.isdigit():
        label = int(text)
        if label >= n_classes:
            raise ValueError(f"--class {label}: checkpoint {model.path} has classes "
                             f"0..{n_classes - 1}")
        return label
    if text in model.classes[:n_classes]:
        return model.classes.index(text)
    known = ", ".join(model.classes[:n_classes]) or "none stored; use an index"
    raise ValueError(f"--class '{text}': not a class of checkpoint {model.path} (names: {known})")


def _plan(args, model: LoadedGenerator):
    """Validated (n clips, pairs or content rows, labels or None) for the options."""
    n_classes = model.G.n_classes
    if (args.class_ is not None or args.classes) and n_classes == 0:
        raise ValueError(f"checkpoint {model.path} is an unconditional model "
                         f"(model.n_classes=0); --class/--classes need a conditional one")
    if args.memory_slots:
        if args.class_ is not None or args.classes:
            raise ValueError("--memory-slots: memory-conditional models are unconditional; "
                             "drop --class/--classes")
        if getattr(model.G, "memory", None) is None:
            raise ValueError(f"--memory-slots: checkpoint {model.path} is not memory-"
                             f"conditional (model.frame_discriminator="
                             f"{model.cfg.model.frame_discriminator}, condition_generator="
                             f"{model.cfg.model.memory.condition_generator})")
        return args.memory_slots, None
    if args.content_motion:
        m = model.cfg.model
        which = (f"model.temporal={m.temporal}" if m.family == "tganv2"
                 else f"model.family={m.family}")
        check_content_motion(model.G, f"--content-motion: checkpoint {model.path} ({which})")
        if args.n is not None or args.classes:
            raise ValueError("--content-motion RxC sets the clips itself (R contents x C "
                             "motions); drop --n/--classes (--class K fixes every row's class)")
        rows = args.content_motion[0]
        label = None if args.class_ is None else resolve_class(model, args.class_)
        return rows, None if label is None else torch.full((rows,), label, dtype=torch.long)
    # --classes all: n clips per class, class-major, so --grid {n_classes}xN is a row per class
    groups = n_classes if args.classes else 1
    n = args.n
    if args.grid:
        rows, cols = args.grid
        if n is None and (rows * cols) % groups == 0:
            n = rows * cols // groups
        if n is None or n * groups != rows * cols:
            asked = (f"--n {n} x {groups} classes" if n else f"a multiple of {groups} classes"
                     ) if groups > 1 else f"--n {n}"
            hint = f"; try --grid {n_classes}x{n or cols}" if groups > 1 else ""
            raise ValueError(f"--grid {rows}x{cols} holds {rows * cols} clips, not {asked}{hint}")
    n = n or 8
    if args.class_ is not None:
        labels = torch.full((n,), resolve_class(model, args.class_), dtype=torch.long)
    elif args.classes:
        labels = torch.arange(n_classes).repeat_interleave(n)
        n *= n_classes
    else:
        labels = None
    return n, labels


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


def _write(path: Path, video: torch.Tensor, fmt: str, fps: int, crf: int) -> None:
    if fmt == "mp4":
        write_mp4(path, video, fps=fps, crf=crf)
    elif fmt == "gif":
        write_gif(path, video, fps=fps)
    else:
        write_png(path, frame_strip(video))


def generate(args, model: LoadedGenerator) -> Path:
    """Run the CLI's request on a loaded generator; returns the sidecar's path."""
    n, labels = _plan(args, model)
    out = Path(args.out)
    try:  # before sampling: a bad --out fails fast
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"--out {out}: cannot create the output directory ({err.strerror})") \
            from None
    G, ext = model.G, FORMATS[args.format]
    n_frames = args.frames or G.n_frames
    stem = ("levels_" if args.levels else "") + (
        "interpolation" if args.interpolate else "grid" if args.grid else
        "content_motion" if args.content_motion else
        "memory_slots" if args.memory_slots else "clip")
    if args.interpolate:
        samples = interpolate_videos(G, n, args.interpolate, args.seed, n_frames, labels,
                                     args.levels, args.batch_size)
    elif args.content_motion:
        samples = content_motion_videos(G, n, args.content_motion[1], args.seed, n_frames,
                                        labels, args.levels, args.batch_size)
    elif args.memory_slots:
        samples = memory_slot_videos(G, n, args.n or 4, args.seed, n_frames, args.levels,
                                     args.batch_size)
    else:
        samples = sample_videos(G, n, args.seed, n_frames, labels, args.levels, args.batch_size)
    clip_labels = [] if samples.y is None else samples.y.tolist()
    if args.interpolate or args.grid or args.content_motion or args.memory_slots:
        rows = args.grid[0] if args.grid else n
        files = [f"{stem}.{ext}"]
        _write(out / files[0], make_grid(samples.videos, rows), args.format, args.fps, args.crf)
    else:
        suffixes = [f"_{_safe(model.class_name(k))}" for k in clip_labels] or [""] * n
        files = [f"{stem}_{i:04d}{s}.{ext}" for i, s in enumerate(suffixes)]
        for name, video in zip(files, samples.videos):
            _write(out / name, video, args.format, args.fps, args.crf)
    clips = [{"index": i} for i in range(len(samples.videos))]  # row-major in a grid
    for clip, k in zip(clips, clip_labels):
        clip.update({"label": k, "class": model.class_name(k)})
    sidecar = {
        "checkpoint": str(model.path.resolve()), "step": model.step, "weights": model.weights,
        "seed": args.seed, "files": files, "clips": clips,
        "options": {"n": n, "frames": n_frames, "training_frames": G.n_frames,
                    "fps": args.fps, "crf": args.crf if args.format == "mp4" else None,
                    "format": args.format, "grid": list(args.grid) if args.grid else None,
                    "interpolate": args.interpolate,
                    "content_motion": list(args.content_motion) if args.content_motion else None,
                    "memory_slots": args.memory_slots,
                    "levels": G.levels_rendered if args.levels else None,
                    "class": args.class_, "classes": args.classes,
                    "batch_size": args.batch_size, "device": str(next(G.parameters()).device),
                    "size": list(samples.videos.shape[-2:])},
    }
    path = out / f"{stem}.json"
    path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # a missing, damaged or foreign checkpoint: errors that name the file
        model = load_generator(args.checkpoint, args.device, use_ema=not args.no_ema)
    except (FileNotFoundError, CheckpointError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # options that do not fit this model, or an output that cannot be written
        sidecar = generate(args, model)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files = json.loads(sidecar.read_text())["files"]
    print(f"wrote {len(files)} file(s) to {sidecar.parent}, described in {sidecar.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
