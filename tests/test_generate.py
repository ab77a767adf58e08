import json

import decord
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_config
from vidgan.checkpoint import rng_state, save_checkpoint
from vidgan.config import to_dict
from vidgan.device import resolve_device
from vidgan.generate import (content_motion_videos, draw_latents, interpolate_videos,
                             memory_slot_latents,
                             interpolation_latents, load_generator, main, render,
                             sample_videos, side_by_side)
from vidgan.models import build_discriminator, build_generator
from vidgan.train.ema import make_ema
from vidgan.video_io import frame_strip

CLASSES = ["jump rope", "run", "walk"]


def _checkpoint(out_dir, *overrides, classes=None):
    """A tiny checkpoint with every key training writes. G_ema's first FC and renderers are
    scaled up, as a stand-in for training: a fresh generator renders near-uniform grey that
    barely depends on z or t, where any two clips or frames look alike and a wrong one would
    pass a PSNR check. It also makes G_ema differ from G."""
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    G_ema = make_ema(G)
    with torch.no_grad():
        G_ema.temporal.fc.weight.mul_(16)
        G_ema.temporal.fc.bias.mul_(16)
        for renderer in G_ema.renderers.values():
            renderer.conv.weight.mul_(4)
    state = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
             "opt_G": torch.optim.Adam(G.parameters()).state_dict(),
             "opt_D": torch.optim.Adam(D.parameters()).state_dict(),
             "step": 7, "config": to_dict(cfg), "rng": rng_state()}
    if classes is not None:
        state["classes"] = classes
    return save_checkpoint(state, out_dir, step=7, keep=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("uncond"))


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("cond"), "model.n_classes=3", classes=CLASSES)


@pytest.fixture(scope="module")
def G(ckpt):
    return load_generator(ckpt, "cpu").G


def decode(path):
    """mp4 -> (uint8 (T, H, W, 3) numpy, fps), through decord, not the library that wrote it."""
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy(), reader.get_avg_fps()


def hwc(video):
    """uint8 (3, T, H, W) tensor -> (T, H, W, 3) numpy."""
    return video.permute(1, 2, 3, 0).numpy()


def luma_psnr(a, b):
    """PSNR of the luma (BT.601). yuv420p halves chroma resolution by design, so a pixel-
    noisy test clip cannot reach 35 dB in RGB however good the encoder; luma is full
    resolution and is where H.264 quality shows."""
    weights = np.array([0.299, 0.587, 0.114])
    mse = (((a.astype(np.float64) - b.astype(np.float64)) @ weights) ** 2).mean()
    return 10 * np.log10(255 ** 2 / mse)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_clips_decode_to_the_frames_meant_and_sidecar(ckpt, G, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--n", 3, "--seed", 5,
                        "--fps", 12, "--batch-size", 2, "--device", "cpu")
    assert code == 0, err
    meant = sample_videos(G, 3, seed=5).videos  # (3, 3, 8, 64, 64)
    files = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert files == ["clip_0000.mp4", "clip_0001.mp4", "clip_0002.mp4"]
    for i, name in enumerate(files):
        frames, fps = decode(tmp_path / name)
        assert frames.shape == (8, 64, 64, 3) and fps == 12
        assert luma_psnr(frames, hwc(meant[i])) > 35
        # the bar tells the right clip from another one, and from a frame shift
        assert luma_psnr(frames, hwc(meant[(i + 1) % 3])) < 35
        assert luma_psnr(frames[1:], hwc(meant[i])[:-1]) < 35
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    assert sidecar["checkpoint"] == str(ckpt.resolve()) and sidecar["step"] == 7
    assert sidecar["seed"] == 5 and sidecar["weights"] == "G_ema"
    assert sidecar["files"] == files and [c["index"] for c in sidecar["clips"]] == [0, 1, 2]
    opts = sidecar["options"]
    assert (opts["n"], opts["fps"], opts["frames"], opts["format"]) == (3, 12, 8, "mp4")
    assert (opts["device"], opts["size"], opts["levels"]) == ("cpu", [64, 64], None)


def test_same_seed_same_frames_other_seed_differs(G):
    a, b, c = (sample_videos(G, 2, seed=s, batch_size=1) for s in (3, 3, 4))
    assert torch.equal(a.z, b.z) and torch.equal(a.videos, b.videos)
    assert not torch.equal(a.z, c.z) and not torch.equal(a.videos, c.videos)
    # z is drawn on the CPU from a seeded torch.Generator, whatever the model's device
    expected = torch.rand(2, G.z_dim, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert torch.equal(draw_latents(G, 2, 3)[0], expected)


def test_no_ema_loads_the_raw_generator(ckpt, tmp_path, capsys):
    state = torch.load(ckpt, weights_only=False)
    raw = load_generator(ckpt, "cpu", use_ema=False)
    assert raw.weights == "G" and not raw.G.training
    for k, v in raw.G.state_dict().items():
        assert torch.equal(v, state["G"][k]), k
    ema = load_generator(ckpt, "cpu")
    assert not torch.equal(sample_videos(raw.G, 1).videos, sample_videos(ema.G, 1).videos)
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--n", 1, "--no-ema")
    assert code == 0, err
    assert json.loads((tmp_path / "clip.json").read_text())["weights"] == "G"


def test_grid_geometry(ckpt, G, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--grid", "2x3",
                        "--seed", 1)
    assert code == 0, err
    frames, _ = decode(tmp_path / "grid.mp4")
    # 2 rows x 3 cols of 64 px with 1 px gaps: 129 x 194, odd height padded to 130 for H.264
    assert frames.shape == (8, 130, 194, 3)
    meant = sample_videos(G, 6, seed=1).videos
    for i in range(6):
        r, c = divmod(i, 3)
        tile = frames[:, r * 65:r * 65 + 64, c * 65:c * 65 + 64]
        assert luma_psnr(tile, hwc(meant[i])) > 35, (r, c)
    sidecar = json.loads((tmp_path / "grid.json").read_text())
    assert sidecar["files"] == ["grid.mp4"] and sidecar["options"]["grid"] == [2, 3]
    assert len(sidecar["clips"]) == 6
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--grid", "2x2",
                        "--n", 3)
    assert code == 2 and err == "error: --grid 2x2 holds 4 clips, not --n 3\n"


def test_levels_side_by_side_match_each_renderer(G):
    videos = sample_videos(G, 2, seed=2, levels=True).videos
    assert G.levels_rendered == [1, 2, 3, 4]
    assert videos.shape == (2, 3, 8, 64, 4 * 65 - 1)
    z, _ = draw_latents(G, 2, 2)
    for index, level in enumerate(G.levels_rendered):
        tile = videos[..., index * 65:index * 65 + 64]
        with torch.no_grad():
            own = G(z, n_frames=8, render_level=level)  # (2, 3, 8, 64 / 2**(4-level), ...)
        factor = 2 ** (4 - level)
        assert own.shape[-1] == 64 // factor
        # nearest upscaling: every factor x factor block is one pixel of the level's render
        blocks = tile.unflatten(-2, (-1, factor)).unflatten(-1, (-1, factor))
        assert (blocks == blocks[..., :1, :, :1]).all()
        assert (blocks[..., 0, :, 0].int() - ((own.clamp(-1, 1) + 1) * 127.5).round()
                ).abs().max() <= 1
    assert (videos[..., 64::65] == 0).all()  # black gaps between levels
    assert torch.equal(videos[..., -64:], sample_videos(G, 2, seed=2).videos)


def test_levels_png_strip(ckpt, G, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--n", 1, "--levels",
                        "--png-strip", "--seed", 6, "--device", "cpu")
    assert code == 0, err
    image = np.asarray(Image.open(tmp_path / "levels_clip_0000.png"))
    assert image.shape == (64, 8 * 260 - 1, 3)  # 8 frames of 259 px, 1 px apart
    meant = frame_strip(sample_videos(G, 1, seed=6, levels=True).videos[0])
    assert np.array_equal(image, meant.permute(1, 2, 0).numpy())  # PNG is lossless
    assert json.loads((tmp_path / "levels_clip.json").read_text())["options"]["levels"] == [
        1, 2, 3, 4]


def test_side_by_side_and_frame_strip_layout():
    a, b = torch.full((1, 3, 2, 2, 2), 10, dtype=torch.uint8), torch.full(
        (1, 3, 2, 2, 2), 20, dtype=torch.uint8)
    row = side_by_side([a, b], pad=1)[0, 0, 0]
    assert row.tolist() == [[10, 10, 0, 20, 20]] * 2
    video = torch.arange(3, dtype=torch.uint8).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    assert frame_strip(video, pad=1)[0].tolist() == [[0, 0, 1, 0, 2]]


def test_frames_longer_than_training(ckpt, G, tmp_path, capsys):
    long = sample_videos(G, 2, seed=0, n_frames=20).videos
    short = sample_videos(G, 2, seed=0).videos
    assert long.shape == (2, 3, 20, 64, 64)
    # the ConvLSTM rolls on: the first T frames are the training-length clip
    assert (long[:, :, :8].int() - short.int()).abs().max() <= 1
    assert not torch.equal(long[:, :, 19], long[:, :, 0])
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--n", 1,
                        "--frames", 20)
    assert code == 0, err
    frames, _ = decode(tmp_path / "clip_0000.mp4")
    assert frames.shape == (20, 64, 64, 3) and luma_psnr(frames, hwc(long[0])) > 35


def test_interpolation_endpoints_are_the_endpoint_clips(ckpt, G, tmp_path, capsys):
    pairs, steps = 2, 5
    path = interpolate_videos(G, pairs, steps, seed=4)
    ends = sample_videos(G, 2 * pairs, seed=4)  # endpoints are clips 2i and 2i+1
    rows = path.videos.unflatten(0, (pairs, steps))
    z_rows = path.z.unflatten(0, (pairs, steps))
    assert torch.equal(z_rows[:, 0], ends.z[0::2]) and torch.equal(z_rows[:, -1], ends.z[1::2])
    assert torch.allclose(z_rows[:, 2], (ends.z[0::2] + ends.z[1::2]) / 2, atol=1e-6)
    assert (rows[:, 0].int() - ends.videos[0::2].int()).abs().max() <= 1
    assert (rows[:, -1].int() - ends.videos[1::2].int()).abs().max() <= 1
    assert not torch.equal(rows[:, 2], rows[:, 0]) and not torch.equal(rows[:, 2], rows[:, -1])
    with pytest.raises(ValueError, match=">= 2 steps"):
        interpolation_latents(G, 1, 1, seed=0)
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--interpolate", steps,
                        "--n", pairs, "--seed", 4)
    assert code == 0, err
    frames, _ = decode(tmp_path / "interpolation.mp4")
    assert frames.shape == (8, 130, 324, 3)  # one row per pair: 129 x 324, height padded
    assert luma_psnr(frames[:, 65:129, -64:], hwc(ends.videos[3])) > 35
    sidecar = json.loads((tmp_path / "interpolation.json").read_text())
    assert sidecar["options"]["interpolate"] == steps and sidecar["options"]["n"] == pairs


def test_conditional_class_names_and_prior(cond_ckpt, tmp_path, capsys):
    model = load_generator(cond_ckpt, "cpu")
    code, err = run_cli(capsys, "--checkpoint", cond_ckpt, "--out", tmp_path / "a", "--n", 2,
                        "--class", 1, "--seed", 3)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a").glob("*.mp4")) == [
        "clip_0000_run.mp4", "clip_0001_run.mp4"]
    clips = json.loads((tmp_path / "a" / "clip.json").read_text())["clips"]
    assert [(c["label"], c["class"]) for c in clips] == [(1, "run"), (1, "run")]
    frames, _ = decode(tmp_path / "a" / "clip_0000_run.mp4")
    run = sample_videos(model.G, 2, seed=3, labels=torch.tensor([1, 1])).videos
    walk = sample_videos(model.G, 2, seed=3, labels=torch.tensor([2, 2])).videos
    assert luma_psnr(frames, hwc(run[0])) > 35 and not torch.equal(run, walk)
    # by name, and every class in turn
    code, err = run_cli(capsys, "--checkpoint", cond_ckpt, "--out", tmp_path / "b", "--n", 1,
                        "--class", "walk")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "b").glob("*.mp4")] == ["clip_0000_walk.mp4"]
    code, err = run_cli(capsys, "--checkpoint", cond_ckpt, "--out", tmp_path / "c", "--n", 1,
                        "--classes", "all")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "c").glob("*.mp4")) == [
        "clip_0000_jump_rope.mp4", "clip_0001_run.mp4", "clip_0002_walk.mp4"]
    # without --class, labels come from the uniform class prior
    _, y = draw_latents(model.G, 300, seed=0)
    assert torch.bincount(y, minlength=3).min() > 70
    for bad, message in (("7", "has classes 0..2"), ("swim", "names: jump rope, run, walk")):
        code, err = run_cli(capsys, "--checkpoint", cond_ckpt, "--out", tmp_path / "d",
                            "--class", bad)
        assert code == 2 and err.startswith("error: --class") and message in err


def test_unconditional_model_rejects_class(ckpt, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--class", 0)
    assert code == 2 and "unconditional" in err and str(ckpt) in err
    assert not list(tmp_path.glob("*.mp4"))


def test_output_that_cannot_be_created(ckpt, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", blocker / "out")
    assert code == 2 and err.startswith(f"error: --out {blocker / 'out'}: cannot create")


def test_gif_output(ckpt, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--n", 1, "--gif",
                        "--fps", 10)
    assert code == 0, err
    gif = Image.open(tmp_path / "clip_0000.gif")
    assert gif.n_frames == 8 and gif.size == (64, 64) and gif.info["duration"] == 100


@pytest.mark.parametrize("damage", ["missing", "truncated", "zeros", "foreign", "int", "tensor",
                                    "crafted"])
def test_bad_checkpoint_is_a_clear_error(ckpt, tmp_path, capsys, damage):
    from tests.test_evaluate import Crafted
    bad = tmp_path / "ckpt.pt"
    if damage == "truncated":
        data = ckpt.read_bytes()
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "zeros":
        bad.write_bytes(bytes(ckpt.stat().st_size))
    elif damage != "missing":
        content = {"foreign": {"weights": torch.zeros(2)}, "int": 3, "tensor": torch.zeros(2),
                   "crafted": Crafted(tmp_path / "ran")}[damage]
        torch.save(content, bad)
    code, err = run_cli(capsys, "--checkpoint", bad, "--out", tmp_path / "out")
    expected = {"missing": "does not exist", "truncated": "could not be read",
                "zeros": "could not be read", "foreign": "lacks G, D",
                "int": "holds a int", "tensor": "holds a Tensor",
                "crafted": "is refused: it holds code"}[damage]
    assert code == 2 and err.startswith(f"error: checkpoint {bad}") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ran").exists()


def test_device_choice(ckpt, tmp_path, capsys):
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path, "--device", "gpu0")
    assert code == 2 and err.startswith("error: device 'gpu0'")


def test_render_refuses_train_mode(G):
    G.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            render(G, *draw_latents(G, 1, 0), n_frames=8)
    finally:
        G.eval()


# ------------------------------------------------------------------ content x motion (MoCoGAN)
# model.init=legacy (Glorot renderers): with seed 0 this untrained generator's six tiles of
# test_content_motion_grid_geometry then differ by > 10 dB; with the LeCun renderers two of
# them come within 22 dB by chance. The test is about the grid's layout, not the init.
GRU = ["model.temporal=gru", "model.content_dim=6", "model.motion_dim=4", "model.init=legacy"]


@pytest.fixture(scope="module")
def gru_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("gru"), *GRU, "model.n_classes=3",
                       classes=CLASSES)


def test_content_motion_grid_geometry(gru_ckpt, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", gru_ckpt, "--out", tmp_path,
                        "--content-motion", "2x3", "--seed", 4, "--frames", 12, "--class", "run")
    assert code == 0, err
    frames, _ = decode(tmp_path / "content_motion.mp4")
    assert frames.shape == (12, 130, 194, 3)  # 2 rows x 3 cols of 64 px, 1 px gaps, padded
    G = load_generator(gru_ckpt, "cpu").G
    meant = content_motion_videos(G, 2, 3, seed=4, n_frames=12, labels=torch.tensor([1, 1]))
    content, motion = G.temporal.split(meant.z)
    # This fixture's frames are pixel noise at full contrast (the GRU's FC feeds the image
    # generator directly, and _checkpoint scales it up), which H.264 keeps to ~30 dB luma;
    # any other tile, same row (other motion) or same column (other content), is under 16 dB.
    for i in range(6):
        r, c = divmod(i, 3)
        tile = frames[:, r * 65:r * 65 + 64, c * 65:c * 65 + 64]
        psnr = [luma_psnr(tile, hwc(v)) for v in meant.videos]
        assert psnr[i] > 25 and max(psnr[:i] + psnr[i + 1:]) < 20, (r, c, psnr)
        assert torch.equal(content[i], content[3 * r]) and torch.equal(motion[i], motion[c])
    assert meant.y.tolist() == [1] * 6
    sidecar = json.loads((tmp_path / "content_motion.json").read_text())
    assert sidecar["files"] == ["content_motion.mp4"]
    assert sidecar["options"]["content_motion"] == [2, 3] and len(sidecar["clips"]) == 6


def test_content_motion_on_a_convlstm_checkpoint_is_a_clear_error(ckpt, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path,
                        "--content-motion", "2x2")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: --content-motion: checkpoint {ckpt} (model.temporal=convlstm)")
    assert "model.temporal=gru" in err and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="ConvLSTMTemporalGenerator"):
        content_motion_videos(load_generator(ckpt, "cpu").G, 2, 2)


def test_gru_clips_longer_than_training(gru_ckpt, tmp_path, capsys):
    code, err = run_cli(capsys, "--checkpoint", gru_ckpt, "--out", tmp_path, "--n", 1,
                        "--frames", 16)
    assert code == 0, err
    frames, _ = decode(next(tmp_path.glob("clip_0000*.mp4")))
    assert frames.shape == (16, 64, 64, 3)


# ------------------------------------------------------------------ memory slots (MCGN)
def test_memory_slots_render_a_row_per_most_probable_slot(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "mem", "model.frame_discriminator=memory",
                       "model.memory.slots=16", "model.memory.key_dim=4",
                       "model.memory.topk=4")
    state = torch.load(ckpt, weights_only=False)
    hist = torch.full((16,), 1e-5)
    hist[[5, 2, 9]] = torch.tensor([3.0, 2.0, 1.0])  # slot 9 is fake (second half): p = 0
    keys = torch.nn.functional.normalize(torch.randn(16, 4), dim=1)
    state["D"]["frame.memory.hist"], state["D"]["frame.memory.keys"] = hist, keys
    torch.save(state, ckpt)
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path / "out",
                        "--memory-slots", 2, "--n", 3, "--seed", 1)
    assert code == 0, err
    frames, _ = decode(tmp_path / "out" / "memory_slots.mp4")
    assert frames.shape == (8, 130, 194, 3)  # 2 slots x 3 clips of 64 px
    model = load_generator(ckpt, "cpu")
    assert torch.equal(model.G.memory.hist, hist)  # the memory stored with D
    z, top = memory_slot_latents(model.G, 2, 3, seed=1)
    assert top.tolist() == [5, 2]  # by p(c) = h v / sum h v
    torch.testing.assert_close(model.G.memory_condition(z), keys[[5, 5, 5, 2, 2, 2]])
    assert json.loads((tmp_path / "out" / "memory_slots.json").read_text())[
        "options"]["memory_slots"] == 2
    code, err = run_cli(capsys, "--checkpoint", ckpt, "--out", tmp_path / "o2",
                        "--memory-slots", 9)  # slots 0-7 are real (p > 0), 8-15 fake
    assert code == 2 and "real slots" in err
    ckpt_plain = _checkpoint(tmp_path / "plain")
    code, err = run_cli(capsys, "--checkpoint", ckpt_plain, "--out", tmp_path / "o3",
                        "--memory-slots", 2)
    assert code == 2 and "not memory-conditional" in err
