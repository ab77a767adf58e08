"""The evaluation protocols and CLI (docs/FIDELITY.md, Evaluation) on a tiny generator, a
random-weight C3D with the real architecture, and a 16-frame synthetic dataset. Sample counts
are tiny."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.conftest import save_untrained_checkpoint, tiny_config
from vidgan.config import to_dict
from vidgan.evaluate import main
from vidgan.metrics.evaluation import (eval_dataset, evaluate_generator, generated_clips,
                                       load_real_stats, read_clips, real_clips)
from vidgan.metrics import inception_score, load_c3d, mean_cov
from vidgan.models import build_generator


@pytest.fixture(scope="session")
def c3d(c3d_pt):
    return load_c3d(c3d_pt)


@pytest.fixture(scope="session")
def root16(tmp_path_factory):
    """Synthetic videos with the 16 frames C3D needs (one per class)."""
    from vidgan.data.synthetic import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synthetic16"), per_class=1, n_frames=16,
                         size=64)


@pytest.fixture(scope="session")
def cfg(root16, tmp_path_factory):
    # model.n_frames=8: the generator trains on 8 frames but is evaluated on 16
    return tiny_config("model.n_frames=8", f"data.root={root16}",
                       f"eval.stats_dir={tmp_path_factory.mktemp('stats')}")


@pytest.fixture(scope="session")
def checkpoint(cfg, tmp_path_factory):
    return save_untrained_checkpoint(cfg, tmp_path_factory.mktemp("run"))


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("n_classes", [0, 4])
def test_generated_clips_are_16_frames_clipped_and_reproducible(n_classes):
    G = build_generator(tiny_config("model.n_frames=8", f"model.n_classes={n_classes}"))
    assert G.training
    batches = list(generated_clips(G, 3, 2, torch.device("cpu"), seed=1))
    assert [b.shape for b in batches] == [(2, 3, 16, 64, 64), (1, 3, 16, 64, 64)]
    assert all(b.abs().max() <= 1 for b in batches)
    assert G.training  # mode restored
    again = torch.cat(list(generated_clips(G, 3, 2, torch.device("cpu"), seed=1)))
    other = torch.cat(list(generated_clips(G, 3, 2, torch.device("cpu"), seed=2)))
    assert torch.equal(torch.cat(batches), again) and not torch.equal(again, other)


def test_evaluate_generator_is_equals_the_score_of_its_clips(cfg, c3d):
    G = build_generator(cfg)
    scores = evaluate_generator(G, c3d, metrics=["is"], n_samples=2, batch_size=2,
                                device="cpu", seed=3)
    clips = torch.cat(list(generated_clips(G, 2, 2, torch.device("cpu"), seed=3)))
    with torch.inference_mode():
        probs = F.softmax(c3d(clips), dim=1).double().numpy()
    assert set(scores) == {"is"}
    assert scores["is"] == pytest.approx(inception_score(probs)[0], rel=1e-12)
    assert 1.0 <= scores["is"] <= 2.0  # 2 samples: IS is at most 2


def _numpy_scores(features, logits, mu, cov, test_logits):
    """IS, FID and DDM as vidgan 0.1 first computed them: float64 numpy on the CPU
    (FID through the N x N matrix A cov A^T / (N-1), DDM by the log-sum-exp of Eq. 3.4)."""
    f = np.asarray(features, dtype=np.float64)
    probs = F.softmax(torch.from_numpy(np.asarray(logits)), dim=1).double().numpy() + 1e-20
    is_ = np.exp((probs * (np.log(probs) - np.log(probs.mean(0, keepdims=True)))).sum(1).mean())
    n, a = len(f), f - f.mean(0)
    w = np.linalg.eigvalsh(a @ cov @ a.T / (n - 1))
    w = np.where(w > max(w.max(), 0) * len(w) * np.finfo(np.float64).eps, w, 0.0)
    fid = ((mu - f.mean(0)) ** 2).sum() + np.trace(cov) + (a * a).sum() / (n - 1) \
        - 2 * np.sqrt(w).sum()
    t, g = np.asarray(test_logits, np.float64), np.asarray(logits, np.float64)
    d = -((t[:, None] - g[None]) ** 2).sum(-1) / 2
    top = d.max(1, keepdims=True)
    ddm_ = -(np.log(np.exp(d - top).mean(1)) + top[:, 0]).mean()
    return {"is": is_, "fid": fid, "ddm": ddm_}


def test_scores_equal_the_numpy_implementation(cfg, c3d):
    """The statistics moved to torch on the features' device: same numbers."""
    from vidgan.metrics.evaluation import RealStats
    G = build_generator(cfg)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(12, 4096)) * rng.uniform(0.1, 2.0, 4096)
    mu, cov = mean_cov(real)
    stats = RealStats(mu=mu, cov=cov, test_logits=rng.normal(size=(5, 101)).astype(np.float32))
    scores = evaluate_generator(G, c3d, metrics=["is", "fid", "ddm"], n_samples=6,
                                batch_size=3, device="cpu", seed=4, real_stats=stats)
    clips = list(generated_clips(G, 6, 3, torch.device("cpu"), seed=4))
    with torch.inference_mode():
        features, logits = zip(*(c3d.extract(x) for x in clips))
    expected = _numpy_scores(torch.cat(features).numpy(), torch.cat(logits).numpy(), mu, cov,
                             stats.test_logits)
    for name in ("is", "fid", "ddm"):
        assert scores[name] == pytest.approx(expected[name], rel=1e-9), name
    np.testing.assert_allclose(mean_cov(torch.from_numpy(real))[1], np.cov(real.T), rtol=1e-9)


def test_fid_and_ddm_need_real_statistics(cfg, c3d):
    with pytest.raises(ValueError, match="load_real_stats"):
        evaluate_generator(build_generator(cfg), c3d, metrics=["is", "fid"], n_samples=2,
                           batch_size=2, device="cpu", seed=0)


# ------------------------------------------------------------------ real statistics
def test_real_stats_are_computed_once_then_read_from_the_cache(cfg, c3d):
    stats = load_real_stats(cfg, c3d, ["fid", "ddm"], device="cpu", batch_size=2, n_clips=2)
    assert stats.mu.shape == (4096,) and stats.cov.shape == (4096, 4096)
    assert stats.test_logits.shape == (2, 101)
    files = sorted(Path(cfg.eval.stats_dir).glob("*.npz"))  # (beside the writers' lock file)
    assert len(files) == 2  # one per split, keyed by a hash
    mtimes = [p.stat().st_mtime_ns for p in files]

    again = load_real_stats(cfg, c3d, ["fid", "ddm"], device="cpu", batch_size=2, n_clips=2)
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert np.array_equal(again.mu, stats.mu) and np.array_equal(again.cov, stats.cov)

    # the cached statistics are those of one clip per video (clip seed = position)
    features, _ = read_clips(real_clips(eval_dataset(cfg, "train"), [(0, 0), (1, 1)], 2),
                             {"c3d": c3d}, ["c3d"], torch.device("cpu"))["c3d"]
    mu, cov = mean_cov(features)
    np.testing.assert_allclose(stats.mu, mu, rtol=1e-6)
    np.testing.assert_allclose(stats.cov, cov, rtol=1e-5, atol=1e-6 * np.abs(cov).max())

    assert load_real_stats(cfg, c3d, ["is"], device="cpu") is None


# ------------------------------------------------------------------ CLI
def test_cli_end_to_end_writes_json_next_to_the_checkpoint(checkpoint, c3d_pt, capsys):
    code = main(["--checkpoint", str(checkpoint), "--c3d-weights", str(c3d_pt),
                 "--metrics", "is,fid,ddm", "--n-samples", "2", "--repeats", "2",
                 "--stats-clips", "2", "--batch-size", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    out = checkpoint.with_name(f"{checkpoint.stem}_eval_tgan2.json")
    record = json.loads(out.read_text())
    assert record["step"] == 5 and record["weights"] == "G_ema"
    assert (record["protocol"], record["n_samples"], record["repeats"], record["splits"]) == \
        ("tgan2", 2, 2, 1)
    assert set(record["scores"]) == {"is", "fid", "ddm"}
    for name, s in record["scores"].items():
        assert len(s["values"]) == 2 and all(np.isfinite(s["values"]))
        assert s["mean"] == pytest.approx(np.mean(s["values"]))
        assert s["std"] == pytest.approx(np.std(s["values"]))  # over repeats, ddof 0
    assert all(1.0 <= v <= 2.0 for v in record["scores"]["is"]["values"])
    assert all(v > 0 for v in record["scores"]["fid"]["values"])
    assert record["scores"]["is"]["values"][0] != record["scores"]["is"]["values"][1]  # fresh


def test_cli_scores_real_clips(root16, c3d_pt, tmp_path):
    out = tmp_path / "real.json"
    code = main(["--real", "--config", "demo.yaml", "--c3d-weights", str(c3d_pt),
                 "--metrics", "is", "--n-samples", "2", "--repeats", "1", "--batch-size", "2",
                 "--device", "cpu", "--out", str(out), f"data.root={root16}",
                 "model.n_frames=16", "data.num_workers=0", f"eval.stats_dir={tmp_path}"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["source"] == "real" and record["split"] == "train"
    assert 1.0 <= record["scores"]["is"]["mean"] <= 2.0


@pytest.mark.parametrize("args, fragment", [
    (["--c3d-weights", "{tmp}/missing.npz", "--c3d-mean", "{tmp}/mean2.npz"], "missing.npz"),
    (["--c3d-weights", "{pt}", "--metrics", "is,kid"], "unknown ['kid']; known metrics: ddm"),
    (["--c3d-weights", "{pt}", "--n-samples", "0"], "--n-samples=0"),
])
def test_cli_bad_input_is_one_line_and_exit_2(checkpoint, c3d_pt, tmp_path, capsys, args,
                                              fragment):
    args = [a.format(tmp=tmp_path, pt=c3d_pt) for a in args]
    code = main(["--checkpoint", str(checkpoint), "--device", "cpu"] + args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"), (3, "holds a int, not a vidgan checkpoint"),
    (torch.zeros(2), "holds a Tensor, not a vidgan checkpoint"),
    ("crafted", "is refused: it holds code")])
def test_cli_a_checkpoint_that_is_not_one_is_exit_2(tmp_path, c3d_pt, capsys, content,
                                                    fragment):
    path = tmp_path / "ckpt.pt"
    if content == "crafted":
        content = Crafted(tmp_path / "ran")
    if content is not None:
        torch.save(content, path)
    code = main(["--checkpoint", str(path), "--c3d-weights", str(c3d_pt)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: checkpoint {path}") and fragment in err
    assert err.count("\n") == 1 and not (tmp_path / "ran").exists()


class Crafted:
    """A pickle that creates a directory when unpickled: loading it must run nothing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.mkdir, (self.marker,))


def test_in_training_evaluation_logs_scores(cfg, c3d_pt, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidgan.config import config_from_dict
    from vidgan.train import Trainer

    data = to_dict(cfg)
    data["train"].update(iterations=2, out_dir=str(tmp_path / "run"), checkpoint_interval=100)
    data["eval"].update(c3d_weights=str(c3d_pt), interval=2, n_samples=4, batch_size=4,
                        metrics=["is", "fid"])
    trainer = Trainer(config_from_dict(data))
    trainer.run()
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert {"eval/is", "eval/fid"} <= set(events.Tags()["scalars"])
    (is_event,) = events.Scalars("eval/is")
    assert is_event.step == 2 and 1.0 <= is_event.value <= 101.0
    # the logged IS is the score of the EMA generator's clips for seed train.seed + step
    again = evaluate_generator(trainer.G_ema, trainer.classifiers, metrics=["is"], n_samples=4,
                               batch_size=4, device="cpu", seed=cfg.train.seed + 2)
    assert again["is"] == pytest.approx(is_event.value, rel=1e-5)


def test_training_without_c3d_weights_warns_once(cfg, tmp_path, capsys):
    from vidgan.config import config_from_dict
    from vidgan.train import Trainer

    data = to_dict(cfg)
    data["train"].update(out_dir=str(tmp_path / "run"))
    trainer = Trainer(config_from_dict(data))
    assert "c3d" not in trainer.classifiers
    assert capsys.readouterr().out.count("eval.c3d_weights is not set") == 1


def test_training_with_a_missing_c3d_file_fails_at_start(cfg, tmp_path):
    from vidgan.config import config_from_dict
    from vidgan.train import Trainer

    data = to_dict(cfg)
    data["eval"].update(c3d_weights=str(tmp_path / "nope.pt"))
    data["train"].update(out_dir=str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        Trainer(config_from_dict(data))
