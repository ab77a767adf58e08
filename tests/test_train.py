import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, WIDTHS, tiny_config, widths_for
from vidgan.checkpoint import list_checkpoints, load_checkpoint
from vidgan.config import config_from_dict, load_config
from vidgan.train import NonFiniteLossError, Trainer

REPO = Path(__file__).resolve().parent.parent


def _cfg(tmp_path, root, *extra):
    return tiny_config(f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
                       "data.dataset=folder", "train.checkpoint_interval=1000",
                       "eval.sample_interval=1000", *extra)


def test_tiny_model_trains_30_iterations(tmp_path, synthetic_root):
    cfg = _cfg(tmp_path, synthetic_root, "train.iterations=30", "train.checkpoint_interval=10",
               "train.keep_checkpoints=2", "model.n_classes=4", "eval.sample_interval=15")
    trainer = Trainer(cfg)
    seen = []
    batches = iter(trainer.loader)
    for _ in range(30):
        metrics = trainer.train_step(batches)
        seen.append(metrics)
    for m in seen:
        for key in ("loss/D", "loss/G", "loss/R1"):
            assert torch.isfinite(m[key]), key
    assert seen[-1]["nonfinite_skipped"] == 0
    trainer.close()  # let go of the run directory (run() does this at its end)
    # and through run(): checkpoints pruned to the last 2, samples written, config stored
    trainer2 = Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=20",
                            "train.checkpoint_interval=5", "train.keep_checkpoints=2",
                            "eval.sample_interval=10"))
    result = trainer2.run()
    final = result.checkpoint
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_00000015.pt", "ckpt_00000020.pt"]
    assert final == list_checkpoints(run)[-1]
    assert (result.step, result.stopped_by, result.scores) == (20, None, None)
    # the fixed-z grid is also an animated GIF in TensorBoard, one per sample
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb")).Reload()
    gifs = events.Images("samples/ema_fixed_z")
    assert [e.step for e in gifs] == [10, 20]
    assert Image.open(io.BytesIO(gifs[-1].encoded_image_string)).n_frames == 8
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "sample_00000010.mp4", "sample_00000020.mp4"]
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())
    state = load_checkpoint(final)
    assert config_from_dict(state["config"]) == trainer2.cfg and state["step"] == 20
    assert not list((run / "checkpoints").glob(".*tmp"))  # no temp file left behind


def _weights(trainer):
    return {**{f"G.{k}": v for k, v in trainer.G.state_dict().items()},
            **{f"D.{k}": v for k, v in trainer.D.state_dict().items()},
            **{f"E.{k}": v for k, v in trainer.G_ema.state_dict().items()}}


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bitwise_identical(tmp_path, synthetic_root, workers):
    extra = [f"data.num_workers={workers}", "train.n_dis=2", "model.n_classes=4"]
    straight = Trainer(_cfg(tmp_path / "a", synthetic_root, "train.iterations=4", *extra))
    straight.run()
    first = Trainer(_cfg(tmp_path / "b", synthetic_root, "train.iterations=2", *extra))
    first.run()
    resumed = Trainer(_cfg(tmp_path / "b", synthetic_root, "train.iterations=4", *extra),
                      resume=True)
    assert resumed.step == 2
    resumed.run()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run is not trivially constant: weights moved away from the initialisation
    init = _weights(Trainer(_cfg(tmp_path / "c", synthetic_root, *extra)))
    assert not torch.equal(init["G.temporal.fc.weight"], a["G.temporal.fc.weight"])


def test_resume_needs_a_checkpoint(tmp_path, synthetic_root):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_cfg(tmp_path, synthetic_root), resume=True)


def test_resume_rejects_a_different_model(tmp_path, synthetic_root):
    Trainer(_cfg(tmp_path, synthetic_root, "train.iterations=1")).run()
    with pytest.raises(ValueError, match="model section"):
        Trainer(_cfg(tmp_path, synthetic_root, "model.ch=4"), resume=True)


def test_nonfinite_losses_are_skipped_then_stop(tmp_path, synthetic_root):
    cfg = _cfg(tmp_path, synthetic_root, "train.iterations=50", "train.max_nonfinite=3")
    trainer = Trainer(cfg)
    with torch.no_grad():  # a poisoned generator: every fake, hence every loss, is NaN
        trainer.G.temporal.fc.bias.fill_(float("nan"))
    d_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        trainer.run()
    assert trainer.step == 3 and trainer.nonfinite_total == 3
    for k, v in trainer.D.state_dict().items():  # skipped steps did not touch D
        if v.is_floating_point():
            assert torch.equal(v, d_before[k]), k
    # the state was saved before stopping, under a name --resume does not pick by default
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [
        "diverged_00000003.pt"]
    assert not list_checkpoints(tmp_path / "run")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "ckpt_00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="could not be read"):
        load_checkpoint(bad)
    torch.save({"G": {}}, bad)
    with pytest.raises(RuntimeError, match="lacks D"):
        load_checkpoint(bad)


def test_bf16_autocast_step_is_finite(tmp_path, synthetic_root):
    trainer = Trainer(_cfg(tmp_path, synthetic_root, "train.amp=bf16"))
    metrics = trainer.train_step(iter(trainer.loader))
    assert torch.isfinite(metrics["loss/D"]) and torch.isfinite(metrics["loss/G"])


def test_sigint_to_the_main_process_writes_checkpoint_and_exits(tmp_path, synthetic_root):
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *TINY, f"data.root={synthetic_root}",
            "data.dataset=folder", f"train.out_dir={run}", "train.iterations=100000",
            "train.checkpoint_interval=100000", "eval.sample_interval=100000"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while not (run / "tb").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # let a few iterations run
    proc.send_signal(signal.SIGINT)  # Ctrl-C; the process group case: test_reliability.py
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out.decode()[-2000:]
    ckpts = list_checkpoints(run)
    assert len(ckpts) == 1 and load_checkpoint(ckpts[0])["step"] > 0


def test_cli_reports_config_errors():
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model.n_frames=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "model.n_frames=0" in proc.stderr


# ------------------------------------------------------------------- real-data paths
def _ucf_tree(tmp_path):
    from data_prep.fake_ucf101 import add_bad_files, write_ucf101_tree
    root = write_ucf101_tree(tmp_path / "ucf", groups=3, clips=1, n_frames=12, size=(48, 64))
    return root, add_bad_files(root)


def test_train_cli_starts_on_a_ucf101_tree_with_bad_files(tmp_path):
    """The data path's acceptance run: ucf101_st4.yaml on a UCF101-shaped folder, bad files in."""
    root, _ = _ucf_tree(tmp_path)
    out = tmp_path / "run"
    tiny = [o for o in WIDTHS if not o.startswith("data.num_workers")]
    cmd = [sys.executable, "train.py", "--config", "ucf101_st4.yaml", f"data.root={root}",
           *tiny, "data.num_workers=2", "data.max_bad_fraction=0.5", "train.iterations=2",
           f"train.out_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 videos, 6 excluded" in proc.stderr + proc.stdout
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_00000002.pt"]
    # the default limit (5%) refuses this tree, naming the bad files, exit code 2
    proc = subprocess.run(cmd[:-3] + [f"train.out_dir={out}2"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "v_ApplyEyeMakeup_g90_c01.avi: empty file" in proc.stderr


def test_decode_failures_during_training_are_counted_then_stop(tmp_path):
    from tests.test_data import corrupt_keeping_stat
    from vidgan.data import DataError
    root, _ = _ucf_tree(tmp_path)
    cfg = tiny_config("data.dataset=ucf101", f"data.root={root}", "data.max_bad_fraction=0.5",
                      f"train.out_dir={tmp_path / 'run'}", "train.iterations=2")
    trainer = Trainer(cfg)  # indexes the tree; then one listed file goes bad behind its back
    bad = "YoYo/v_YoYo_g02_c01.avi"
    corrupt_keeping_stat(root / bad)
    trainer.run()  # 2 iterations x batch 4 = one epoch: the bad file is drawn once
    assert trainer.bad_files.keys() == {bad} and trainer.skipped_clips == 1
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["data_skips"] == {
        "skipped_clips": 1, "bad_files": trainer.bad_files}
    # one bad file in 8 is more than 5%: stop with its name, keeping the work done
    cfg = tiny_config("data.dataset=ucf101", f"data.root={root}", "data.max_bad_fraction=0.5",
                      f"train.out_dir={tmp_path / 'run2'}", "train.iterations=2")
    trainer = Trainer(cfg)
    trainer.cfg.data.max_bad_fraction = 0.05
    with pytest.raises(DataError, match=f"(?s)1 of 8 videos are unusable.*{bad}") as err:
        trainer.run()
    assert "State saved to" in str(err.value) and list_checkpoints(tmp_path / "run2")


# ------------------------------------------------------------------- baselines as configs
@pytest.mark.parametrize("name", ["ucf101_single3d", "ucf101_3d2d", "ucf101_mocogan",
                                  "demo_mocogan", "demo_memory", "ucf101_st4_memory"])
def test_new_configs_train_three_iterations(tmp_path, synthetic_root, name):
    cfg = load_config(name, widths_for(name) + [f"data.root={synthetic_root}",
                                                "data.dataset=folder", f"train.out_dir={tmp_path}",
                                                "train.iterations=3"])
    trainer = Trainer(cfg)
    batches = iter(trainer.loader)
    for _ in range(3):
        metrics = trainer.train_step(batches)
        for key in ("loss/D", "loss/G", "loss/R1"):
            assert torch.isfinite(metrics[key]), (name, key)
    assert metrics["nonfinite_skipped"] == 0
    heads = {k.split("_", 1)[1] for k in metrics if k.startswith("logits/real_")}
    expected = {"ucf101_single3d": {"L4"}, "ucf101_3d2d": {"L4", "frame"}}.get(
        name, {"L1", "L2", "L3", "L4"} | ({"frame"} if name.startswith("demo") or "memory" in name
                                          else set()))
    assert heads == expected


@pytest.mark.parametrize("name, key, value", [
    ("ucf101_mocogan", "temporal", "gru"), ("ucf101_st4_memory", "frame_discriminator", "memory")])
def test_new_ucf101_configs_start_on_a_ucf101_tree(tmp_path, name, key, value):
    """Done-when runs: python train.py --config ucf101_mocogan.yaml data.root=... (and the
    memory config)."""
    root, _ = _ucf_tree(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "train.py", "--config", f"{name}.yaml", f"data.root={root}",
           *widths_for(name), "data.max_bad_fraction=0.5", "train.iterations=2",
           f"train.out_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state["config"]["model"][key] == value and state["step"] == 2


# ------------------------------------------------------------------- old checkpoints
OLD_COMMIT = "b09630a"  # main before discriminator heads, loss phases and the GRU


def test_a_checkpoint_from_before_heads_and_phases_still_resumes(tmp_path, synthetic_root):
    """Written by the code of OLD_COMMIT (taken from git history), resumed by today's."""
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
                          capture_output=True)
    if have.returncode:
        pytest.skip(f"git history without {OLD_COMMIT} (a shallow clone)")
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "vidgan", "configs",
                              "data_prep", "train.py"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    run = tmp_path / "run"
    # the old code's demo.yaml was unconditional with no frame head, as the tests' base config
    args = [f"data.root={synthetic_root}", "data.dataset=folder", f"train.out_dir={run}",
            "model.n_classes=4"]
    old_widths = [o for o in WIDTHS if not o.startswith("train.head_gradients")]  # newer key
    proc = subprocess.run([sys.executable, "train.py", *old_widths, *args, "train.iterations=2"],
                          cwd=old, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(old)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_checkpoint(list_checkpoints(run)[-1])
    with pytest.warns(UserWarning, match="model.discriminator=multi3d is no longer a setting"):
        resumed = Trainer(tiny_config(*args, "train.iterations=4"), resume=True)
    assert resumed.step == 2
    for k, v in before["D"].items():  # every old key landed in today's modules
        assert torch.equal(resumed.D.state_dict()[k], v), k
    resumed.run()
    assert resumed.step == 4 and load_checkpoint(list_checkpoints(run)[-1])["step"] == 4


# ------------------------------------------------------------------- memory discriminator
MEMORY = ["model.frame_discriminator=memory", "model.memory.slots=64", "model.memory.key_dim=8",
          "model.memory.topk=16"]


def _memory_state(trainer):
    return {k: v.clone() for k, v in trainer.D.frame.memory.state_dict().items()}


@pytest.mark.parametrize("g_step_write", [True, False])
def test_memory_is_written_after_applied_steps_only_and_mi_joins_both_losses(
        tmp_path, synthetic_root, g_step_write):
    trainer = Trainer(_cfg(tmp_path, synthetic_root, *MEMORY, "loss.mi_weight=0.5",
                           f"model.memory.g_step_write={str(g_step_write).lower()}",
                           "train.head_gradients=true", "loss.r1_interval=2"))
    batches = iter(trainer.loader)
    before = _memory_state(trainer)
    trainer.generator_step(None)  # the G phase reads the memory (MCGN, D's logits) only
    assert all(torch.equal(v, before[k]) for k, v in _memory_state(trainer).items())
    with torch.no_grad():  # sampling and EMA never write either
        trainer.sample_grid()
    assert all(torch.equal(v, before[k]) for k, v in _memory_state(trainer).items())
    # one iteration: the D step's real and fake writes, then the G step's fake write; the
    # lazy R1 step of D step 0 (loss.r1_interval=2) reads the memory but never writes it
    metrics = trainer.train_step(batches)
    assert "loss/R1" in metrics
    ages = trainer.D.frame.memory.ages
    writes = 3 if g_step_write else 2  # every write ages all slots by one
    assert float(ages.max()) == writes and float(ages.min()) == 0
    assert ("frame/resets_fake_g" in metrics) == g_step_write
    for phase in ("D", "G"):
        assert float(metrics[f"loss/{phase}_frame_mi"]) > 0
    # the diagnostics (the sampled keys of the first step are the memory's zero keys: NaN)
    metrics = trainer.train_step(batches)
    for key in ("real_slots", "mean_age", "hist_entropy", "log_likelihood", "p_real", "p_fake",
                "resets_real", "resets_fake", "single_label_real", "single_label_fake",
                "clipped_real", "clipped_fake", "cos_real_queries", "cos_fake_queries",
                "cos_real_keys", "cos_sampled_keys"):
        assert torch.isfinite(metrics[f"frame/{key}"]), key
    # logged every log interval (1 here): the gradient each head sends G
    assert set(k for k in metrics if k.startswith("grad_G/")) == {
        f"grad_G/{h}" for h in ("L1", "L2", "L3", "L4", "frame")}
    # MCGN: the generator's latent ends with keys of D's memory
    z = trainer.G.sample_z(3)
    keys = trainer.G.memory_condition(z)
    assert all(any(torch.equal(k, row) for row in trainer.D.frame.memory.keys) for k in keys)


def test_memory_tells_real_from_generated_frames_after_a_short_run(tmp_path, synthetic_root):
    """After a short CPU run the memory reads a higher p(real) on real frames than on
    generated ones (memoryGAN's D works through the memory alone)."""
    trainer = Trainer(_cfg(tmp_path, synthetic_root, *MEMORY, "train.lr=4e-4"))
    batches = iter(trainer.loader)
    p_real, p_fake = [], []
    for step in range(120):
        metrics = trainer.train_step(batches)
        if step >= 100:
            p_real.append(float(metrics["frame/p_real"]))
            p_fake.append(float(metrics["frame/p_fake"]))
    assert sum(p_real) / 20 > sum(p_fake) / 20 + 0.05, (p_real, p_fake)


def test_memory_run_resumes_bitwise(tmp_path, synthetic_root):
    straight = Trainer(_cfg(tmp_path / "a", synthetic_root, "train.iterations=4", *MEMORY))
    straight.run()
    Trainer(_cfg(tmp_path / "b", synthetic_root, "train.iterations=2", *MEMORY)).run()
    resumed = Trainer(_cfg(tmp_path / "b", synthetic_root, "train.iterations=4", *MEMORY),
                      resume=True)
    resumed.run()
    a, b = _weights(straight), _weights(resumed)
    assert any(k.startswith("D.frame.memory.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert float(straight.D.frame.memory.ages.max()) > 0


def test_32px_model_has_levels_at_4_to_32_px_and_trains(tmp_path, synthetic_root):
    """model.resolution=32 (below the paper's 64, for CPU-sized runs): a 1x1 map, two Up blocks
    at level 1, so the levels render 4, 8, 16 and 32 px; the 3D heads and the 2D frame head
    take them, and the 64 px files are resized at decode time."""
    cfg = _cfg(tmp_path, synthetic_root, "model.resolution=32", "model.n_classes=4",
               "model.frame_discriminator=resnet2d")
    trainer = Trainer(cfg)
    assert [len(level) for level in trainer.G.levels] == [2, 1, 1, 1]
    y = torch.arange(4) % 4
    videos = trainer.G.train()(trainer.G.sample_z(4), y)
    assert [tuple(v.shape[-3:]) for v in videos] == [(8, 4, 4), (4, 8, 8), (2, 16, 16),
                                                     (1, 32, 32)]
    batches = iter(trainer.loader)
    video, *_ = next(batches)
    assert video.shape[-2:] == (32, 32)
    for _ in range(2):
        metrics = trainer.train_step(batches)
        assert torch.isfinite(metrics["loss/D"]) and torch.isfinite(metrics["loss/G"])
    trainer.G.eval()
    with torch.no_grad():
        assert trainer.G(trainer.G.sample_z(2), y[:2]).shape == (2, 3, 8, 32, 32)
