"""Atomic, pruned checkpoints: ``<run>/checkpoints/ckpt_<step>.pt``, and reading them back
(the whole training state, or the generator alone for sampling and evaluation)."""
from __future__ import annotations

import os
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

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list:
    """Checkpoints of a run, oldest first."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def latest_checkpoint(out_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict, out_dir: str | Path, step: int, keep: int) -> Path:
    """Write ``state`` to a temporary file, fsync, rename; then keep only the newest ``keep``.

    A crash at any point leaves either the old or the new file, never a truncated one.
    """
    d = checkpoint_dir(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt_{step:08d}.pt"
    tmp = d / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(out_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        raise RuntimeError(f"checkpoint {path} could not be read ({err}); it may be truncated "
                           f"or not a vidgan checkpoint") from None
    missing = [k for k in ("G", "D", "G_ema", "opt_G", "opt_D", "step", "config", "rng")
               if k not in state]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {', '.join(missing)}; "
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
    except RuntimeError as err:
        raise RuntimeError(f"checkpoint {path}: {weights} weights do not fit the model its "
                           f"config describes ({str(err).splitlines()[0]})") from None
    return LoadedGenerator(G.to(dev).eval(), cfg, int(state["step"]),
                           list(state.get("classes") or []), path, weights)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
