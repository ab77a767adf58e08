"""torchrun: N processes are the same experiment as one, on the CPU with gloo; a lost one
ends the others at once."""
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import BASE, TINY, free_port, tiny_config
from vidgan.data.clips import ClipSampler

REPO = Path(__file__).resolve().parent.parent


def _overrides(root, out_dir, *extra):
    """Overrides of the tests' base config: conditional, with the 2D frame head, batch 8."""
    return ["model.n_classes=4", "model.frame_discriminator=resnet2d",
            f"data.root={root}", "data.dataset=folder", f"train.out_dir={out_dir}",
        "train.batch_size=8", "eval.metrics=[]", "eval.sample_interval=0",
        "train.checkpoint_interval=1000", *extra]


def _train_float64(rank, world, port, base, overrides, out, steps):
    """One process of a float64 run: ``steps`` train_steps on the Trainer's own loader, then
    its G, D, G_ema and memory state to ``out/rank<r>.pt``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    from vidgan import distributed
    from vidgan.config import load_config
    from vidgan.train import Trainer
    trainer = Trainer(load_config(base, overrides))
    batches = ((video.double(), y, skipped) for video, y, skipped in trainer.loader)
    for _ in range(steps):
        trainer.train_step(batches)
    torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict(),
                "G_ema": trainer.G_ema.state_dict()}, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def _run_float64(world, root, tmp, *extra, steps=3):
    out = tmp / f"world{world}"
    out.mkdir(parents=True)
    mp.spawn(_train_float64, args=(world, free_port(), str(BASE),
                                   _overrides(root, out / "run", *extra), out, steps),
             nprocs=world)
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


@pytest.mark.parametrize("extra", [
    # conditional, with the 2D frame head (per-sample frame draws) and lazy R1
    ["model.n_classes=4", "model.frame_discriminator=resnet2d", "loss.r1_interval=2"],
    # the memory discriminator with MCGN (memory written from the gathered global batch)
    ["model.n_classes=0", "model.frame_discriminator=memory", "model.memory.slots=32",
     "model.memory.key_dim=8", "model.memory.topk=4"],
    # a latent SDE: its Brownian increments are drawn with z, for the global batch
    ["model.n_classes=0", "model.latent_de=sde"],
], ids=["conditional_2d_lazy_r1", "memory_mcgn", "latent_sde"])
def test_two_processes_equal_one_in_float64(tmp_path, synthetic_root, extra):
    one, = _run_float64(1, synthetic_root, tmp_path, *extra)
    rank0, rank1 = _run_float64(2, synthetic_root, tmp_path, *extra)
    for part in ("G", "D", "G_ema"):
        for name, a in one[part].items():
            b0, b1 = rank0[part][name], rank1[part][name]
            assert torch.equal(b0, b1), f"ranks out of sync: {part}.{name}"
            if a.is_floating_point():
                torch.testing.assert_close(b0, a, rtol=1e-5, atol=1e-9,
                                           msg=lambda m: f"{part}.{name}: {m}")
            else:
                assert torch.equal(b0, a), f"{part}.{name}"
    init, = _run_float64(1, synthetic_root, tmp_path / "init", *extra, steps=0)
    for part, name in (("G", "temporal.fc.weight"), ("D", "discriminators.0.fc.weight")):
        assert (one[part][name] - init[part][name]).abs().max() > 1e-3  # training moved it
    memory_keys = [k for k in one["D"] if "memory" in k]
    assert bool(memory_keys) == ("model.frame_discriminator=memory" in extra)


def test_two_processes_equal_one_in_float64_tgan(tmp_path):
    """TGAN normalises over the global batch (BN with and without beta, 1D/2D/3D), and its SVC
    and BN-scale clip read the same running statistics in every process, so the split batch
    trains as one process does. (VGAN's BNs are the same global ones.)"""
    family = ["model.family=tgan", "model.ch=32", "loss.type=wgan", "loss.r1_weight=0",
              "train.optimizer=rmsprop", "train.d_constraint=svc",
              "train.d_constraint_interval=2"]
    from vidgan.data.synthetic import write_dataset
    root = write_dataset(tmp_path / "data", per_class=2, n_frames=16, size=32)
    extra = ["model.n_classes=0", "model.frame_discriminator=none", "model.resolution=32",
             "model.n_frames=16", "model.z_dim=8", "model.dis_ch=4",
             "train.lr_decay_iterations=0", *family]
    one, = _run_float64(1, root, tmp_path, *extra)
    rank0, rank1 = _run_float64(2, root, tmp_path, *extra)
    # TGAN's biases just before a BN have gradients of pure rounding, which RMSprop turns
    # into steps of either sign: they stay near 0 (< 1e-6) and are compared so.
    before_bn = {f"D.net.convs.{i}.bias" for i in (1, 2, 3)} | {
        f"G.temporal.deconvs.{i}.bias" for i in range(4)}
    for part in ("G", "D"):
        for name, a in one[part].items():
            assert torch.equal(rank0[part][name], rank1[part][name]), f"{part}.{name}"
            rounding = f"{part}.{name}" in before_bn
            torch.testing.assert_close(rank0[part][name], a, rtol=0 if rounding else 1e-5,
                                       atol=1e-6 if rounding else 1e-9,
                                       msg=lambda m: f"{part}.{name}: {m}")
    from vidgan.config import load_config
    from vidgan.models import build_generator
    torch.manual_seed(0)  # the runs' train.seed, before the Trainer builds G
    init = build_generator(load_config(str(BASE), _overrides(root, tmp_path, *extra)))
    moved = [name for name, a in init.state_dict().items()
             if a.is_floating_point() and (a.double() - one["G"][name]).abs().max() > 1e-4]
    assert moved  # training moved G


def test_the_global_clip_stream_does_not_depend_on_the_number_of_processes():
    n, seed, batch = 7, 3, 4
    single = ClipSampler(n, seed)
    stream = [k for _, k in zip(range(40), single)]
    for world in (2, 4):
        local = batch // world
        parts = [iter(ClipSampler(n, seed, rank=r, world=world, local_batch=local))
                 for r in range(world)]
        merged = []
        while len(merged) < 40:  # global batch i = rank 0's slice, rank 1's, ...
            for it in parts:
                merged += [next(it) for _ in range(local)]
        assert merged[:40] == stream
    # a checkpoint at global step s resumes with any number of processes
    resumed = [k for _, k in zip(range(8), ClipSampler(n, seed, start=12))]
    assert resumed == stream[12:20]
    two = [k for _, k in zip(range(4), ClipSampler(n, seed, start=12, rank=1, world=2,
                                                   local_batch=2))]
    assert two == stream[14:16] + stream[18:20]


def test_batch_that_does_not_split_is_a_clear_error(monkeypatch):
    from vidgan import distributed
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="train.batch_size=8 is the global batch"):
        distributed.local_batch(8)


def test_torchrun_two_processes_one_run_directory_then_resume_in_one(tmp_path, synthetic_root):
    out = tmp_path / "run"
    args = _overrides(synthetic_root, out, "train.iterations=2", "train.checkpoint_interval=1",
                      "model.n_classes=4", "model.frame_discriminator=resnet2d")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "train.py", *TINY, *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "ckpt_00000001.pt", "ckpt_00000002.pt"]
    assert len(list((out / "tb").iterdir())) == 1  # one TensorBoard log: rank 0's
    assert two.stdout.count("step 2: checkpoint") == 1
    one = subprocess.run([sys.executable, "train.py", *TINY, *args, "train.iterations=3",
                          "--resume"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resumed from" in one.stdout + one.stderr
    assert (out / "checkpoints" / "ckpt_00000003.pt").is_file()


def _evaluate(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from tests.conftest import tiny_config
    from vidgan import distributed
    from vidgan.metrics.evaluation import evaluate_generator
    from vidgan.metrics import C3D
    from vidgan.models import build_generator
    distributed.init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    G, c3d = build_generator(tiny_config("model.n_classes=4")), C3D().eval()
    scores = evaluate_generator(G, c3d, metrics=["is", "modes", "synthetic"], n_samples=5,
                                batch_size=2, device="cpu", seed=7)
    # batches come back in global order: process r holds r, r + N, ...
    order = distributed.gather_batches([torch.tensor([i]) for i in range(rank, 5, world)],
                                       torch.device("cpu"))
    torch.save({**scores, "order": [int(t) for t in order]},
               Path(out) / f"world{world}_rank{rank}.pt")
    distributed.shutdown()


def test_evaluation_scores_equal_across_world_sizes(tmp_path):
    """5 clips in batches of 2: rank 0 renders batches 0 and 2, rank 1 batch 1; both get the
    scores of all 5, equal to one process's."""
    for world in (1, 2):
        mp.spawn(_evaluate, args=(world, free_port(), tmp_path), nprocs=world)
    one = torch.load(tmp_path / "world1_rank0.pt")
    assert one.pop("order") == [0, 1, 2, 3, 4]
    assert "is" in one and "modes_valid" in one and "synthetic_coherent" in one
    for rank in (0, 1):
        two = torch.load(tmp_path / f"world2_rank{rank}.pt")
        assert two.pop("order") == [0, 1, 2, 3, 4]
        assert two.keys() == one.keys()
        for name, value in one.items():
            assert two[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_sigterm_to_one_process_stops_all_at_one_iteration_with_one_checkpoint(
        tmp_path, synthetic_root):
    out = tmp_path / "run"
    args = _overrides(synthetic_root, out, "train.iterations=100000",
                      "train.checkpoint_interval=5")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", "train.py", *TINY, *args], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "ckpt_00000005.pt").exists():
            assert time.time() < deadline and job.poll() is None, "no checkpoint in time"
            time.sleep(0.2)
        ranks = {}
        for pid in subprocess.run(["pgrep", "-f", f"train.py.*{out}"], capture_output=True,
                                  text=True).stdout.split():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = [e for e in environ if e.startswith(b"RANK=")]
            if rank:
                ranks[rank[0].decode()] = int(pid)
        os.kill(ranks["RANK=1"], signal.SIGTERM)  # rank 1 only
        log = job.communicate(timeout=120)[0]
    finally:
        job.kill()
    stopped = [int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("ckpt_*.pt")]
    # one stop: both processes left at the same iteration, rank 0 wrote its checkpoint
    assert log.count("received signal 15") == 1, log[-2000:]
    assert log.count(f"step {max(stopped)}: checkpoint") == 1
    assert max(stopped) > 5
    # every process ended as a stopped run (128 + 15), none with an error; torchrun itself
    # reports non-zero exits as failures (and exits 1)
    assert "exitcode  : 143" in log and "exitcode  : 1 " not in log
    assert "[rank0]: Traceback" not in log and "[rank1]: Traceback" not in log


# ------------------------------------------------------------------ a lost process
def _launch(tmp_path, args):
    """torchrun with 2 training processes in a session of their own; output to a file."""
    log = tmp_path / "torchrun.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", "train.py", *TINY, *args], cwd=REPO, env=env,
                           stdout=log.open("w"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    return job, log


def _when_checkpointed(job, out, step, timeout=180):
    """{rank: pid} of the training processes once checkpoint ``step`` exists."""
    deadline = time.time() + timeout
    while not (out / "checkpoints" / f"ckpt_{step:08d}.pt").exists():
        assert time.time() < deadline and job.poll() is None, "no checkpoint in time"
        time.sleep(0.1)
    ranks = {}
    for pid in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True,
                              text=True).stdout.split():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [e for e in environ if e.startswith(b"RANK=")]
        ranks[int(rank[0][5:])] = int(pid)
    assert sorted(ranks) == [0, 1]
    return ranks


def _kill_all(job, ranks):
    """torchrun and its training processes (which torchrun starts in sessions of their own),
    a stopped one too."""
    for pid in [job.pid, *ranks.values()]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait(timeout=60)


def _seconds_until_gone(pid, timeout=60):
    start = time.monotonic()
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() - start < timeout, f"process {pid} still there after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _the_error_line(log):
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text[-3000:]
    assert "[rank0]: Traceback" not in text, text[-3000:]  # torchrun's own report may follow
    return errors[0]


def test_a_killed_process_ends_the_other_at_once_and_the_run_resumes(tmp_path, synthetic_root):
    from vidgan.checkpoint import load_checkpoint
    out = tmp_path / "run"
    # a loader worker too: its copy of the process group's sockets must not keep them open
    args = _overrides(synthetic_root, out, "train.iterations=100000",
                      "train.checkpoint_interval=3", "data.num_workers=1")
    job, log = _launch(tmp_path, args)
    ranks = {}
    try:
        ranks = _when_checkpointed(job, out, 6)
        os.kill(ranks[1], signal.SIGKILL)  # as the OOM killer or a failed node does
        elapsed = _seconds_until_gone(ranks[0])
        job.wait(timeout=60)  # torchrun's report
    finally:
        _kill_all(job, ranks)
    line = _the_error_line(log)
    assert elapsed < 3.5, (elapsed, line)  # measured 0.2 s; torchrun's SIGTERM + grace: 5 s
    assert "exitcode  : 3 " in log.read_text()  # rank 0 left as a lost peer, not an error
    found = re.fullmatch(r"error: a peer process was lost after step (\d+): .* failed \(.*\)\. "
                         r"Nothing saved now, .*; the newest checkpoint is (\S+)\. Resume with: "
                         r"torchrun --standalone --nproc_per_node=2 (.*)", line)
    assert found, line
    step, newest, command = int(found[1]), Path(found[2]), found[3]
    written = sorted((out / "checkpoints").glob("ckpt_*.pt"))
    assert newest == written[-1] and step >= 6
    for path in written:  # no partial checkpoint: every one loads
        load_checkpoint(path)
    # the command it prints resumes from the newest, here in one process
    argv = shlex.split(command)
    assert argv[0] == "train.py" and argv[-1] == "--resume"
    saved = load_checkpoint(newest)["step"]
    again = subprocess.run([sys.executable, *argv, f"train.iterations={saved + 1}"], cwd=REPO,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {newest} at step {saved}" in again.stdout + again.stderr
    assert (out / "checkpoints" / f"ckpt_{saved + 1:08d}.pt").is_file()


@pytest.mark.parametrize("how", ["timeout", "sigterm"])
def test_a_hung_process_ends_the_other_after_the_timeout_or_a_stop_signal(
        tmp_path, synthetic_root, how):
    """Rank 1 stopped (SIGSTOP): rank 0 leaves train.collective_timeout later, or within the
    grace after a SIGTERM when that timeout is far off."""
    from vidgan.checkpoint import load_checkpoint
    from vidgan.distributed import STOP_GRACE_S
    out = tmp_path / "run"
    timeout = 2 if how == "timeout" else 600
    args = _overrides(synthetic_root, out, "train.iterations=100000",
                      "train.checkpoint_interval=3", f"train.collective_timeout={timeout}")
    job, log = _launch(tmp_path, args)
    ranks = {}
    try:
        ranks = _when_checkpointed(job, out, 3)
        os.kill(ranks[1], signal.SIGSTOP)
        if how == "sigterm":
            time.sleep(1)
            os.kill(ranks[0], signal.SIGTERM)
        elapsed = _seconds_until_gone(ranks[0])
    finally:
        _kill_all(job, ranks)
    line = _the_error_line(log)
    assert "a peer process was lost after step" in line and "Resume with: torchrun" in line
    if how == "timeout":
        assert "train.collective_timeout=2 s" in line or "within 2 s" in line, line
        assert 1.5 < elapsed < timeout + 3, elapsed
    else:
        assert f"no answer {STOP_GRACE_S:g} s after a stop signal" in line, line
        assert elapsed < STOP_GRACE_S + 3, elapsed
    for path in (out / "checkpoints").glob("ckpt_*.pt"):
        load_checkpoint(path)


# A peer of ``python -m vidgan.evaluate --checkpoint`` that goes as far as the evaluation:
# the references' barrier, then it dies or hangs before its share of the clips is gathered.
_EVAL_PEER = """
import os, signal, sys, torch
from vidgan import distributed
distributed.init_from_env(torch.device("cpu"))
distributed.barrier()  # main_first: rank 0 has its real references
os.kill(os.getpid(), getattr(signal, sys.argv[1]))
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_evaluation_with_a_lost_process_ends_at_once_and_writes_nothing(
        tmp_path, synthetic_root, how):
    from tests.conftest import save_untrained_checkpoint
    cfg = tiny_config("model.n_classes=4", "data.dataset=folder", f"data.root={synthetic_root}",
                      f"eval.stats_dir={tmp_path / 'stats'}")
    ckpt = save_untrained_checkpoint(cfg, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    out = tmp_path / "scores.json"
    main = subprocess.Popen([sys.executable, "-m", "vidgan.evaluate", "--checkpoint", str(ckpt),
                             "--metrics", "synthetic", "--n-samples", "64", "--batch-size", "4",
                             "--device", "cpu", "--collective-timeout", "2", "--out", str(out)],
                            cwd=REPO, env={**env, "RANK": "0", "LOCAL_RANK": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peer = subprocess.Popen([sys.executable, "-c", _EVAL_PEER, how], cwd=REPO,
                            env={**env, "RANK": "1", "LOCAL_RANK": "1"})
    try:
        _, err = main.communicate(timeout=120)
        # the peer got as far as the evaluation: it died or stopped by its own signal
        if how == "SIGKILL":
            assert peer.wait(timeout=10) == -signal.SIGKILL
        else:
            assert Path(f"/proc/{peer.pid}/stat").read_text().split()[2] == "T"
    finally:
        peer.kill()
        peer.wait()
        main.kill()
    assert main.returncode == 3, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [line for line in err.splitlines() if "error" in line.lower()], err[-3000:]
    reason = "failed (" if how == "SIGKILL" else "no answer within 2 s"
    assert len(errors) == 1 and reason in errors[0], err[-3000:]
    assert "a peer process was lost during the evaluation" in errors[0]
    assert "Traceback" not in err and not out.exists()


def test_an_error_in_a_step_stops_the_loader_workers(tmp_path, synthetic_root, monkeypatch):
    """An error that leaves Trainer.run uncaught still shuts the loader's workers down: at
    the interpreter's exit they would be joined for ever (they ignore SIGTERM)."""
    import multiprocessing

    from vidgan.train import Trainer

    def broken(batches):
        next(batches)  # the workers are up
        raise RuntimeError("a bug in a step")

    trainer = Trainer(tiny_config(*_overrides(synthetic_root, tmp_path / "run",
                                              "data.num_workers=1")))
    monkeypatch.setattr(trainer, "train_step", broken)
    try:
        with pytest.raises(RuntimeError, match="a bug in a step") as caught:
            trainer.run()
        assert caught.value.__traceback__ is not None  # its frames are still held here
        assert multiprocessing.active_children() == []
    finally:  # a failure here must not hang the test session at its exit
        for child in multiprocessing.active_children():
            child.kill()


@pytest.mark.parametrize("argv, env, expected", [
    (["train.py", "--config", "demo.yaml", "--overwrite", "train.lr=1e-3"],
     {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
     "torchrun --standalone --nproc_per_node=2 train.py --config demo.yaml train.lr=1e-3 "
     "--resume"),
    (["train.py", "--resume-from", "runs/x/diverged_00000007.pt", "train.out_dir=runs/my x"],
     {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"},
     "torchrun <the same options> train.py 'train.out_dir=runs/my x' --resume"),
    (["train.py", "--resume-from=a.pt", "--resume"], {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
     "torchrun --standalone --nproc_per_node=2 train.py --resume"),
])
def test_the_resume_command_of_a_lost_run(monkeypatch, argv, env, expected):
    import importlib
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    train = importlib.import_module("train")
    assert train.resume_command(argv) == expected


def test_before_its_first_checkpoint_a_lost_run_is_started_again_as_it_was(monkeypatch):
    import importlib
    from types import SimpleNamespace

    from vidgan.distributed import PeerLostError
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    train = importlib.import_module("train")
    argv = ["train.py", "--config", "demo.yaml", "--overwrite"]
    err = PeerLostError("an all-reduce failed (Connection closed by peer)")
    again = "torchrun --standalone --nproc_per_node=2 train.py --config demo.yaml --overwrite"
    assert train.peer_lost_message(err, None, argv) == (
        f"a peer process was lost during start-up: {err}. Start the run again: {again}")
    fresh = SimpleNamespace(step=4, newest_checkpoint=None)
    assert train.peer_lost_message(err, fresh, argv).endswith(
        f"after step 4: {err}. No checkpoint was written yet; start again: {again}")
