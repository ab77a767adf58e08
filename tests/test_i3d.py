"""I3D as the FVD references run it (Carreira & Zisserman 2017; Unterthiner et al. 2018): the
pytorch-i3d key layout of i3d_pretrained_400.pt, TF "SAME" padding, shapes, the time-averaged
logits, cd-fvd preprocessing, StyleGAN-V's uint8 rounding, loading and its errors. Random
weights, real layout. A forward at 224x224 costs ~4 s on two CPU cores: two tests run one."""
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from data_prep.convert_i3d import main as convert_main
from vidgan.metrics.i3d import I3D, MaxPool3dSame, load_i3d, preprocess, same_padding, to_uint8

# The release's convolution units, written out here independently of vidgan.metrics.i3d:
# (name, in, out, kernel, stride) of the stem, and the Inception blocks' widths.
STEM = [("Conv3d_1a_7x7", 3, 64, 7, 2), ("Conv3d_2b_1x1", 64, 64, 1, 1),
        ("Conv3d_2c_3x3", 64, 192, 3, 1)]
MIXED = [("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
         ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
         ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
         ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
         ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128))]
RELEASE = "i3d_pretrained_400.pt"


def branches(c_in, widths):
    """(branch, in, out, kernel) of one Inception block."""
    w0, w1a, w1b, w2a, w2b, w3b = widths
    return [("b0", c_in, w0, 1), ("b1a", c_in, w1a, 1), ("b1b", w1a, w1b, 3),
            ("b2a", c_in, w2a, 1), ("b2b", w2a, w2b, 3), ("b3b", c_in, w3b, 1)]


def bn_units():
    """(prefix, in, out, kernel) of the 57 convolution + batch-norm units, in file order."""
    units = [(name, c_in, c_out, k) for name, c_in, c_out, k, _ in STEM]
    for name, c_in, widths in MIXED:
        units += [(f"{name}.{b}", i, o, k) for b, i, o, k in branches(c_in, widths)]
    return units


def release_state(seed=0):
    """Random float32 weights in the layout of i3d_pretrained_400.pt: a plain dict, 287 tensors,
    no num_batches_tracked, bn.weight = 1 (TF's batch norm has no scale)."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for prefix, c_in, c_out, k in bn_units():
        fan_in = c_in * k ** 3
        state[f"{prefix}.conv3d.weight"] = (torch.randn(c_out, c_in, k, k, k, generator=g)
                                            * (2 / fan_in) ** 0.5)
        state[f"{prefix}.bn.weight"] = torch.ones(c_out)
        state[f"{prefix}.bn.bias"] = torch.randn(c_out, generator=g) * 0.1
        state[f"{prefix}.bn.running_mean"] = torch.randn(c_out, generator=g) * 0.1
        state[f"{prefix}.bn.running_var"] = torch.rand(c_out, generator=g) + 0.5
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g) / 32
    state["logits.conv3d.bias"] = torch.randn(400, generator=g) * 0.01
    return state


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """(path, state) of a random-weight file written as VideoGPT's converter writes it."""
    state = release_state()
    path = tmp_path_factory.mktemp("i3d_release") / RELEASE
    torch.save(state, path)
    return path, state


def clips(n, t=16, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, t, size, size, generator=g) * 2 - 1


def small_clip(seed=0):
    """Enough for the trunk (Mixed_5c): equality tests need no 224x224 forward."""
    return clips(1, t=9, size=16, seed=seed)


# ------------------------------------------------------------------ reference forward
def pad_same(x, k, s):
    """TF "SAME" for every one of (T, H, W), written from the rule: total max(k - s, 0) if
    n % s == 0 else max(k - n % s, 0); total // 2 in front."""
    pads = []
    for n in reversed(x.shape[2:]):
        total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def ref_unit(x, state, prefix, k, s=1, eps=1e-5):
    x = F.conv3d(pad_same(x, k, s), state[f"{prefix}.conv3d.weight"], stride=s)
    x = F.batch_norm(x, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                     state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, eps)
    return F.relu(x)


def ref_pool(x, k, s):
    k, s = (k if isinstance(k, tuple) else (k,) * 3), (s if isinstance(s, tuple) else (s,) * 3)
    pads = []
    for n, kk, ss in reversed(list(zip(x.shape[2:], k, s))):
        total = max(kk - ss, 0) if n % ss == 0 else max(kk - n % ss, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool3d(F.pad(x, pads), k, s)


def reference_trunk(state, x, eps=1e-5):
    """pytorch-i3d's forward from the state dict up to Mixed_5c."""
    x = ref_unit(x, state, "Conv3d_1a_7x7", 7, 2, eps)
    x = ref_pool(x, (1, 3, 3), (1, 2, 2))
    x = ref_unit(x, state, "Conv3d_2b_1x1", 1, 1, eps)
    x = ref_unit(x, state, "Conv3d_2c_3x3", 3, 1, eps)
    x = ref_pool(x, (1, 3, 3), (1, 2, 2))
    for name, _, _ in MIXED:
        if name == "Mixed_4b":
            x = ref_pool(x, 3, 2)
        if name == "Mixed_5b":
            x = ref_pool(x, 2, 2)
        b0 = ref_unit(x, state, f"{name}.b0", 1, 1, eps)
        b1 = ref_unit(ref_unit(x, state, f"{name}.b1a", 1, 1, eps), state, f"{name}.b1b", 3, 1, eps)
        b2 = ref_unit(ref_unit(x, state, f"{name}.b2a", 1, 1, eps), state, f"{name}.b2b", 3, 1, eps)
        b3 = ref_unit(ref_pool(x, 3, 1), state, f"{name}.b3b", 1, 1, eps)
        x = torch.cat([b0, b1, b2, b3], 1)
    return x


def reference_head(state, x):
    """Mixed_5c (B, 1024, T', 7, 7) -> logits (B, 400, T' - 1) before the time mean."""
    x = F.avg_pool3d(x, (2, 7, 7), stride=1)
    x = F.conv3d(x, state["logits.conv3d.weight"], state["logits.conv3d.bias"])
    return x.squeeze(3).squeeze(3)


# ------------------------------------------------------------------ architecture
def test_state_dict_is_the_pytorch_i3d_layout():
    state = I3D().state_dict()
    release = release_state()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(release) == 287 and len(state) == 344 and len(counters) == 57
    ours = [(k, tuple(v.shape)) for k, v in state.items() if k not in counters]
    assert ours == [(k, tuple(v.shape)) for k, v in release.items()]  # names, shapes, order
    eps = {m.eps for m in I3D().modules() if isinstance(m, torch.nn.BatchNorm3d)}
    assert eps == {1e-5}
    assert {m.eps for m in I3D(eps=1e-3).modules() if isinstance(m, torch.nn.BatchNorm3d)} == {1e-3}


@pytest.mark.parametrize("n, k, s, expected", [
    (7, 3, 2, (1, 1)),  # 7 % 2 = 1: total max(3 - 1, 0) = 2
    (8, 3, 2, (0, 1)),  # 8 % 2 = 0: total max(3 - 2, 0) = 1, the extra row behind
    (224, 7, 2, (2, 3)), (16, 7, 2, (2, 3)), (9, 7, 2, (3, 3)),
    (5, 3, 1, (1, 1)), (4, 2, 2, (0, 0)), (3, 2, 2, (0, 1)), (1, 3, 2, (1, 1))])
def test_same_padding_hand_cases(n, k, s, expected):
    assert same_padding(n, k, s) == expected
    assert (n + sum(expected) - k) // s + 1 == -(-n // s)  # "SAME": ceil(n / s) outputs


@pytest.mark.parametrize("n, expected", [(8, [3, 5, 7, 8]), (7, [2, 4, 6, 7])])
def test_max_pool_same_pads_front_pad_over_2(n, expected):
    # Windows of 3, stride 2 over 1..n: n = 8 pads (0, 1) -> [1,2,3] [3,4,5] [5,6,7] [7,8,0];
    # n = 7 pads (1, 1) -> [0,1,2] [2,3,4] [4,5,6] [6,7,0].
    x = torch.arange(1.0, n + 1).view(1, 1, 1, 1, n)
    out = MaxPool3dSame((1, 1, 3), (1, 1, 2))(x)
    assert out.flatten().tolist() == expected


def test_shapes_through_every_layer():
    model = I3D().eval()
    seen = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    with torch.inference_mode():
        out = model(clips(1))
    assert seen["Conv3d_1a_7x7"] == (1, 64, 8, 112, 112)
    assert seen["MaxPool3d_2a_3x3"] == (1, 64, 8, 56, 56)
    assert seen["Conv3d_2c_3x3"] == (1, 192, 8, 56, 56)
    assert seen["MaxPool3d_3a_3x3"] == (1, 192, 8, 28, 28)
    assert seen["Mixed_3c"] == (1, 480, 8, 28, 28)
    assert seen["MaxPool3d_4a_3x3"] == (1, 480, 4, 14, 14)
    assert seen["Mixed_4f"] == (1, 832, 4, 14, 14)
    assert seen["MaxPool3d_5a_2x2"] == (1, 832, 2, 7, 7)
    assert seen["Mixed_5c"] == (1, 1024, 2, 7, 7)
    assert seen["logits"] == (1, 400, 1, 1, 1)  # after the [2, 7, 7] average pool
    assert out.shape == (1, 400)


def test_rejects_clips_it_cannot_pool():
    model = I3D()
    with pytest.raises(ValueError, match="at least 9 frames.*got 8"):
        model(torch.zeros(1, 3, 8, 224, 224))
    for shape in [(1, 3, 16, 112, 112), (1, 1, 16, 224, 224), (3, 16, 224, 224)]:
        with pytest.raises(ValueError, match=r"\(B, 3, T, 224, 224\).*preprocess"):
            model(torch.zeros(shape))


def test_trunk_matches_reference(release):
    path, state = release
    model = load_i3d(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = clips(1, t=11, size=20, seed=1)  # odd sizes on the way: 20 -> 10 -> 5 -> 3 -> 2 -> 1
    with torch.inference_mode():
        out = model.trunk(x)
        expected = reference_trunk(state, x)
    assert out.shape == (1, 1024, 2, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_logits_are_averaged_over_time(release):
    path, state = release
    model = load_i3d(path)
    seen = {}
    model.Mixed_5c.register_forward_hook(lambda m, i, o: seen.__setitem__("Mixed_5c", o))
    x = clips(1, t=17, seed=2)  # T: 17 -> 9 -> 5 -> 3 -> two time steps after the avg pool
    with torch.inference_mode():
        logits = model(x)
        per_step = reference_head(state, seen["Mixed_5c"])
    assert per_step.shape == (1, 400, 2)
    assert not torch.allclose(per_step[..., 0], per_step[..., 1], atol=1e-3)
    expected = per_step.mean(dim=2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# ------------------------------------------------------------------ weights
def test_release_file_loads_strictly_and_so_does_a_resave(release, tmp_path):
    path, state = release
    from_release = load_i3d(path)
    loaded = from_release.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(int(v) == 0 for k, v in loaded.items() if k.endswith("num_batches_tracked"))
    resaved = tmp_path / "resaved.pt"
    torch.save(from_release.state_dict(), resaved)  # 344 tensors and _metadata
    from_resave = load_i3d(resaved)
    x = small_clip()
    with torch.inference_mode():
        assert torch.equal(from_resave.trunk(x), from_release.trunk(x))
    assert load_i3d(path, eps=1e-3).Conv3d_1a_7x7.bn.eps == 1e-3


def save_variant(tmp_path, skip=(), add=None, replace=None):
    state = {k: v for k, v in release_state().items() if k not in skip}
    state.update(add or {})
    state.update(replace or {})
    path = tmp_path / "variant.pt"
    torch.save(state, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = save_variant(tmp_path, skip=("Mixed_4d.b1b.bn.running_var",))
    with pytest.raises(ValueError, match=r"variant\.pt: lacks 'Mixed_4d\.b1b\.bn\.running_var'; "
                                         r"expected the 287 tensors.*i3d_pretrained_400\.pt"):
        load_i3d(path)


def test_foreign_key_is_named(tmp_path):
    path = save_variant(tmp_path, add={"fc.weight": torch.zeros(400, 1024)})
    with pytest.raises(ValueError, match=r"variant\.pt: has foreign 'fc\.weight'"):
        load_i3d(path)


def test_wrong_shape_is_named_with_the_expected_shape(tmp_path):
    path = save_variant(tmp_path, replace={"logits.conv3d.weight": torch.zeros(600, 1024, 1, 1, 1)})
    with pytest.raises(ValueError, match=r"'logits\.conv3d\.weight' has shape \(600, 1024, 1, 1, "
                                         r"1\), expected \(400, 1024, 1, 1, 1\)"):
        load_i3d(path)


def test_another_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*i3d_pretrained_400\.pt"):
        load_i3d(tmp_path / "nope.pt")
    torch.save({"format": "vidgan.c3d_ucf101", "state_dict": {}}, tmp_path / "c3d.pt")
    with pytest.raises(ValueError, match=r"'vidgan\.c3d_ucf101' file, not "
                                         r"'vidgan\.i3d_kinetics400'"):
        load_i3d(tmp_path / "c3d.pt")
    torch.save({"G": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError,
                       match=r"lacks 'Conv3d_1a_7x7\.conv3d\.weight'.*\(and 284 more\)"):
        load_i3d(tmp_path / "ckpt.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match=r"text\.pt could not be read"):
        load_i3d(tmp_path / "text.pt")


def test_converter_round_trip(release, tmp_path, capsys):
    path, state = release
    out = tmp_path / "i3d_kinetics400.pt"
    assert convert_main(["--weights", str(path), "--out", str(out)]) == 0
    assert "batch-norm eps 1e-05" in capsys.readouterr().out
    converted = load_i3d(out)
    assert converted.eps == 1e-5
    loaded = converted.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert convert_main(["--weights", str(path), "--out", str(out), "--eps", "1e-3"]) == 0
    assert load_i3d(out).Mixed_5c.b3b.bn.eps == 1e-3  # the .pt carries the eps


def test_convert_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    code = convert_main(["--weights", str(tmp_path / "missing.pt"),
                         "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "missing.pt" in err


class Wrapped(torch.nn.Module):
    """A TorchScript archive whose tensor names carry a prefix ('net.')."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.trunk(x)


def test_torchscript_archive_maps_by_name_and_takes_its_eps(release, tmp_path):
    source = load_i3d(release[0], eps=1e-3)
    x = small_clip(seed=2)
    archive = tmp_path / "i3d_torchscript.pt"
    with warnings.catch_warnings():  # tracing warns about the shape-dependent padding
        warnings.simplefilter("ignore")
        torch.jit.trace(Wrapped(source), x, check_trace=False).save(str(archive))
    model = load_i3d(archive)
    assert model.eps == 1e-3  # read from the archive's batch_norm calls
    with torch.inference_mode():
        assert torch.equal(model.trunk(x), source.trunk(x))


def test_torchscript_archive_with_other_names_or_no_eps(tmp_path):
    other = tmp_path / "other.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        torch.jit.script(torch.nn.Linear(2, 3)).save(str(other))
    with pytest.raises(ValueError, match=r"other\.pt is a TorchScript archive whose tensor names "
                                         r"are not the pytorch-i3d ones \(it has 'weight', 'bias'"):
        load_i3d(other)

    class Idle(torch.nn.Module):  # holds an I3D whose batch norms its graph never calls
        def __init__(self):
            super().__init__()
            self.net = I3D()

        def forward(self, x):
            return x + 1

    silent = tmp_path / "silent.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Idle(), torch.zeros(1)).save(str(silent))
    with pytest.raises(ValueError, match=r"shows no eps.*pass eps explicitly"):
        load_i3d(silent)
    assert load_i3d(silent, eps=1e-5).eps == 1e-5


# ------------------------------------------------------------------ preprocessing
def bilinear_matrix(n_in, n_out):
    """Bilinear resize as a matrix, align_corners=False (half-pixel centres): output i samples
    input (i + 0.5) n_in / n_out - 0.5, clamped at the borders."""
    pos = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def test_preprocess_is_per_frame_bilinear_then_2x_over_255_minus_1():
    g = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (2, 3, 3, 5, 7), generator=g, dtype=torch.uint8)
    out = preprocess(videos)
    assert out.shape == (2, 3, 3, 224, 224) and out.dtype == torch.float32
    expected = torch.einsum("ih,bcthw,jw->bctij", torch.from_numpy(bilinear_matrix(5, 224)),
                            videos.double(), torch.from_numpy(bilinear_matrix(7, 224)))
    torch.testing.assert_close(out.double(), expected * 2 / 255 - 1, atol=1e-5, rtol=0)
    assert torch.equal(preprocess(videos.float()), out)  # float 0..255 is read the same


def test_preprocess_maps_0_and_255_to_plus_minus_1():
    black = torch.zeros(1, 3, 2, 64, 64, dtype=torch.uint8)
    assert torch.equal(preprocess(black), -torch.ones(1, 3, 2, 224, 224))
    assert torch.equal(preprocess(black + 255), torch.ones(1, 3, 2, 224, 224))


def test_preprocess_rejects_values_outside_0_255_and_non_rgb():
    with pytest.raises(ValueError, match="0..255.*to_uint8"):
        preprocess(torch.rand(1, 3, 2, 8, 8) * 2 - 1)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        preprocess(torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8))


def test_to_uint8_rounds_as_stylegan_v():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 2.0])
    # -1 -> 0.5 -> 0; 1 -> 255.5 -> 255 (clamped); 0 -> 128; out of range clamps.
    assert to_uint8(x).tolist() == [0, 255, 128, 0, 255]
    levels = torch.arange(256)
    assert torch.equal(to_uint8(levels * 2 / 255 - 1), levels.to(torch.uint8))  # exact inverse
    # (x + 1) * 127.5 rounded half up: 9.9 -> 10, 10.4 -> 10, 10.6 -> 11
    assert to_uint8(torch.tensor([9.9, 10.4, 10.6], dtype=torch.float64) / 127.5 - 1).tolist() \
        == [10, 10, 11]
