"""One run per run directory: the lock, the fresh/overwrite policy, the stored config, and the
checkpoint files a run resumes from or sets aside (vidgan.checkpoint writes and reads them)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from tqdm import tqdm

from vidgan.checkpoint import (CheckpointError, checkpoint_dir, checkpoint_step, list_checkpoints,
                               list_diverged, load_checkpoint, pin_checkpoint,
                               remove_partial_saves, set_aside)
from vidgan.config import Config, to_yaml
from vidgan.lock import RUN_LOCK, DirectoryLock, LockHeld, LockUnsupported, describe_holder


class RunDirError(RuntimeError):
    """train.out_dir cannot hold this run: another run's checkpoints, or not writable."""


def hold_run_dir(out_dir: Path, resume_from: Optional[str] = None) -> Optional[DirectoryLock]:
    """The lock of ``out_dir`` (``.vidgan_run.lock``, vidgan.lock), taken at once or refused
    with a RunDirError naming the run that holds it. ``resume_from`` inside another run
    directory that a live run holds is refused too (that run may prune the file). Where the
    file system cannot lock, a warning, and None."""
    lock = DirectoryLock(out_dir, RUN_LOCK)
    try:
        lock.acquire(wait=False)
    except LockHeld as err:
        raise RunDirError(f"train.out_dir '{out_dir}' is in use by another run: "
                          f"{describe_holder(err.holder)}. Wait for it to end, or choose "
                          f"another train.out_dir") from None
    except LockUnsupported as err:
        tqdm.write(f"warning: {err.strerror}; nothing stops a second run from using "
                   f"train.out_dir '{out_dir}' at the same time: make sure only one does")
        return None
    except OSError as err:  # the directory or its lock file cannot be created
        raise RunDirError(f"train.out_dir '{out_dir}' is not writable ({err}); choose another "
                          f"train.out_dir or fix its permissions") from None
    if resume_from is not None:
        source = Path(resume_from).resolve().parent
        source = source.parent if source.name == "checkpoints" else source
        if source != Path(out_dir).resolve() and (source / RUN_LOCK).is_file():
            try:
                DirectoryLock(source, RUN_LOCK).acquire(wait=False, record=False).release()
            except LockHeld as err:
                lock.release()
                raise RunDirError(f"--resume-from {resume_from}: its run directory "
                                  f"'{source}' is in use by another run: "
                                  f"{describe_holder(err.holder)}. Wait for it to end, or "
                                  f"copy the checkpoint elsewhere first") from None
            except LockUnsupported:
                pass  # said above for out_dir, which is usually on the same file system
    return lock


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """One run per directory, checked before any work is done.

    A fresh run refuses a directory that holds another run's checkpoints (unless
    ``overwrite``: then that run's checkpoints, samples, logs and config are deleted); the
    directory must be writable; leftovers of an interrupted checkpoint write are removed.
    """
    existing = list_checkpoints(out_dir) + list_diverged(out_dir)
    if existing and not resume:
        if not overwrite:
            newest = max(existing, key=checkpoint_step)
            raise RunDirError(f"train.out_dir '{out_dir}' already holds another run's "
                              f"checkpoints (newest: {newest.name}); continue that run with "
                              f"--resume, or choose another train.out_dir, or pass --overwrite "
                              f"to delete it and start over")
        for name in ("checkpoints", "samples", "tb"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / "config.yaml").unlink(missing_ok=True)
        tqdm.write(f"--overwrite: deleted the previous run in {out_dir}")
    probe = checkpoint_dir(out_dir) / ".write_test"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"vidgan")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"train.out_dir '{out_dir}' is not writable ({err}); choose another "
                          f"train.out_dir or fix its permissions") from None
    for leftover in remove_partial_saves(out_dir):
        tqdm.write(f"removed {leftover}, the partial file of an interrupted checkpoint write")


def write_config(out_dir: Path, cfg: Config) -> None:
    """``<out_dir>/config.yaml``, written atomically; a failure is one line naming the file."""
    path = out_dir / "config.yaml"
    tmp = out_dir / ".config.yaml.tmp"
    try:
        tmp.write_text(to_yaml(cfg))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"could not write {path}: {err}") from None


def newest_readable(out_dir: Path, load: Callable[[Path], dict] = load_checkpoint,
                    set_unreadable_aside: bool = True) -> Tuple[Path, dict]:
    """The newest checkpoint of ``out_dir`` that ``load`` reads, and its state. An unreadable
    one (truncated, zero-filled, refused) is set aside as ``<name>.unreadable`` with a warning
    (by the process that ``set_unreadable_aside``, rank 0) and the next older one is tried."""
    found = list_checkpoints(out_dir)
    if not found:
        diverged = list_diverged(out_dir)
        hint = (f"; it holds only diverged states ({', '.join(p.name for p in diverged)}): "
                f"pass --resume-from with one to continue it anyway" if diverged else "")
        raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint_dir(out_dir)}{hint}")
    failed: List[str] = []
    for path in reversed(found):
        try:
            return path, load(path)
        except CheckpointError as err:
            failed.append(path.name)
            if set_unreadable_aside:
                aside = set_aside(path, path.name + ".unreadable")
                tqdm.write(f"warning: {err}; moved it to {aside.name} and trying the previous "
                           f"checkpoint")
    raise CheckpointError(f"--resume: no readable checkpoint in {checkpoint_dir(out_dir)}: "
                          f"{', '.join(failed)} could not be read (now *.unreadable)")


def set_aside_diverged(out_dir: Path, first_bad: int) -> Optional[Path]:
    """After a divergence from step ``first_bad`` on: the checkpoints written since are set
    aside as ``diverged_<step>.pt`` (``--resume`` skips them) and the newest one before it is
    pinned (never pruned, what ``--resume`` picks) and returned; None if there is none."""
    healthy = None
    for path in list_checkpoints(out_dir):
        if checkpoint_step(path) >= first_bad:
            set_aside(path, f"diverged_{checkpoint_step(path):08d}.pt")
        else:
            healthy = path
    return pin_checkpoint(healthy) if healthy is not None else None
