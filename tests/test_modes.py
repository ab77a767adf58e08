"""The mode-coverage benchmark: the modes dataset (vidgan/data/modes.py), its analytic
classifier and scores (vidgan/metrics/modes.py), and where they plug in (evaluate, training)."""
import json
import math

import decord
import numpy as np
import pytest
import torch

from tests.conftest import widths_for
from vidgan.config import load_config
from vidgan.data.modes import (COLOURS, DIRECTIONS, N_MODES, SHAPES, dataset_clips, mode_factors,
                               mode_id, mode_name, render_clip, write_dataset)
from vidgan.metrics.modes import (FACTORS, REASON_KEYS, REASONS, ModePredictions, classify_modes,
                                  mode_scores)


def _decode_all(root):
    """Every clip of a written modes dataset, decoded by decord, with its recorded mode."""
    record = json.loads((root / "modes.json").read_text())
    clips, modes = [], []
    for rel, mode in sorted(record["files"].items()):
        reader = decord.VideoReader(str(root / rel))
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()
        clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2))
        modes.append(mode)
    return torch.stack(clips), torch.tensor(modes)


@pytest.fixture(scope="session")
def modes_root(tmp_path_factory):
    """One clip per mode at 32 px, the size the modes configs train at."""
    return write_dataset(tmp_path_factory.mktemp("modes32"), per_mode=1, n_frames=16, size=32)


def test_mode_ids_and_names():
    assert N_MODES == len(SHAPES) * len(COLOURS) * len(DIRECTIONS) == 128
    assert sorted(mode_id(*mode_factors(m)) for m in range(N_MODES)) == list(range(N_MODES))
    names = [mode_name(m) for m in range(N_MODES)]
    assert names == sorted(names) and names[0] == "000_disc_red_right"


def test_the_writer_is_deterministic_for_a_seed(tmp_path):
    def rendered(seed):
        return [(rel, mode, clip) for rel, mode, clip in dataset_clips(1, 16, 32, seed)]
    a, b, c = rendered(3), rendered(3), rendered(4)
    assert [x[:2] for x in a] == [x[:2] for x in b] and all(
        np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[2], y[2]) for x, y in zip(a, c))
    # balanced: one clip of every mode, in mode order
    assert [mode for _, mode, _ in a] == list(range(N_MODES))
    # what lands on disk: those clips (up to x264's noise) and their modes
    root = write_dataset(tmp_path / "a", per_mode=1, n_frames=16, size=32, seed=3)
    clips, modes = _decode_all(root)
    assert modes.tolist() == list(range(N_MODES)) and clips.shape == (N_MODES, 3, 16, 32, 32)
    exact = torch.stack([torch.from_numpy(x[2]).permute(3, 0, 1, 2) for x in a])
    assert float((clips.float() - exact.float()).abs().mean()) < 5.0


@pytest.mark.parametrize("size, per_mode", [(32, 2), (64, 1)])
def test_the_classifier_reads_fresh_real_clips_of_every_mode(tmp_path, size, per_mode):
    root = write_dataset(tmp_path, per_mode=per_mode, n_frames=16, size=size, seed=11)
    clips, truth = _decode_all(root)
    predicted = classify_modes(clips)
    correct = predicted.mode == truth
    assert float(correct.float().mean()) >= 0.99, predicted.reason_counts()
    assert len(torch.unique(truth[correct])) >= N_MODES - 1  # every mode (one slip allowed)


def _rendered(modes, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(render_clip(m, 16, size, rng)).permute(3, 0, 1, 2)
                        for m in modes])


def _corrupted(clips, corruption, modes):
    """``clips`` of ``modes`` (rendered at 32 px) broken the way ``corruption`` names."""
    g = torch.Generator().manual_seed(0)
    if corruption == "noise":
        return torch.randint(0, 256, clips.shape, generator=g, dtype=torch.uint8)
    if corruption == "two objects":  # two clips side by side in a 32 x 64 frame
        return torch.cat([clips, _rendered([(m + 37) % N_MODES for m in modes], seed=1)], -1)
    if corruption == "frozen":
        return clips[:, :, :1].expand_as(clips).clone()
    if corruption == "flickering colour":  # every other frame with its channels rotated
        odd = (torch.arange(16) % 2 == 1)[None, None, :, None, None]
        return torch.where(odd, clips[:, [1, 2, 0]], clips)
    if corruption == "shuffled frames":
        return clips[:, :, torch.randperm(16, generator=g)]
    assert corruption == "empty"
    return clips[:, :, :, :1, :1].expand_as(clips).clone()


@pytest.mark.parametrize("corruption, reasons", [
    ("noise", {"not one object"}),
    ("two objects", {"not one object"}),
    ("frozen", {"still"}),
    ("flickering colour", {"colour changes", "off palette"}),
    ("shuffled frames", {"still", "not a straight line"}),
    ("empty", {"no object"}),
])
def test_corrupted_clips_are_invalid(corruption, reasons):
    modes = list(range(0, N_MODES, 9))
    clips = _rendered(modes)
    assert bool((classify_modes(clips).mode == torch.tensor(modes)).all())  # intact: read
    predicted = classify_modes(_corrupted(clips, corruption, modes))
    assert bool((predicted.mode == -1).all())
    assert {REASONS[r] for r in predicted.reason.tolist()} <= reasons, predicted.reason_counts()


@pytest.mark.parametrize("corruption, lost", [("flickering colour", "colour"),
                                              ("frozen", "direction")])
def test_each_factor_is_read_on_its_own(corruption, lost):
    """A clip that fails one factor's test still shows the other two factors."""
    modes = list(range(0, N_MODES, 5))
    predicted = classify_modes(_corrupted(_rendered(modes), corruption, modes))
    assert bool((predicted.mode == -1).all())
    truth = dict(zip(("shape", "colour", "direction"), mode_factors(torch.tensor(modes))))
    for name, values in truth.items():
        read = getattr(predicted, name)
        if name == lost:
            assert bool((read == -1).all()), (name, read)
        else:
            assert float((read == values).float().mean()) >= 0.95, (name, read, values)
    scores = mode_scores(predicted.mode, factors=predicted)
    assert scores[f"modes_{lost}_read"] == 0.0 and scores["modes_valid"] == 0.0
    kept = "shape" if lost != "shape" else "colour"
    assert scores[f"modes_{kept}_read"] >= 0.95


def test_factor_scores_on_hand_made_sets():
    def predictions(shape, colour, direction):
        shape, colour, direction = (torch.tensor(x) for x in (shape, colour, direction))
        return ModePredictions(torch.full_like(shape, -1), shape, colour, direction,
                               torch.zeros_like(shape))
    # every value once: all covered, KL 0; a factor read in half the clips
    every = mode_scores(torch.full((8,), -1), factors=predictions(
        [0, 1, 2, 3, 0, 1, 2, 3], list(range(8)), [0, 1, 2, 3, -1, -1, -1, -1]))
    assert (every["modes_shape_covered"], every["modes_colour_covered"],
            every["modes_direction_covered"]) == (4, 8, 4)
    assert every["modes_shape_kl"] == pytest.approx(0, abs=1e-12)
    assert every["modes_colour_kl"] == pytest.approx(0, abs=1e-12)
    assert every["modes_direction_read"] == 0.5 and every["modes_shape_read"] == 1.0
    # one shape only: KL log 4; 3:1 over two colours: sum p log(p K); no direction read
    skew = mode_scores(torch.full((4,), -1), factors=predictions(
        [1, 1, 1, 1], [2, 2, 2, 5], [-1, -1, -1, -1]))
    assert skew["modes_shape_covered"] == 1 and skew["modes_shape_kl"] == pytest.approx(
        math.log(4))
    assert skew["modes_colour_kl"] == pytest.approx(0.75 * math.log(0.75 * 8) +
                                                    0.25 * math.log(0.25 * 8))
    assert skew["modes_direction_read"] == 0.0 and skew["modes_direction_covered"] == 0
    assert skew["modes_direction_kl"] == pytest.approx(math.log(4))


def test_scores_on_hand_made_sets():
    every = mode_scores(torch.arange(N_MODES))
    assert every["modes_covered"] == N_MODES and every["modes_kl"] == pytest.approx(0, abs=1e-12)
    assert every["modes_valid"] == 1.0
    assert (every["modes_shapes"], every["modes_colours"], every["modes_directions"]) == (4, 8, 4)
    one = mode_scores(torch.full((50,), mode_id(2, 5, 1)))
    assert one["modes_covered"] == 1 and one["modes_kl"] == pytest.approx(math.log(N_MODES))
    assert (one["modes_shapes"], one["modes_colours"], one["modes_directions"]) == (1, 1, 1)
    half = mode_scores(torch.cat([torch.arange(N_MODES), torch.full((N_MODES,), -1)]))
    assert half["modes_valid"] == 0.5 and half["modes_kl"] == pytest.approx(0, abs=1e-12)
    # KL(p || uniform) = sum p log(p K): two modes, 3:1
    skew = mode_scores(torch.tensor([0, 0, 0, 1]))
    assert skew["modes_kl"] == pytest.approx(0.75 * math.log(0.75 * 128) + 0.25 * math.log(32))
    none = mode_scores(torch.full((4,), -1))
    assert none["modes_valid"] == 0 and none["modes_kl"] == pytest.approx(math.log(N_MODES))
    # with the reasons: the share of clips each test turned away
    why = mode_scores(torch.tensor([3, -1, -1, -1]), reason=torch.tensor([0, 1, 1, 6]))
    assert why["modes_invalid_no_object"] == 0.5 and why["modes_invalid_still"] == 0.25
    assert why["modes_invalid_off_palette"] == 0.0


# ------------------------------------------------------------------ configs, training, CLI
MODES_CONFIGS = ["modes_st4", "modes_3d2d", "modes_memory", "modes_mocogan"]


def _modes_config(name, root, out, *extra):
    tiny = [o for o in widths_for(name)
            if not o.startswith(("model.n_frames", "model.resolution"))]
    return load_config(name, tiny + [f"data.root={root}", f"train.out_dir={out}",
                                     "eval.sample_interval=0", "eval.n_samples=8",
                                     "eval.batch_size=8", *extra])


@pytest.mark.parametrize("name", MODES_CONFIGS)
def test_modes_configs_train_three_iterations_and_log_the_scores(tmp_path, modes_root, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidgan.train import Trainer
    cfg = _modes_config(name, modes_root, tmp_path / "run", "train.iterations=3",
                        "eval.interval=3")
    assert cfg.data.dataset == "modes" and cfg.model.n_frames == 16
    assert cfg.model.resolution == 32  # as shipped
    trainer = Trainer(cfg)
    assert len(trainer.dataset) == N_MODES and "c3d" not in trainer.classifiers
    trainer.run()
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"eval/modes_{k}" for k in ("covered", "kl", "valid", "shapes", "colours",
                                        "directions", "shape_read", "colour_kl",
                                        "direction_covered")} <= tags
    (valid,) = events.Scalars("eval/modes_valid")
    assert valid.step == 3 and 0.0 <= valid.value <= 1.0


def test_evaluate_cli_scores_a_checkpoint_and_real_clips(tmp_path, modes_root, capsys):
    from vidgan.checkpoint import list_checkpoints
    from vidgan.evaluate import main
    from vidgan.train import Trainer
    Trainer(_modes_config("modes_st4", modes_root, tmp_path / "run", "train.iterations=1")).run()
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    out = tmp_path / "scores.json"
    code = main(["--checkpoint", str(ckpt), "--metrics", "modes", "--n-samples", "16",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert record["protocol"] == "modes" and record["c3d_weights"] is None
    assert set(record["scores"]) == {"modes_covered", "modes_kl", "modes_valid", "modes_shapes",
                                     "modes_colours", "modes_directions"} | {
        f"modes_invalid_{k}" for k in REASON_KEYS[1:]} | {
        f"modes_{name}_{s}" for name, _ in FACTORS for s in ("read", "covered", "kl")}
    shares = [record["scores"][f"modes_invalid_{k}"]["mean"] for k in REASON_KEYS[1:]]
    assert sum(shares) + record["scores"]["modes_valid"]["mean"] == pytest.approx(1.0)
    # real clips of the data: every clip valid, and 128 draws cover most modes
    code = main(["--real", "--config", "modes_st4", "--metrics", "modes", "--n-samples", "128",
                 "--device", "cpu", "--out", str(out), f"data.root={modes_root}",
                 "data.num_workers=0"])
    assert code == 0, capsys.readouterr().err
    scores = json.loads(out.read_text())["scores"]
    assert scores["modes_valid"]["mean"] >= 0.99 and scores["modes_covered"]["mean"] >= 70
    for name, k in FACTORS:  # every factor reads, and 128 draws show all its values
        assert scores[f"modes_{name}_read"]["mean"] >= 0.99
        assert scores[f"modes_{name}_covered"]["mean"] == k


def test_clip_motion_reads_spread_and_change_as_defined():
    """bench_modes' motion read: the std across clips per pixel and the mean absolute change
    from the previous frame, split at frame 3; and the real clips' reference is small motion."""
    from benchmarks.bench_modes import clip_motion, real_motion
    t = torch.arange(16, dtype=torch.float64)
    ramp = (3.0 * t).view(1, 1, 16, 1, 1).expand(2, 3, 16, 4, 4).clone()
    ramp[:, :, 3:] = ramp[:, :, 3:3 + 1]  # frames 4-16 hold frame 4: no change after it
    ramp[1] += 10.0  # the second clip 10 grey levels above the first everywhere
    stats = clip_motion(ramp)
    std_of_pair = 10.0 / math.sqrt(2)  # unbiased std of {x, x + 10}
    assert stats["spread_early"] == pytest.approx(std_of_pair)
    assert stats["spread_late"] == pytest.approx(std_of_pair)
    assert stats["change_early"] == pytest.approx(3.0)  # frames 2-3 change by 3
    assert stats["change_late"] == pytest.approx(3.0 / 13)  # frame 4 by 3, then 0
    assert len(stats["change_curve"]) == 15 and len(stats["spread_curve"]) == 16
    real = real_motion("modes_st4", n=32)
    assert 0.5 < real["change_late"] < 5.0 < real["spread_late"]  # objects move a pixel or two
