"""A training run never loses work: one test per event that could lose it, each
asserting what the user gets (files on disk, exit code, the one-line message, where
``--resume`` continues)."""
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import TINY, tiny_config
from tests.test_evaluate import Crafted
from vidgan.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from vidgan.config import ConfigError
from vidgan.train import NonFiniteLossError, Trainer
from vidgan.train import RunDirError

from tests.test_train import REPO


def _args(root, run, *extra):
    return [*TINY, f"data.root={root}", "data.dataset=folder", f"train.out_dir={run}",
            "eval.sample_interval=0", *extra]


def _trainer(root, run, *extra, **kwargs):
    return Trainer(tiny_config(*_args(root, run, *extra)[len(TINY):]), **kwargs)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, **kwargs)


def _one_line_error(proc) -> str:
    """The run failed with exit 2 and exactly one 'error:' line, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _names(run):
    return sorted(p.name for p in checkpoint_dir(run).iterdir())


# ------------------------------------------------------------- one run per directory
def test_a_fresh_run_refuses_a_directory_that_holds_another_run(tmp_path, synthetic_root):
    run = tmp_path / "run"
    _trainer(synthetic_root, run, "train.iterations=4", "train.checkpoint_interval=2").run()
    before = {p.name: p.read_bytes() for p in checkpoint_dir(run).iterdir()}
    config = (run / "config.yaml").read_text()
    err = _one_line_error(_cli(*_args(synthetic_root, run, "train.iterations=2",
                                      "train.lr=1e-3")))
    assert f"'{run}' already holds another run's checkpoints (newest: ckpt_00000004.pt)" in err
    assert "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in checkpoint_dir(run).iterdir()} == before
    assert (run / "config.yaml").read_text() == config
    # the explicit opt-in replaces the old run: none of its checkpoints is left to prune,
    # or for a later --resume to pick
    fresh = _trainer(synthetic_root, run, "train.iterations=2", "train.checkpoint_interval=1",
                     overwrite=True)
    fresh.run()
    assert _names(run) == ["ckpt_00000001.pt", "ckpt_00000002.pt"]
    assert _trainer(synthetic_root, run, "train.iterations=3", resume=True).step == 2


# ------------------------------------------------------------------------- signals
def _wait_for(log, text, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"'{text}' not seen:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_process_group_checkpoints_and_exits(tmp_path, synthetic_root, sig):
    """Slurm scancel / preemption signal every process of the job, DataLoader workers too."""
    run, log = tmp_path / "run", tmp_path / "log.txt"
    args = _args(synthetic_root, run, "data.num_workers=2", "train.iterations=100000",
                 "train.checkpoint_interval=100000")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_for(log, "it/s=", proc)
            if sig == signal.SIGTERM:  # SIGUSR1 first: a checkpoint, and training goes on
                proc.send_signal(signal.SIGUSR1)
                _wait_for(log, "SIGUSR1: checkpoint", proc)
                time.sleep(1.0)
            os.killpg(proc.pid, sig)
            time.sleep(0.05)
            os.killpg(proc.pid, sig)  # a second one while stopping or saving
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 128 + sig, text[-3000:]
    assert "Traceback" not in text and "killed by signal" not in text
    steps = [load_checkpoint(p)["step"] for p in list_checkpoints(run)]
    assert len(steps) == (2 if sig == signal.SIGTERM else 1) and steps == sorted(set(steps))
    assert steps[-1] > (steps[0] if len(steps) == 2 else 0)
    assert not list(checkpoint_dir(run).glob(".*.tmp"))
    resumed = _trainer(synthetic_root, run, f"train.iterations={steps[-1] + 1}", resume=True)
    assert resumed.step == steps[-1]
    resumed.run()
    assert resumed.step == steps[-1] + 1


# --------------------------------------------------------------------- divergence
def test_divergence_keeps_the_last_healthy_checkpoint(tmp_path, synthetic_root):
    run = tmp_path / "run"
    every2 = ["train.checkpoint_interval=2", "train.keep_checkpoints=2"]
    _trainer(synthetic_root, run, "train.iterations=4", *every2).run()
    blow_up = ["train.lr=1e6", "train.max_nonfinite=3", "train.iterations=40"]
    err = _one_line_error(_cli(*_args(synthetic_root, run, *every2, *blow_up), "--resume"))
    kept = checkpoint_dir(run) / "ckpt_00000004.keep.pt"
    assert f"the last checkpoint before it, {kept} (step 4), is kept" in err
    diverged = [n for n in _names(run) if n.startswith("diverged_")]
    assert diverged and f"diverged state is in {checkpoint_dir(run) / diverged[-1]}" in err
    # nothing was pruned during the non-finite streak
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_00000002.pt", "ckpt_00000004.keep.pt"]
    # --resume with a sane lr continues from the healthy state; pruning spares it
    sane = _trainer(synthetic_root, run, "train.iterations=12", *every2, resume=True)
    assert sane.step == 4
    sane.run()
    assert [p.name for p in list_checkpoints(run)] == [
        "ckpt_00000004.keep.pt", "ckpt_00000010.pt", "ckpt_00000012.pt"]
    # a second divergence pins the newer healthy one and still keeps the first
    with pytest.raises(NonFiniteLossError, match="ckpt_00000012.keep.pt"):
        _trainer(synthetic_root, run, *every2, *blow_up, resume=True).run()
    assert [p.name for p in list_checkpoints(run)] == [
        "ckpt_00000004.keep.pt", "ckpt_00000010.pt", "ckpt_00000012.keep.pt"]
    assert _trainer(synthetic_root, run, "train.iterations=13", resume=True).step == 12


# ------------------------------------------------------------ damaged checkpoints
def test_resume_skips_damaged_checkpoints(tmp_path, synthetic_root):
    run = tmp_path / "run"
    _trainer(synthetic_root, run, "train.iterations=3", "train.checkpoint_interval=1").run()
    ckpts = checkpoint_dir(run)
    torch.save(Crafted(tmp_path / "ran"), ckpts / "ckpt_00000003.pt")  # someone else's file
    damaged = ckpts / "ckpt_00000002.pt"
    damaged.write_bytes(damaged.read_bytes()[:50000])  # truncated by a crash or a full disk
    leftover = ckpts / ".ckpt_00000004.pt.tmp"  # a save that was interrupted
    leftover.write_bytes(b"partial")
    proc = _cli(*_args(synthetic_root, run, "train.iterations=4"), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"warning: checkpoint {ckpts / 'ckpt_00000003.pt'} is refused" in out
    assert f"warning: checkpoint {damaged} could not be read" in out
    assert f"resumed from {ckpts / 'ckpt_00000001.pt'} at step 1" in out
    assert f"removed {leftover}" in out and not (tmp_path / "ran").exists()
    assert _names(run) == ["ckpt_00000001.pt", "ckpt_00000002.pt.unreadable",
                           "ckpt_00000003.pt.unreadable", "ckpt_00000004.pt"]
    assert load_checkpoint(ckpts / "ckpt_00000004.pt")["step"] == 4
    for path in list_checkpoints(run):  # zero-filled, as after a crash on some filesystems
        path.write_bytes(bytes(path.stat().st_size))
    err = _one_line_error(_cli(*_args(synthetic_root, run, "train.iterations=5"), "--resume"))
    assert "no readable checkpoint" in err and "ckpt_00000004.pt, ckpt_00000001.pt" in err


# -------------------------------------------------------------- disk and permissions
def _file_size_limit(limit):
    """In the child: files may not grow past ``limit`` bytes, as on a full disk; the write
    fails with EFBIG (Python ignores SIGXFSZ) instead of killing the process."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


@pytest.mark.parametrize("fails", ["checkpoint", "config"])
def test_a_full_disk_stops_with_one_line_and_keeps_earlier_checkpoints(tmp_path, synthetic_root,
                                                                       fails):
    run = tmp_path / "run"
    _trainer(synthetic_root, run, "train.iterations=2", "train.checkpoint_interval=2").run()
    # 1 MiB holds config.yaml and the log but not a checkpoint (~2 MB at the tiny sizes)
    limit = {"checkpoint": 1 << 20, "config": 1000}[fails]
    proc = _cli(*_args(synthetic_root, run, "train.iterations=4", "train.checkpoint_interval=2"),
                "--resume", preexec_fn=_file_size_limit(limit))
    err = _one_line_error(proc)
    ckpts = checkpoint_dir(run)
    if fails == "checkpoint":
        assert err.startswith(f"error: could not write checkpoint {ckpts / 'ckpt_00000004.pt'}: "
                              f"[Errno 27] File too large; the partial file was removed")
        assert f"the newest intact one is {ckpts / 'ckpt_00000002.pt'}" in err
    else:
        assert err == f"error: could not write {run / 'config.yaml'}: [Errno 27] File too large"
    assert _names(run) == ["ckpt_00000002.pt"]  # no partial file holds the disk
    assert not list(run.glob(".*.tmp"))
    assert _trainer(synthetic_root, run, "train.iterations=3", resume=True).step == 2


def test_an_unwritable_out_dir_fails_at_start_up(tmp_path, synthetic_root):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _one_line_error(_cli(*_args(synthetic_root, blocker / "run")))
    assert f"train.out_dir '{blocker / 'run'}' is not writable" in err and "Errno" in err
    if os.geteuid() == 0:
        return  # root writes through permission bits
    run = tmp_path / "run"
    checkpoint_dir(run).mkdir(parents=True)
    checkpoint_dir(run).chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="is not writable"):
            _trainer(synthetic_root, run)
    finally:
        checkpoint_dir(run).chmod(0o755)


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize("key", ["train.checkpoint_interval", "train.log_interval"])
def test_intervals_must_be_positive(key):
    with pytest.raises(ConfigError, match=rf"{key}=0: must be an integer >= 1"):
        tiny_config(f"{key}=0")


def test_a_zero_sample_interval_is_off(tmp_path, synthetic_root):
    run = tmp_path / "run"
    trainer = _trainer(synthetic_root, run, "train.iterations=2", "eval.interval=0")
    trainer.run()
    assert trainer.step == 2 and not (run / "samples").exists()


@pytest.mark.parametrize("case", ["yaml", "root", "lr"])
def test_bad_input_is_one_line(tmp_path, case):
    if case == "yaml":
        bad = tmp_path / "bad.yaml"
        bad.write_text("train:\n  lr: [1\n  out_dir: x\n")
        args, fragment = ["--config", bad], f"config {bad}: not valid YAML"
    elif case == "root":
        root = tmp_path / "videos.txt"
        root.write_text("")
        args, fragment = [f"data.root={root}"], f"data.root='{root}' is a file"
    else:
        args, fragment = ["train.lr=-1"], "train.lr=-1.0: must be > 0"
    err = _one_line_error(_cli(*TINY, f"train.out_dir={tmp_path / 'run'}", *args))
    assert fragment in err
    if case == "yaml":
        assert "line 3, column" in err
