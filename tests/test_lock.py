"""One run per run directory (vidgan/lock.py): a second process on a held train.out_dir is
refused at once, naming the holder; the OS frees the directory when the holder ends."""
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, tiny_config
from vidgan import lock as lock_module
from vidgan.checkpoint import list_checkpoints, load_checkpoint
from vidgan.lock import RUN_LOCK, DirectoryLock, LockHeld, read_holder
from vidgan.train import RunDirError, Trainer

REPO = Path(__file__).resolve().parent.parent


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = DirectoryLock(tmp_path / "run", RUN_LOCK).acquire(wait=False)
    with pytest.raises(LockHeld) as err:  # another open of the file: refused even in-process
        DirectoryLock(tmp_path / "run", RUN_LOCK).acquire(wait=False)
    assert err.value.holder["pid"] == os.getpid()
    assert err.value.holder["host"] == socket.gethostname()
    assert "started" in err.value.holder and "command" in err.value.holder
    first.release()
    DirectoryLock(tmp_path / "run", RUN_LOCK).acquire(wait=False).release()


def test_a_file_system_that_cannot_lock_is_said_so(tmp_path, monkeypatch, capsys):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with pytest.raises(lock_module.LockUnsupported, match="does not support file locks"):
        DirectoryLock(tmp_path, RUN_LOCK).acquire(wait=False)
    from vidgan.train.rundir import hold_run_dir
    assert hold_run_dir(tmp_path / "run") is None
    assert "nothing stops a second run" in capsys.readouterr().out


def _cfg(tmp_path, root, *extra):
    return tiny_config(f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
                       "data.dataset=folder", "train.checkpoint_interval=1000",
                       "eval.sample_interval=1000", *extra)


def test_a_second_trainer_in_a_held_directory_is_refused(tmp_path, synthetic_root):
    first = Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=2"))
    for kwargs in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(RunDirError, match=f"in use by another run: PID {os.getpid()}"):
            Trainer(_cfg(tmp_path, synthetic_root), **kwargs)
    first.run()  # ends by letting go of the directory
    assert Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=3"), resume=True).step == 2


# ------------------------------------------------------------------------ two processes
def _train(out, root, *extra):
    return [sys.executable, str(REPO / "train.py"), *TINY, f"data.root={root}",
            "data.dataset=folder", f"train.out_dir={out}", "eval.sample_interval=100000",
            *extra]


def _start(args):
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(predicate, proc, what, timeout=180):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"{what}: rc {proc.returncode}\n{out[-1500:]}\n{err[-1500:]}")
        time.sleep(0.1)


def _weights(path):
    state = load_checkpoint(path)
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in state[net].items()}


def test_only_one_process_trains_in_a_directory(tmp_path, synthetic_root):
    """A trains; fresh, --resume, --overwrite and --resume-from (of A's checkpoint, into
    another directory) started meanwhile exit 2 naming A; A's checkpoints are bitwise a lone
    run's; once A has ended, --resume takes the directory at once."""
    run, lone = tmp_path / "run", tmp_path / "lone"
    common = ("train.iterations=30", "train.checkpoint_interval=5", "train.keep_checkpoints=10")
    a = _start(_train(run, synthetic_root, *common))
    reference = _start(_train(lone, synthetic_root, *common))
    _wait_for(lambda: (run / "checkpoints" / "ckpt_00000005.pt").is_file(), a, "run A")
    a.send_signal(signal.SIGSTOP)  # A holds the directory while the others try, however fast
    probes = [_start(_train(run, synthetic_root, *common)),
              _start(_train(run, synthetic_root, *common, "--resume")),
              _start(_train(run, synthetic_root, *common, "--overwrite")),
              _start(_train(tmp_path / "elsewhere", synthetic_root, "--resume-from",
                            str(run / "checkpoints" / "ckpt_00000005.pt")))]
    for probe in probes:
        out, err = probe.communicate(timeout=180)
        assert probe.returncode == 2, (out[-1000:], err[-1000:])
        assert f"PID {a.pid} on host {socket.gethostname()}" in err, err
        assert "in use by another run" in err
    assert read_holder(run / RUN_LOCK)["pid"] == a.pid  # no probe wrote its record
    assert not (tmp_path / "elsewhere" / "checkpoints").exists()
    a.send_signal(signal.SIGCONT)
    for proc in (a, reference):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    ours, alone = list_checkpoints(run), list_checkpoints(lone)
    assert [p.name for p in ours] == [p.name for p in alone] and len(ours) == 6
    for mine, theirs in zip(ours, alone):
        a_w, b_w = _weights(mine), _weights(theirs)
        assert all(torch.equal(a_w[k], b_w[k]) for k in a_w), mine.name
    done = subprocess.run(_train(run, synthetic_root, "train.iterations=31", "--resume"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_directory_is_free_once_its_holder_is_gone(tmp_path, synthetic_root, sig):
    """Stopped by SIGTERM (writes a checkpoint, exits 143) or killed by SIGKILL (the OS drops
    the lock): --resume takes the directory at once and continues the newest checkpoint."""
    run = tmp_path / "run"
    a = _start(_train(run, synthetic_root, "train.iterations=100000",
                      "train.checkpoint_interval=5"))
    _wait_for(lambda: (run / "checkpoints" / "ckpt_00000005.pt").is_file(), a, "run A")
    a.send_signal(sig)
    a.communicate(timeout=120)
    assert a.returncode == (128 + sig if sig == signal.SIGTERM else -sig)
    newest = load_checkpoint(list_checkpoints(run)[-1])["step"]
    done = subprocess.run(_train(run, synthetic_root, f"train.iterations={newest + 1}",
                                 "--resume"), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(list_checkpoints(run)[-1])["step"] == newest + 1
