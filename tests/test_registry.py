"""The metric registry (vidgan/metrics/registry.py) and FVD/KVD through the evaluation: the
CLI on a tiny generator with a random-weight I3D in the pytorch-i3d layout, and 2 processes
equal to 1. I3D runs at its real 224x224 size, so the clip counts are tiny."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import free_port, save_untrained_checkpoint, tiny_config
from vidgan.checkpoint import load_generator
from vidgan.metrics.fvd import _features, fvd, kvd
from vidgan.metrics.i3d import I3D
from vidgan.metrics.registry import (Metric, Reference, check_metric_names, get_metric,
                                     metric_names, register)

REPO = Path(__file__).resolve().parent.parent
N = 3  # clips per side


def _register_tiny_fvd():
    """fvd2048_16f's record with 3 clips a side (registered once per process)."""
    if "fvd3_16f" in metric_names():
        return
    ref = Reference("i3d_16f_first3", None, N, reduce=_features, videos="first")
    score = (lambda reads, reference, options:
             {"fvd3_16f": fvd(reference["features"], reads),
              "kvd3_16f": kvd(reference["features"], reads)})
    register(Metric("fvd3_16f", "i3d", score, n_frames=16, reference=ref, n_samples=N))


def test_unknown_metric_is_refused_with_the_list_of_known_ones():
    with pytest.raises(ValueError) as err:
        get_metric("fvd")
    assert "unknown metric 'fvd'" in str(err.value)
    for name in ("fvd2048_16f", "fvd2048_128f", "kvd2048_16f", "is", "fid", "modes"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match=r"eval.metrics=\['is', 'fdv'\]: unknown \['fdv'\]"):
        check_metric_names(["is", "fdv"], "eval.metrics")
    with pytest.raises(ValueError, match="already registered"):
        register(get_metric("is"))


def test_records_follow_stylegan_v_and_digan():
    for name, frames in (("fvd2048_16f", 16), ("fvd2048_128f", 128), ("kvd2048_16f", 16)):
        m = get_metric(name)
        assert (m.reader, m.n_frames, m.n_samples) == ("i3d", frames, 2048)
        assert (m.reference.n_clips, m.reference.videos) == (2048, "first")
    assert get_metric("fvd2048_16f").reference == get_metric("kvd2048_16f").reference
    assert get_metric("fvd256_16f").n_samples == 256 and "comparable only" in \
        get_metric("fvd256_16f").comparable


def test_readme_metrics_table_names_every_metric():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Metrics"):]
    for name in metric_names():
        assert re.search(rf"\| `{name}` \|", table), f"README's metrics table lacks {name}"


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    """A random-weight I3D saved as the pytorch-i3d state dict (no num_batches_tracked)."""
    torch.manual_seed(0)
    state = {k: v for k, v in I3D().state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(state, path)
    return path


def _fvd3_by_cli(ckpt, i3d_file, out):
    """The record of ``python -m vidgan.evaluate --metrics fvd3_16f`` on ``ckpt``."""
    from vidgan.evaluate import main
    assert main(["--checkpoint", str(ckpt), "--i3d-weights", str(i3d_file), "--metrics",
                 "fvd3_16f", "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_fvd_equals_the_formula_on_the_clips_it_read(i3d_file, tmp_path):
    """--metrics fvd3_16f: 3 generated clips of 16 frames from t = 0 against the first 3
    videos, one random 16-frame clip each; the score is the Frechet formula on the
    features of exactly those clips."""
    from vidgan.data.synthetic import write_dataset
    from vidgan.metrics.evaluation import (eval_dataset, generated_clips, read_clips,
                                           real_clips)
    _register_tiny_fvd()
    root = write_dataset(tmp_path / "data", per_class=1, n_frames=16, size=64)
    cfg = tiny_config("model.n_frames=8", f"data.root={root}",
                      f"eval.stats_dir={tmp_path / 'stats'}")
    ckpt = save_untrained_checkpoint(cfg, tmp_path / "run")
    record = _fvd3_by_cli(ckpt, i3d_file, tmp_path / "fvd.json")
    assert record["protocol"] == "fvd" and record["clips"] == {
        "fvd3_16f": {"frames": 16, "n_samples": N}}

    from vidgan.metrics.i3d import load_i3d
    i3d, cpu = {"i3d": load_i3d(i3d_file)}, torch.device("cpu")
    G = load_generator(ckpt, "cpu").G  # the EMA weights, as the CLI scores them
    fake = read_clips(generated_clips(G.requires_grad_(False), N, 2, cpu, seed=0, n_frames=16),
                      i3d, ["i3d"], cpu)["i3d"]
    dataset = eval_dataset(cfg, "train", 16)
    real = read_clips(real_clips(dataset, [(k, k) for k in range(N)], 2), i3d, ["i3d"],
                      cpu)["i3d"]
    scores = record["scores"]
    assert scores["fvd3_16f"]["mean"] == pytest.approx(fvd(real, fake), rel=1e-5)
    assert scores["kvd3_16f"]["mean"] == pytest.approx(kvd(real, fake), rel=1e-5)
    assert len(list((tmp_path / "stats").glob("*i3d_16f_first3*.npz"))) == 1  # cached


def test_cli_fvd_scores_the_first_16_frames_of_a_32_frame_vgan(i3d_file, tmp_path):
    """A VGAN checkpoint (32 frames) through the FVD_16 path unchanged: the metric asks for
    16 frames and gets the first 16 of each clip; the score is the formula on those."""
    from vidgan.data.synthetic import write_dataset
    from vidgan.metrics.evaluation import eval_dataset, read_clips, real_clips
    _register_tiny_fvd()
    root = write_dataset(tmp_path / "data", per_class=1, n_frames=32, size=64)
    cfg = tiny_config("model.family=vgan", "model.n_frames=32", "model.z_dim=8", "model.ch=16",
                      "model.dis_ch=2", "loss.r1_weight=0", f"data.root={root}",
                      f"eval.stats_dir={tmp_path / 'stats'}")
    ckpt = save_untrained_checkpoint(cfg, tmp_path / "run")
    record = _fvd3_by_cli(ckpt, i3d_file, tmp_path / "fvd.json")
    assert record["clips"]["fvd3_16f"] == {"frames": 16, "n_samples": N}

    from vidgan.metrics.i3d import load_i3d
    i3d, cpu = {"i3d": load_i3d(i3d_file)}, torch.device("cpu")
    G = load_generator(ckpt, "cpu").G.requires_grad_(False)
    rng = torch.Generator().manual_seed(0)  # generated_clips' draws, seed 0, batches of 2
    z = torch.cat([G.sample_z(2, generator=rng), G.sample_z(1, generator=rng)])
    with torch.no_grad():
        clips = G(z)[:, :, :16].clamp(-1, 1)  # the whole 32-frame clip, cut here
    fake = read_clips(iter([clips]), i3d, ["i3d"], cpu)["i3d"]
    real = read_clips(real_clips(eval_dataset(cfg, "train", 16), [(k, k) for k in range(N)], 2),
                      i3d, ["i3d"], cpu)["i3d"]
    assert record["scores"]["fvd3_16f"]["mean"] == pytest.approx(fvd(real, fake), rel=1e-4)


def _evaluate_fvd(rank, world, port, i3d_file, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from vidgan import distributed
    from vidgan.metrics.evaluation import RealStats, evaluate_generator
    from vidgan.metrics.i3d import load_i3d
    from vidgan.models import build_generator
    _register_tiny_fvd()
    distributed.init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    G = build_generator(tiny_config("model.n_frames=8"))
    real = np.random.default_rng(0).normal(size=(5, 400)).astype(np.float32)
    stats = RealStats({"i3d_16f_first3": {"features": real}})
    scores = evaluate_generator(G, {"i3d": load_i3d(i3d_file)}, metrics=["fvd3_16f"],
                                n_samples=99, batch_size=1, device="cpu", seed=3,
                                real_stats=stats)
    torch.save(scores, Path(out) / f"world{world}_rank{rank}.pt")
    distributed.shutdown()


def test_fvd_on_two_processes_equals_one(i3d_file, tmp_path):
    """3 clips in batches of 1: rank 0 renders clips 0 and 2, rank 1 clip 1; the features come
    back in order and both processes get the FVD and KVD one process gets."""
    for world in (1, 2):
        mp.spawn(_evaluate_fvd, args=(world, free_port(), str(i3d_file), str(tmp_path)),
                 nprocs=world)
    one = torch.load(tmp_path / "world1_rank0.pt")
    assert set(one) == {"fvd3_16f", "kvd3_16f"}
    for rank in (0, 1):
        two = torch.load(tmp_path / f"world2_rank{rank}.pt")
        for name, value in one.items():
            assert two[name] == pytest.approx(value, rel=1e-6), name
