"""One process at a time in a directory: an exclusive ``fcntl.flock`` on a lock file in it.

A training run holds its ``train.out_dir`` for its whole life, and refuses to start where
another process holds it; writers of a generated dataset (``data.root``) and of the cached
real statistics (``eval.stats_dir``) wait for each other. The operating system releases a
flock when its file is closed or its process dies, by any exit path (kill -9 included), so a
lock is never left behind by a crash. The lock file records who holds it (host, PID, start
time, command), which is what a refused process reports.

flock is reliable on local file systems (ext4, xfs, btrfs, tmpfs, overlayfs); on some network
file systems (NFS without lock daemon, some FUSE mounts) it fails or does nothing. A failure
other than "held by another process" is reported as such (``LockUnsupported``).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Optional

RUN_LOCK = ".vidgan_run.lock"  # in train.out_dir
WRITE_LOCK = ".vidgan_writing.lock"  # in data.root and eval.stats_dir


class LockHeld(RuntimeError):
    """Another process holds the lock; ``holder`` is what it recorded ({} if nothing yet)."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by {describe_holder(holder)}")


class LockUnsupported(OSError):
    """flock failed for another reason than a holder: the file system cannot lock."""


def describe_holder(holder: dict) -> str:
    """'PID 123 on host h since 2026-11-30 03:02:18 (python train.py ...)'."""
    if not holder.get("pid"):
        return "another process (it has not recorded itself yet)"
    return (f"PID {holder['pid']} on host {holder.get('host', '?')} since "
            f"{holder.get('started', '?')} ({holder.get('command', '?')})")


def _record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name] + sys.argv)}


def read_holder(path: Path) -> dict:
    """What the holder of lock file ``path`` recorded; {} if unreadable or empty."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class DirectoryLock:
    """An exclusive lock on ``directory/name`` (the directory is created if missing).

    ``acquire(wait=False)`` raises ``LockHeld`` at once if another process (or another open
    of the same file in this one) holds it; ``wait=True`` blocks until it is free. The lock
    holds until ``release()``, the object's deletion or the process's end.
    """

    def __init__(self, directory: str | Path, name: str):
        self.path = Path(directory) / name
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = True, record: bool = True) -> "DirectoryLock":
        """Take the lock; with ``record``, write who holds it into the lock file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.path, read_holder(self.path)) from None
        except OSError as err:
            os.close(fd)
            raise LockUnsupported(err.errno, f"cannot lock {self.path} ({os.strerror(err.errno)}"
                                  f"): its file system does not support file locks") from None
        self._fd = fd
        if record:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_record()) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> "DirectoryLock":
        return self.acquire(wait=True, record=False)

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

