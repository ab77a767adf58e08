"""UCF101 (Soomro et al. 2012): the official split lists over either archive layout.

``root`` holds the videos, in class folders as the official archive unpacks
(``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi``) or flat (``v_ApplyEyeMakeup_g08_c01.avi``),
plus ``ucfTrainTestlist/`` with ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0{1,2,3}.txt``
("ApplyEyeMakeup/v_..._g08_c01.avi 1") and ``testlist0{1,2,3}.txt`` (path only).
Labels are classInd's ids minus one: 0..100.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from vidgan.data.folder import VideoList, check_root, walk_videos

LIST_DIR = "ucfTrainTestlist"
SUBSETS = {"train": ("trainlist",), "test": ("testlist",), "all": ("trainlist", "testlist")}


def _list_file(root: Path, name: str) -> Path:
    path = root / LIST_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"UCF101 split file {path} is missing (data.root must hold the "
                                f"videos and {LIST_DIR}/ with classInd.txt, trainlist01-03.txt, "
                                f"testlist01-03.txt from UCF101TrainTestSplits-RecognitionTask.zip)")
    return path


def read_class_index(root: Path) -> List[str]:
    """Class names in label order, from classInd.txt."""
    path = _list_file(root, "classInd.txt")
    ids: Dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{n}: expected '<id> <ClassName>', got {line!r}")
        ids[int(parts[0])] = parts[1]
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise ValueError(f"{path}: class ids must run 1..{len(ids)} without gaps")
    return [ids[i] for i in range(1, len(ids) + 1)]


def read_split(root: Path, prefix: str, split: int) -> List[str]:
    """Entries ("Class/v_Class_gXX_cYY.avi") of trainlist0N.txt or testlist0N.txt."""
    path = _list_file(root, f"{prefix}{split:02d}.txt")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _resolve(entries: List[str], on_disk: List[str]) -> Tuple[Dict[str, str], List[str]]:
    """Map list entries to files on disk: the exact path (class folders), else the file name
    (flat layout), else the file name ignoring case (the archive spells some classes both
    "HandstandPushups" and "HandStandPushups")."""
    exact = set(on_disk)
    by_name = {p.rsplit("/", 1)[-1]: p for p in on_disk}
    by_lower = {name.lower(): p for name, p in by_name.items()}
    found, missing = {}, []
    for entry in entries:
        name = entry.rsplit("/", 1)[-1]
        path = (entry if entry in exact else by_name.get(name) or by_lower.get(name.lower()))
        if path is None:
            missing.append(entry)
        else:
            found[entry] = path
    return found, missing


def list_ucf101(root: str | Path, split: int = 1, subset: str = "train") -> VideoList:
    root = Path(root)
    check_root(root, f"the UCF101 videos plus {LIST_DIR}/")
    classes = read_class_index(root)
    index = {name.lower(): i for i, name in enumerate(classes)}
    entries = [e for prefix in SUBSETS[subset] for e in read_split(root, prefix, split)]
    found, missing = _resolve(entries, walk_videos(root))
    files, labels = [], []
    for entry, path in found.items():
        name = entry.split("/")[0] if "/" in entry else entry.split("_")[1]  # v_<Class>_g.._c..
        if name.lower() not in index:
            raise ValueError(f"{root / LIST_DIR}: entry {entry!r} names class {name!r}, which "
                             f"is not in classInd.txt")
        files.append(path)
        labels.append(index[name.lower()])
    return VideoList(root, files, labels, classes, missing)
