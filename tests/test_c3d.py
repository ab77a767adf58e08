"""C3D as the official TGANv2 evaluation runs it (docs/FIDELITY.md, Evaluation): layout of the
release npz, preprocessing, shapes, npz -> .pt conversion and loader errors. Random weights,
real layout."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from data_prep.convert_c3d import main as convert_main
from vidgan.metrics import C3D, load_c3d
from vidgan.metrics.c3d import load_mean_offset

# The release file's keys and shapes, written out here independently of vidgan.metrics.c3d.
CONV_WIDTHS = [("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256),
               ("conv3b", 256, 256), ("conv4a", 256, 512), ("conv4b", 512, 512),
               ("conv5a", 512, 512), ("conv5b", 512, 512)]
FC_WIDTHS = [("fc6", 8192, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 101)]


def release_arrays(seed=0):
    """Random float32 weights in the Chainer npz layout; He-normal so logits vary with x."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, c_in, c_out in CONV_WIDTHS:
        arrays[f"{name}/W"] = (rng.standard_normal((c_out, c_in, 3, 3, 3), dtype=np.float32)
                               * np.float32(np.sqrt(2 / (27 * c_in))))
        arrays[f"{name}/b"] = rng.normal(0, 0.01, c_out).astype(np.float32)
    for name, n_in, n_out in FC_WIDTHS:
        arrays[f"{name}/W"] = (rng.standard_normal((n_out, n_in), dtype=np.float32)
                               * np.float32(np.sqrt(2 / n_in)))
        arrays[f"{name}/b"] = rng.normal(0, 0.01, n_out).astype(np.float32)
    return arrays


@pytest.fixture(scope="session")
def release_files(tmp_path_factory):
    """(weights npz, mean npz) shaped like conv3d_deepnetA_ucf.npz and mean2.npz."""
    d = tmp_path_factory.mktemp("c3d_release")
    weights, mean = d / "conv3d_deepnetA_ucf.npz", d / "mean2.npz"
    np.savez(weights, **release_arrays())
    rng = np.random.default_rng(1)
    np.savez(mean, mean=rng.uniform(80, 120, (3, 16, 128, 171)).astype(np.float32))
    return weights, mean


def clips(n, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, size, size, generator=g) * 2 - 1


def align_corners_matrix(n_in, n_out):
    """Bilinear resize as a matrix, align_corners=True: output i samples input i (n_in-1)/(n_out-1)
    (Chainer resize_images)."""
    pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def reference_logits(arrays, mean, x):
    """The official forward pass (docs/FIDELITY.md, Evaluation) with the npz arrays directly."""
    x = x.double().clamp(-1, 1)[:, [2, 1, 0]] * 128  # BGR, x128
    r_h = torch.from_numpy(align_corners_matrix(x.shape[-2], 112))
    r_w = torch.from_numpy(align_corners_matrix(x.shape[-1], 112))
    x = torch.einsum("ih,ncthw,jw->nctij", r_h, x, r_w)  # every frame resized to 112x112
    x = x + torch.from_numpy(128.0 - mean[:, :, 8:120, 8:120].astype(np.float64))
    h = x.float()
    for name, _, _ in CONV_WIDTHS:
        h = F.relu(F.conv3d(h, torch.from_numpy(arrays[f"{name}/W"]),
                            torch.from_numpy(arrays[f"{name}/b"]), padding=1))
        if name == "conv1a":
            h = F.max_pool3d(h, (1, 2, 2), ceil_mode=True)
        elif name in ("conv2a", "conv3b", "conv4b", "conv5b"):
            h = F.max_pool3d(h, 2, ceil_mode=True)
    h = h.reshape(len(h), -1)
    for name, _, _ in FC_WIDTHS:
        h = F.linear(h, torch.from_numpy(arrays[f"{name}/W"]), torch.from_numpy(arrays[f"{name}/b"]))
        if name != "fc8":
            h = F.relu(h)
    return h


# ------------------------------------------------------------------ architecture
def test_shapes_through_every_layer():
    model = C3D().eval()
    seen = {}
    for group in (model.convs, model.pools, model.fcs):
        for name, module in group.items():
            key = name if group is not model.pools else f"pool:{name}"
            module.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.shape))
    with torch.inference_mode():
        model(clips(1, size=64))
    assert seen["conv1a"] == (1, 64, 16, 112, 112)
    assert seen["pool:conv1a"] == (1, 64, 16, 56, 56)  # pool1 is (1, 2, 2)
    assert seen["pool:conv2a"] == (1, 128, 8, 28, 28)
    assert seen["pool:conv3b"] == (1, 256, 4, 14, 14)
    assert seen["pool:conv4b"] == (1, 512, 2, 7, 7)
    assert seen["pool:conv5b"] == (1, 512, 1, 4, 4)  # ceil mode (Chainer cover_all): 7 -> 4
    assert seen["fc6"] == (1, 4096) and seen["fc7"] == (1, 4096) and seen["fc8"] == (1, 101)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(78.4e6, rel=0.01)


def test_rejects_clips_that_are_not_16_frames():
    with pytest.raises(ValueError, match=r"\(N, 3, 16, H, W\)"):
        C3D().preprocess(torch.zeros(1, 3, 8, 112, 112))


# ------------------------------------------------------------------ preprocessing
def test_preprocess_scale_bgr_and_clip():
    model = C3D()
    model.mean_offset.fill_(128.0)  # a zero mean: what comes out is the scaled BGR clip
    x = torch.empty(1, 3, 16, 112, 112)
    x[:, 0], x[:, 1], x[:, 2] = 1.0, 0.0, -1.0  # R = +1, G = 0, B = -1
    out = model.preprocess(x)
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))  # B first: -1 -> 0
    assert torch.equal(out[:, 1], torch.full_like(out[:, 1], 128.0))
    assert torch.equal(out[:, 2], torch.full_like(out[:, 2], 256.0))  # R last: +1 -> 256
    assert torch.equal(model.preprocess(x * 3), out)  # clipped to [-1, 1] first


def test_preprocess_resize_is_align_corners_bilinear():
    model = C3D()
    model.mean_offset.fill_(128.0)  # a zero mean
    x = clips(1, size=40)
    expected = torch.einsum("ih,ncthw,jw->nctij", torch.from_numpy(align_corners_matrix(40, 112)),
                            (x.double()[:, [2, 1, 0]] + 1) * 128,
                            torch.from_numpy(align_corners_matrix(40, 112)))
    torch.testing.assert_close(model.preprocess(x).double(), expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("width", [171, 120, 200])
def test_mean_is_sliced_8_to_120_whatever_its_width(tmp_path, width):
    # value = 1000 c + 10 row + col/1000 identifies channel, frame-independent row and col
    c, t, r, w = np.meshgrid(np.arange(3), np.arange(16), np.arange(128), np.arange(width),
                             indexing="ij")
    mean = (1000.0 * c + 10.0 * r + w / 1000.0 + t / 1e6).astype(np.float64)
    np.savez(tmp_path / "mean.npz", mean=mean)
    offset = load_mean_offset(tmp_path / "mean.npz")
    assert offset.shape == (3, 16, 112, 112) and offset.dtype == torch.float32
    expected = (128.0 - mean[:, :, 8:120, 8:120]).astype(np.float32)  # channels not swapped
    assert np.array_equal(offset.numpy(), expected)


def test_mean_offset_is_added_after_scaling(release_files):
    weights, mean_path = release_files
    model = load_c3d(weights, mean_path)
    mean = np.load(mean_path)["mean"]
    x = -torch.ones(1, 3, 16, 112, 112)  # -> 0 before the mean subtraction
    out = model.preprocess(x)
    assert np.allclose(out[0].numpy(), -mean[:, :, 8:120, 8:120], atol=1e-4)
    out = model.preprocess(-x)  # +1 -> 256
    assert np.allclose(out[0].numpy(), 256.0 - mean[:, :, 8:120, 8:120], atol=1e-4)


# ------------------------------------------------------------------ weights
def test_npz_forward_matches_reference_and_pt_conversion(release_files, tmp_path, capsys):
    weights, mean_path = release_files
    x = clips(2, size=48, seed=3)
    from_npz = load_c3d(weights, mean_path)
    assert not from_npz.training and not any(p.requires_grad for p in from_npz.parameters())
    with torch.inference_mode():
        features, logits = from_npz.extract(x)
    expected = reference_logits(release_arrays(), np.load(mean_path)["mean"], x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert features.shape == (2, 4096) and features.min() >= 0  # post-ReLU fc7
    assert not torch.allclose(logits[0], logits[1])  # the weights make logits depend on x

    out = tmp_path / "c3d_ucf101.pt"
    assert convert_main(["--weights", str(weights), "--mean", str(mean_path),
                         "--out", str(out)]) == 0
    from_pt = load_c3d(out)  # the .pt carries the mean: no mean file
    with torch.inference_mode():
        pt_features, pt_logits = from_pt.extract(x)
    assert torch.equal(pt_logits, logits) and torch.equal(pt_features, features)


def test_npz_needs_the_mean_file(release_files):
    with pytest.raises(ValueError, match="mean2.npz"):
        load_c3d(release_files[0])


def test_missing_files(tmp_path, release_files):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz.*conv3d_deepnetA_ucf\.npz"):
        load_c3d(tmp_path / "nope.npz", release_files[1])
    with pytest.raises(FileNotFoundError, match=r"nomean\.npz.*mean2\.npz"):
        load_c3d(release_files[0], tmp_path / "nomean.npz")
    with pytest.raises(FileNotFoundError, match=r"c3d\.pt.*convert_c3d"):
        load_c3d(tmp_path / "c3d.pt")


def tiny_layout(skip=(), replace=None):
    """Every release key with a placeholder array (shapes are checked after the keys)."""
    keys = [f"{n}/{p}" for n, *_ in CONV_WIDTHS + FC_WIDTHS for p in ("W", "b")]
    arrays = {k: np.zeros(1, np.float32) for k in keys if k not in skip}
    arrays.update(replace or {})
    return arrays


def test_missing_key_names_key_and_expected_file(tmp_path, release_files):
    path = tmp_path / "w.npz"
    np.savez(path, **tiny_layout(skip=("fc6/W",)))
    with pytest.raises(ValueError, match=r"w\.npz lacks key 'fc6/W'.*conv3d_deepnetA_ucf\.npz"):
        load_c3d(path, release_files[1])


def test_wrong_shape_names_key_and_expected_shape(tmp_path, release_files):
    path = tmp_path / "w.npz"
    np.savez(path, **tiny_layout(replace={"fc8/W": np.zeros((100, 4096), np.float32)}))
    with pytest.raises(ValueError) as err:
        load_c3d(path, release_files[1])
    msg = str(err.value)
    assert "'fc8/W' has shape (100, 4096), expected (101, 4096)" in msg
    assert "'conv1a/W' has shape (1,), expected (64, 3, 3, 3, 3)" in msg
    assert "conv3d_deepnetA_ucf.npz" in msg


def test_mean_file_errors(tmp_path, release_files):
    weights = release_files[0]
    np.savez(tmp_path / "nokey.npz", average=np.zeros((3, 16, 128, 171)))
    with pytest.raises(ValueError, match=r"nokey\.npz lacks key 'mean'"):
        load_c3d(weights, tmp_path / "nokey.npz")
    for bad in [(3, 16, 112, 112), (16, 128, 171, 3), (3, 128, 171)]:
        np.savez(tmp_path / "bad.npz", mean=np.zeros(bad, np.float32))
        with pytest.raises(ValueError, match=r"'mean' has shape .*expected \(3, 16, 128, W\)"):
            load_mean_offset(tmp_path / "bad.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable npz"):
        load_mean_offset(tmp_path / "text.npz")


def test_pt_of_another_kind_is_rejected(tmp_path):
    torch.save({"G": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="convert_c3d"):
        load_c3d(tmp_path / "other.pt")


def test_convert_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    code = convert_main(["--weights", str(tmp_path / "missing.npz"), "--mean",
                         str(tmp_path / "m.npz"), "--out", str(tmp_path / "c.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "missing.npz" in err
