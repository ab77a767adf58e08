"""Write a small UCF101-shaped tree: XviD-like AVI files, split lists and (optionally) bad files.

    python -m data_prep.fake_ucf101 --root data/fake_ucf101 [--layout flat] [--bad]

For trying the UCF101 code path without the 6.5 GB archive, for the tests and for the data
benchmark. Files are named and listed like the real ones (``Class/v_Class_gGG_cCC.avi``,
``ucfTrainTestlist/classInd.txt``, ``trainlist0{1,2,3}.txt``, ``testlist0{1,2,3}.txt``); group
g is in the test list of split ((g - 1) % 3) + 1, mirroring the official group-wise splits.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

CLASSES = ("ApplyEyeMakeup", "BaseballPitch", "HandstandPushups", "YoYo")
# The kinds of bad file a dataset must survive: zero-byte, non-video, truncated, too short,
# listed-but-missing, odd-sized.
BAD_KINDS = ("empty", "not_video", "truncated", "too_short", "missing", "odd_size")


def moving_frames(n_frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (T, H, W, 3): a textured background with a bright bar sweeping across."""
    background = rng.integers(0, 80, (1, height, width, 3), dtype=np.uint8)
    cols = np.arange(width)[None, :]
    start, speed = rng.integers(0, width), rng.integers(3, 9)
    centre = (start + speed * np.arange(n_frames)[:, None]) % width  # (T, 1)
    bar = (np.abs(cols - centre) < width // 10)[:, None, :, None]  # (T, 1, W, 1)
    colour = rng.integers(120, 256, 3, dtype=np.uint8)
    return np.where(bar, colour, background).astype(np.uint8)


def write_avi(path: str | Path, frames: np.ndarray, fps: int = 25, gop: int = 300,
              bit_rate: int = 1_000_000) -> None:
    """uint8 (T, H, W, 3) -> MPEG-4 Part 2 in AVI with the XVID tag, as UCF101 ships.

    gop 300 is XviD's default maximum keyframe interval: most UCF101 clips (~7 s at 25 fps)
    have few keyframes, so a random clip means decoding from a distant keyframe.
    """
    import av

    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.codec_context.codec_tag = "XVID"
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.gop_size = gop
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def clip_name(cls: str, group: int, clip: int) -> str:
    return f"v_{cls}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101_tree(root: str | Path, classes: Sequence[str] = CLASSES, groups: int = 3,
                      clips: int = 1, n_frames: int = 40, size=(240, 320),
                      layout: str = "folders", seed: int = 0) -> Path:
    """Videos for every (class, group, clip) plus the split lists. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train = {s: [] for s in (1, 2, 3)}
    test = {s: [] for s in (1, 2, 3)}
    for label, cls in enumerate(classes):
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                name = clip_name(cls, g, c)
                folder = root / cls if layout == "folders" else root
                folder.mkdir(exist_ok=True)
                write_avi(folder / name, moving_frames(n_frames, *size, rng))
                for s in (1, 2, 3):
                    if (g - 1) % 3 == s - 1:
                        test[s].append(f"{cls}/{name}\n")
                    else:
                        train[s].append(f"{cls}/{name} {label + 1}\n")
    for s in (1, 2, 3):
        (lists / f"trainlist{s:02d}.txt").write_text("".join(train[s]))
        (lists / f"testlist{s:02d}.txt").write_text("".join(test[s]))
    return root


def add_bad_files(root: str | Path, layout: str = "folders", cls: str = CLASSES[0],
                  seed: int = 1) -> Dict[str, str]:
    """One file of every BAD_KIND in ``cls``, all listed in trainlist01.txt.

    Returns {list entry: kind}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    folder = root / cls if layout == "folders" else root
    entries = {}
    for i, kind in enumerate(BAD_KINDS):
        name = clip_name(cls, 90 + i, 1)
        path = folder / name
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "not_video":
            path.write_bytes(b"RIFF" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        elif kind == "truncated":
            write_avi(path, moving_frames(60, 240, 320, rng))
            data = path.read_bytes()
            path.write_bytes(data[:len(data) // 2])
        elif kind == "too_short":
            write_avi(path, moving_frames(3, 240, 320, rng))
        elif kind == "odd_size":
            write_avi(path, moving_frames(40, 16, 320, rng))  # 20:1
        entries[f"{cls}/{name}"] = kind  # "missing": listed, never written
    label = list(_class_ids(root)).index(cls) + 1
    with open(root / "ucfTrainTestlist" / "trainlist01.txt", "a") as f:
        f.writelines(f"{entry} {label}\n" for entry in entries)
    return entries


def _class_ids(root: Path):
    lines = (root / "ucfTrainTestlist" / "classInd.txt").read_text().split()
    return lines[1::2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/fake_ucf101")
    parser.add_argument("--layout", choices=("folders", "flat"), default="folders")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--clips", type=int, default=2, help="clips per (class, group)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--bad", action="store_true", help="also add one file of each bad kind")
    args = parser.parse_args(argv)
    root = write_ucf101_tree(args.root, groups=args.groups, clips=args.clips,
                             n_frames=args.frames, layout=args.layout)
    if args.bad:
        add_bad_files(root, args.layout)
    n = sum(1 for _ in root.rglob("*.avi"))
    print(f"wrote {n} videos and ucfTrainTestlist/ under {root}{os.sep}")


if __name__ == "__main__":
    main()
