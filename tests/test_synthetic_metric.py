"""The demo's measure (vidgan/metrics/synthetic.py): one coherent moving object per clip, its
class (disc/square x horizontal/vertical), colour spread and motion; and where it plugs in."""
import json
import math

import decord
import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from vidgan.data.synthetic import CLASSES, render_clip, write_dataset
from vidgan.metrics.synthetic import (SyntheticReading, colour_spread, report,
                                      read_synthetic, synthetic_scores)


def _decode(root, n_frames):
    clips, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((root / name).glob("*.mp4")):
            reader = decord.VideoReader(str(path))
            frames = reader.get_batch(list(range(n_frames))).asnumpy()
            clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2))
            labels.append(label)
    return torch.stack(clips), torch.tensor(labels)


def _rendered(labels, n_frames=8, seed=0):
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(render_clip(k, n_frames, 64, rng)).permute(3, 0, 1, 2)
                        for k in labels])


@pytest.mark.parametrize("n_frames", [8, 16])
def test_fresh_real_clips_are_coherent_and_read_right(tmp_path, n_frames):
    root = write_dataset(tmp_path, per_class=24, n_frames=n_frames, size=64, seed=9)
    clips, truth = _decode(root, n_frames)
    reading = read_synthetic(clips)
    assert float(reading.coherent.float().mean()) >= 0.99
    assert float((reading.label == truth).float().mean()) >= 0.99
    # colour: uniform in [140, 255] per channel, std 115 / sqrt(12) = 33.2; speed 4-9% a frame
    spread = colour_spread(reading.colour)
    assert 0.75 * 33.2 <= spread <= 1.25 * 33.2
    assert 0.03 <= float(reading.step.median()) <= 0.09


@pytest.mark.parametrize("corruption", ["noise", "two objects", "frozen", "flickering colour",
                                        "shuffled frames", "empty", "diagonal", "growing"])
def test_corrupted_clips_are_not_coherent(corruption):
    labels = [0, 1, 2, 3] * 3
    clips = _rendered(labels)
    assert bool((read_synthetic(clips).label == torch.tensor(labels)).all())  # intact: read
    g = torch.Generator().manual_seed(0)
    if corruption == "noise":
        clips = torch.randint(0, 256, clips.shape, generator=g, dtype=torch.uint8)
    elif corruption == "two objects":  # the same clips with another clip's object pasted in
        other = _rendered([(k + 1) % 4 for k in labels], seed=1)
        clips = torch.cat([clips, other], -1)
    elif corruption == "frozen":
        clips = clips[:, :, :1].expand_as(clips).clone()
    elif corruption == "flickering colour":  # every other frame with its channels rotated
        odd = (torch.arange(8) % 2 == 1)[None, None, :, None, None]
        clips = torch.where(odd, 255 - clips, clips)
    elif corruption == "shuffled frames":
        clips = clips[:, :, torch.randperm(8, generator=g)]
    elif corruption == "empty":
        clips = clips[:, :, :, :1, :1].expand_as(clips).clone()
    elif corruption == "diagonal":  # also moving across its axis, 4 px a frame
        vertical = (torch.tensor(labels) % 2 == 1)[:, None, None, None]
        across = [torch.where(vertical, torch.roll(clips[:, :, t], 4 * t, dims=-1),
                              torch.roll(clips[:, :, t], 4 * t, dims=-2))[:, :, None]
                  for t in range(8)]
        clips = torch.cat(across, dim=2)
    else:  # the object grows 2 px a frame: the bright object dilated by a growing max-pool
        from torch.nn import functional as F
        clips = torch.stack([F.max_pool2d(clips[:, :, t].float(), 1 + 2 * t, stride=1, padding=t)
                             for t in range(8)], dim=2).to(torch.uint8)
    reading = read_synthetic(clips)
    assert float(reading.coherent.float().mean()) <= 0.1, corruption
    assert bool((reading.label[~reading.coherent] == -1).all())


def _reading(labels, colours=None, steps=None):
    n = len(labels)
    labels = torch.tensor(labels)
    colours = torch.zeros(n, 3) if colours is None else torch.as_tensor(colours, dtype=torch.float32)
    steps = torch.full((n,), 0.05) if steps is None else torch.as_tensor(steps)
    return SyntheticReading(labels >= 0, labels, colours, steps)


def test_scores_on_hand_made_sets():
    every = synthetic_scores(_reading([0, 1, 2, 3] * 5))
    assert every["synthetic_coherent"] == 1.0 and every["synthetic_classes"] == 4
    assert every["synthetic_kl"] == pytest.approx(0, abs=1e-12)
    assert all(every[f"synthetic_share_{name}"] == 0.25 for name in CLASSES)
    discs = synthetic_scores(_reading([0, 1, 0, 1]))  # the squares are gone: KL = log 2
    assert discs["synthetic_classes"] == 2 and discs["synthetic_kl"] == pytest.approx(math.log(2))
    one = synthetic_scores(_reading([3] * 7))
    assert one["synthetic_classes"] == 1 and one["synthetic_kl"] == pytest.approx(math.log(4))
    half = synthetic_scores(_reading([0, 1, 2, 3, -1, -1, -1, -1]))
    assert half["synthetic_coherent"] == 0.5 and half["synthetic_kl"] == pytest.approx(0, abs=1e-12)
    none = synthetic_scores(_reading([-1, -1]))
    assert none["synthetic_coherent"] == 0 and none["synthetic_kl"] == pytest.approx(math.log(4))
    # colour spread: RMS over channels of the per-channel std (unbiased); motion: median step
    colours = [[100, 0, 0], [200, 0, 0], [150, 60, 0], [150, 0, 30]]
    s = synthetic_scores(_reading([0, 1, 2, 3], colours, [0.01, 0.02, 0.03, 0.10]),
                         reference={"synthetic_colour_spread": 20.0, "synthetic_motion": 0.05})
    var = torch.tensor(colours, dtype=torch.float64).var(0)
    assert s["synthetic_colour_spread"] == pytest.approx(float(var.mean().sqrt()))
    assert s["synthetic_motion"] == pytest.approx(0.02)  # torch's median: the lower middle
    assert s["synthetic_colour_ratio"] == pytest.approx(s["synthetic_colour_spread"] / 20.0)
    assert s["synthetic_motion_ratio"] == pytest.approx(0.4)
    # the printout: each score beside the real data's, no verdict
    text = report(s, {"synthetic_coherent": 1.0, "synthetic_motion": 0.05}, "heading")
    line = next(l for l in text.splitlines() if "coherent moving object" in l)
    assert line.split()[-2:] == ["1.00", "1.00"]
    assert next(l for l in text.splitlines() if "typical motion" in l).split()[-2:] == [
        "0.020", "0.050"]
    assert "target" not in text and "MISSED" not in text
    # incoherent clips do not count towards the spread
    more = synthetic_scores(_reading([0, -1], [[0, 0, 0], [255, 255, 255]]))
    assert more["synthetic_colour_spread"] == 0.0


def test_evaluate_cli_scores_a_demo_checkpoint_against_the_real_clips(tmp_path, synthetic_root,
                                                                     capsys):
    from vidgan.checkpoint import list_checkpoints
    from vidgan.evaluate import main
    from vidgan.train import Trainer
    cfg = tiny_config(f"data.root={synthetic_root}", f"train.out_dir={tmp_path / 'run'}",
                      "train.iterations=2", "eval.sample_interval=0", "eval.metrics=[synthetic]",
                      "eval.interval=2", "eval.n_samples=8", "eval.batch_size=8")
    Trainer(cfg).run()
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    out = tmp_path / "scores.json"
    code = main(["--checkpoint", str(ckpt), "--metrics", "synthetic", "--n-samples", "16",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["protocol"] == "synthetic" and record["c3d_weights"] is None
    scores = {k: v["mean"] for k, v in record["scores"].items()}
    assert 0 <= scores["synthetic_coherent"] <= 1 and "synthetic_motion_ratio" in scores
    # the real clips score as the data: all coherent, the ratios 1
    code = main(["--real", "--config", "demo.yaml", "--metrics", "synthetic", "--n-samples", "64",
                 "--device", "cpu", "--out", str(out), f"data.root={synthetic_root}",
                 "data.num_workers=0", "model.n_frames=8"])
    assert code == 0, capsys.readouterr().err
    real = {k: v["mean"] for k, v in json.loads(out.read_text())["scores"].items()}
    assert real["synthetic_coherent"] >= 0.95 and real["synthetic_classes"] == 4
    assert real["synthetic_motion_ratio"] == pytest.approx(1.0, rel=0.3)
    assert real["synthetic_colour_ratio"] == pytest.approx(1.0, rel=0.3)


def test_the_shipped_demo_trains_and_prints_its_scores_beside_the_datas(tmp_path,
                                                                       synthetic_root, capsys):
    """demo.yaml as shipped (conditional, 2D frame head), only shorter: the final model is
    scored and train.py --report prints each score beside the real data's; without
    --report, nothing."""
    from train import main
    from vidgan.config import load_config
    cfg = load_config("demo.yaml")
    assert cfg.model.n_classes == 4 and cfg.model.frame_discriminator == "resnet2d"
    assert "synthetic" in cfg.eval.metrics and cfg.eval.interval > 0
    args = [f"data.root={synthetic_root}", f"train.out_dir={tmp_path / 'run'}",
            "train.iterations=2", "eval.n_samples=8", "eval.batch_size=8",
            "data.num_workers=0", "eval.sample_interval=0"]
    code = main(["--report", *args])
    out = capsys.readouterr().out
    assert code == 0
    assert "What the samples show at step 2 (8 clips" in out
    for label in ("one coherent moving object", "classes present", "KL(classes || uniform)",
                  "colour spread", "typical motion", "share of square_vertical"):
        assert label in out
    coherent = next(l for l in out.splitlines() if "coherent moving object" in l).split()
    assert float(coherent[-1]) >= 0.9  # the real clips' column
    assert "target" not in out and "MISSED" not in out
    assert f"samples: {tmp_path / 'run'}/samples/" in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    (coherent,) = events.Scalars("eval/synthetic_coherent")
    assert coherent.step == 2 and 0.0 <= coherent.value <= 1.0
    code = main([*args, "--overwrite"])  # a run that does not ask for it prints no scores
    assert code == 0 and "What the samples show" not in capsys.readouterr().out
