"""FaceForensics face clips as ``data_prep/faceforensics.py`` writes them.

``root/<subset>/<video>.mp4`` with subsets train / val / test (the FaceForensics v1 splits):
256x256 face crops, one mp4 per source video. Unlabelled.
"""
from __future__ import annotations

from pathlib import Path

from vidgan.data.folder import VideoList, check_root, walk_videos

SUBSETS = ("train", "val", "test")


def list_faceforensics(root: str | Path, subset: str = "train") -> VideoList:
    root = Path(root)
    check_root(root, "train/, val/ and test/ folders of face clips written by "
                     "python -m data_prep.faceforensics")
    wanted = SUBSETS if subset == "all" else (subset,)
    files = [f for f in walk_videos(root) if f.split("/")[0] in wanted]
    if not files:
        raise FileNotFoundError(f"data.root '{root}' has no face clips in "
                                f"{', '.join(s + '/' for s in wanted)}; write them with "
                                f"python -m data_prep.faceforensics --root FF --out {root}")
    return VideoList(root, files, [0] * len(files))
