"""torchrun: N processes are the same experiment as one, on the CPU with gloo."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import BASE, TINY, free_port
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
], ids=["conditional_2d_lazy_r1", "memory_mcgn"])
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
    import signal
    import time
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
