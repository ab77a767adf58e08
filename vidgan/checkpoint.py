"""Atomic, pruned checkpoints: ``<run>/checkpoints/ckpt_<step>.pt``, and reading them back
(the whole training state, or the generator alone for sampling and evaluation).

Names in ``checkpoints/``:
  ``ckpt_<step>.pt``            a checkpoint; ``--resume`` takes the newest readable one
  ``ckpt_<step>.keep.pt``       the same, pinned: pruning never removes it (the last healthy
                                state before a divergence)
  ``diverged_<step>.pt``        a state from a run that stopped on non-finite losses; only
                                resumed when named explicitly
  ``ckpt_<step>.pt.unreadable`` a damaged checkpoint that ``--resume`` set aside
  ``.ckpt_<step>.pt.tmp``       a write in progress; leftovers are removed at start-up

Checkpoints are data, not code: they hold tensors and plain Python types only and are read
with ``torch.load(weights_only=True)``, so a crafted pickle is refused and runs nothing.
"""
from __future__ import annotations

import os
import pickle
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from vidgan.config import Config, ConfigError, config_from_dict
from vidgan.device import resolve_device
from vidgan.models import Generator, build_generator
from vidgan.models.discriminator import build_memory

_NAME = re.compile(r"^ckpt_(\d{8})(\.keep)?\.pt$")
_DIVERGED = re.compile(r"^diverged_(\d{8})\.pt$")
REQUIRED = ("G", "D", "G_ema", "opt_G", "opt_D", "step", "config", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written; the message names the file."""


# The checkpoint eval.keep_best writes: the run's state when its score was best.
BEST_NAME = "best.pt"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written: ``<run>/checkpoints/ckpt_<step>.pt``."""
    return checkpoint_dir(out_dir) / f"ckpt_{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int:
    match = _NAME.match(Path(path).name) or _DIVERGED.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a vidgan checkpoint (ckpt_<8 digits>.pt)")
    return int(match.group(1))


def is_pinned(path: Path) -> bool:
    return path.name.endswith(".keep.pt")


def _named(out_dir: str | Path, pattern: re.Pattern) -> List[Path]:
    """Files in ``checkpoints/`` whose name matches ``pattern``, oldest step first."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if pattern.match(p.name) and p.is_file()),
                  key=lambda p: (checkpoint_step(p), p.name))


def list_checkpoints(out_dir: str | Path) -> List[Path]:
    """The checkpoints ``--resume`` may pick (pinned ones included), oldest step first."""
    return _named(out_dir, _NAME)


def list_diverged(out_dir: str | Path) -> List[Path]:
    """Diverged states (``--resume`` skips them), oldest step first."""
    return _named(out_dir, _DIVERGED)


def latest_checkpoint(out_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def remove_partial_saves(out_dir: str | Path) -> List[Path]:
    """Delete the temporary files of saves that were interrupted (kill -9, power loss)."""
    d = checkpoint_dir(out_dir)
    leftovers = sorted(d.glob(".*.tmp")) if d.is_dir() else []
    for p in leftovers:
        p.unlink()
    return leftovers


def save_checkpoint(state: dict, out_dir: str | Path, step: int, keep: Optional[int],
                    name: Optional[str] = None) -> Path:
    """Write ``state`` to a temporary file, fsync, rename; then keep only the newest ``keep``
    unpinned checkpoints (``keep=None``: prune nothing).

    A crash at any point leaves either the old or the new file, never a truncated one. A
    failed write (full disk, lost permission) removes its partial file, leaves the earlier
    checkpoints alone and raises CheckpointError naming the path and the OS error.
    """
    d = checkpoint_dir(out_dir)
    path = d / name if name else checkpoint_path(out_dir, step)
    tmp = d / f".{path.name}.tmp"
    try:
        d.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save wraps a failed write in RuntimeError
        tmp.unlink(missing_ok=True)
        earlier = latest_checkpoint(out_dir)
        kept = f"the newest intact one is {earlier}" if earlier else "there is no earlier one"
        raise CheckpointError(f"could not write checkpoint {path}: {_os_error(err)}; the "
                              f"partial file was removed and earlier checkpoints are kept "
                              f"({kept})") from None
    if keep is not None:
        prune_checkpoints(out_dir, keep, newest_step=step)
    return path


def prune_checkpoints(out_dir: str | Path, keep: int, newest_step: int) -> None:
    """Remove the oldest unpinned checkpoints up to ``newest_step`` beyond the newest ``keep``.

    A fresh run refuses a directory that holds checkpoints, so those here are this run's;
    checkpoints of later steps than the one just written are never touched.
    """
    ours = [p for p in list_checkpoints(out_dir)
            if not is_pinned(p) and checkpoint_step(p) <= newest_step]
    for old in ours[:-keep]:
        old.unlink()


def pin_checkpoint(path: Path) -> Path:
    """Rename ``ckpt_<step>.pt`` to ``ckpt_<step>.keep.pt``, which pruning never removes."""
    if is_pinned(path):
        return path
    pinned = path.with_name(path.name[:-len(".pt")] + ".keep.pt")
    os.replace(path, pinned)
    return pinned


def set_aside(path: Path, name: str) -> Path:
    """Rename ``path`` inside its directory so that ``--resume`` no longer picks it."""
    target = path.with_name(name)
    os.replace(path, target)
    return target


def _os_error(err: BaseException) -> str:
    """The OS error behind ``err`` (torch chains it), else ``err``'s first line."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return f"[Errno {seen.errno}] {seen.strerror}"
        seen = seen.__cause__ or seen.__context__
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _legacy_numpy_globals() -> list:
    """The numpy objects in checkpoints written before RNG states became tensors:
    ``np.random.get_state()``'s uint32 key array. Allow-listed for weights_only loading; no
    other global is accepted."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    allowed = [np.ndarray, np.dtype, (reconstruct, "numpy.core.multiarray._reconstruct"),
               (reconstruct, "numpy._core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed.append(dtypes.UInt32DType)
    return allowed


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a vidgan checkpoint as data (``weights_only=True``). Raises FileNotFoundError or
    CheckpointError, one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        lines = [line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()]
        code = next((line for line in lines if "GLOBAL" in line), None)
        if isinstance(err, pickle.UnpicklingError) and code:
            raise CheckpointError(f"checkpoint {path} is refused: it holds code, not only "
                                  f"tensors and plain data ({code}); nothing in it was run "
                                  f"(vidgan reads checkpoints with torch.load(weights_only=True))"
                                  ) from None
        detail = lines[-1] if isinstance(err, pickle.UnpicklingError) and lines else (
            lines[0] if lines else type(err).__name__)
        raise CheckpointError(f"checkpoint {path} could not be read ({detail}); it may be "
                              f"truncated or not a vidgan checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a vidgan "
                              f"checkpoint (a dict with {', '.join(REQUIRED)})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; "
                              f"is it a vidgan checkpoint?")
    return state


@dataclass
class LoadedGenerator:
    """A generator in eval mode with what the checkpoint says about it."""
    G: Generator
    cfg: Config
    step: int
    classes: List[str]  # label names, index = label; may be shorter than n_classes or empty
    path: Path
    weights: str  # "G_ema" or "G"

    def class_name(self, label: int) -> str:
        return self.classes[label] if label < len(self.classes) else f"class{label}"


def load_generator(path: str | Path, device: Optional[str] = None,
                   use_ema: bool = True) -> LoadedGenerator:
    """Build the generator from the config stored in checkpoint ``path`` and load its weights
    (the EMA copy unless ``use_ema=False``), in eval mode: subsampling off, running BN stats."""
    path = Path(path)
    dev = resolve_device(device)
    state = load_checkpoint(path, map_location="cpu")
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as err:
        raise ConfigError(f"checkpoint {path}: {err}") from None
    weights = "G_ema" if use_ema and state.get("G_ema") is not None else "G"
    G = build_generator(cfg)
    try:
        G.load_state_dict(state[weights])
        if cfg.model.memory_condition_dim:  # MCGN samples the memory stored with D
            memory = build_memory(cfg.model)
            prefix = "frame.memory."
            memory.load_state_dict({k[len(prefix):]: v for k, v in state["D"].items()
                                    if k.startswith(prefix)})
            G.attach_memory(memory.to(dev))
    except (RuntimeError, AttributeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: {weights} weights do not fit the model its "
                              f"config describes ({str(err).splitlines()[0]})") from None
    return LoadedGenerator(G.to(dev).eval(), cfg, int(state["step"]),
                           list(state.get("classes") or []), path, weights)


def rng_state() -> dict:
    """Every RNG the run draws from, as tensors and plain types (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "python": random.getstate()}  # (version, tuple of ints, gauss_next): plain types
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                       numpy_state["pos"], numpy_state["has_gauss"],
                       numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # or a checkpoint from before: np.random.get_state()
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
