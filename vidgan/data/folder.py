"""Which files form a dataset: the ``VideoList`` every dataset kind produces, and folders.

Layout of a folder dataset: ``root/<class name>/.../<clip>.<ext>`` (labels from the sorted
first-level sub-folder names) or videos directly in ``root`` (label 0, no class names).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass
class VideoList:
    """Videos of one dataset subset, as paths relative to ``root``."""

    root: Path
    files: List[str]
    labels: List[int]
    classes: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # listed (split file) but not on disk

    def label_names(self) -> Dict[str, str]:
        """{file: class name}, what the manifest records."""
        return {f: (self.classes[l] if self.classes else "") for f, l in zip(self.files, self.labels)}


def walk_videos(root: Path) -> List[str]:
    """Every video under ``root`` (relative posix paths, sorted); hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        found += [(rel_dir / f).as_posix() for f in filenames
                  if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def check_root(root: Path, layout: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"data.root '{root}' is not a directory (expected {layout})")


def list_folder(root: str | Path) -> VideoList:
    """All videos under ``root``, labelled by their first-level sub-folder when they have one."""
    root = Path(root)
    check_root(root, "root/<class>/<clip>.mp4 or root/<clip>.mp4")
    files = walk_videos(root)
    if not files:
        raise FileNotFoundError(f"data.root '{root}' holds no videos with extensions "
                                f"{', '.join(VIDEO_EXTENSIONS)}")
    classes = sorted({f.split("/")[0] for f in files if "/" in f})
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[f.split("/")[0]] if "/" in f else 0 for f in files]
    return VideoList(root, files, labels, classes)
