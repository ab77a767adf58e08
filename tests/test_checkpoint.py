import random

import numpy as np
import pytest
import torch

from vidgan.checkpoint import (CheckpointError, checkpoint_dir, list_checkpoints,
                               load_checkpoint, pin_checkpoint, remove_partial_saves, rng_state,
                               save_checkpoint, set_rng_state)


def _state(step):
    return {"G": {"w": torch.full((2,), float(step))}, "D": {}, "G_ema": {}, "opt_G": {},
            "opt_D": {}, "step": step, "config": {}, "rng": rng_state()}


def _names(run):
    return [p.name for p in list_checkpoints(run)]


def test_new_checkpoints_are_plain_data(tmp_path):
    path = save_checkpoint(_state(1), tmp_path, 1, keep=1)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    assert load_checkpoint(path)["step"] == 1


def test_rng_state_round_trips_every_generator():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5), np.random.rand(5), random.random()  # move all three on
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_legacy_numpy_rng_state_still_restores(tmp_path):
    """Checkpoints written before this format stored np.random.get_state() itself."""
    legacy = {**_state(1), "rng": {"torch": torch.get_rng_state(),
                                   "numpy": np.random.get_state(), "python": random.getstate()}}
    path = tmp_path / "ckpt_00000001.pt"
    torch.save(legacy, path)
    expected = np.random.rand(4)
    np.random.rand(7)
    set_rng_state(load_checkpoint(path)["rng"])
    assert np.array_equal(np.random.rand(4), expected)


def test_pruning_keeps_the_newest_and_never_touches_pinned_or_later_ones(tmp_path):
    for step in (2, 4):
        save_checkpoint(_state(step), tmp_path, step, keep=3)
    pin_checkpoint(list_checkpoints(tmp_path)[0])
    for step in (6, 8, 10):
        save_checkpoint(_state(step), tmp_path, step, keep=2)
    assert _names(tmp_path) == ["ckpt_00000002.keep.pt", "ckpt_00000008.pt", "ckpt_00000010.pt"]
    # a save of an earlier step (an explicit --resume-from an older checkpoint) prunes only
    # up to itself, oldest first
    save_checkpoint(_state(5), tmp_path, 5, keep=1)
    assert _names(tmp_path) == ["ckpt_00000002.keep.pt", "ckpt_00000005.pt", "ckpt_00000008.pt",
                                "ckpt_00000010.pt"]


def test_a_failed_write_keeps_earlier_checkpoints_and_names_the_path(tmp_path):
    save_checkpoint(_state(2), tmp_path, 2, keep=3)
    target = checkpoint_dir(tmp_path) / "ckpt_00000004.pt"
    target.mkdir()  # the rename onto it fails after the data was written
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*ckpt_00000004\.pt: "
                                              r"\[Errno \d+\].*newest intact one is .*ckpt_0000"
                                              r"0002\.pt"):
        save_checkpoint(_state(4), tmp_path, 4, keep=3)
    assert not list(checkpoint_dir(tmp_path).glob(".*.tmp"))
    assert load_checkpoint(checkpoint_dir(tmp_path) / "ckpt_00000002.pt")["step"] == 2


def test_partial_saves_are_removed(tmp_path):
    save_checkpoint(_state(2), tmp_path, 2, keep=3)
    leftover = checkpoint_dir(tmp_path) / ".ckpt_00000004.pt.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert remove_partial_saves(tmp_path) == [leftover]
    assert not leftover.exists() and _names(tmp_path) == ["ckpt_00000002.pt"]
