"""I3D (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"), the Kinetics-400 RGB
Inception-v1 inflated to 3D: the classifier behind the Frechet Video Distance (Unterthiner et
al. 2018, "Towards Accurate Generative Models of Video").

The architecture (``I3D``) is separate from weight loading (``load_i3d``), as torchvision does.
Module and parameter names are those of the pytorch-i3d port (piergiaj/pytorch-i3d), so the
state dict of ``I3D`` is the layout of ``i3d_pretrained_400.pt``, VideoGPT's conversion of the
TF-Hub module ``deepmind/i3d-kinetics-400/1`` that VideoGPT, TATS, DIGAN and cd-fvd load:
57 convolution units with batch norm (5 tensors each) and the ``logits`` convolution (weight
and bias), 287 tensors, plus 57 ``num_batches_tracked`` counters in a re-saved state dict.

Choices, each as the reference implementations make it:

- **The FVD feature** is the 400-d pre-softmax Logits layer averaged over time (the TF FVD's
  ``RGB/inception_i3d/Mean:0``): after ``Mixed_5c`` an average pool [2, 7, 7] with stride 1,
  the 1x1x1 ``logits`` convolution (bias, no batch norm), then the mean over the remaining time
  steps. At 16 frames that is one step; fewer than 9 frames leave nothing to pool.
- **"SAME" padding as TensorFlow**: every convolution and max pool pads each of (T, H, W) from
  the input's size: ``pad = max(k - s, 0)`` if ``n % s == 0`` else ``max(k - n % s, 0)``, with
  ``pad // 2`` in front and the rest behind. Max pools pad with zeros, as pytorch-i3d does
  (harmless: their inputs are post-ReLU).
- **Input**: RGB clips at 224x224 with values in [-1, 1]. ``preprocess`` makes them from uint8
  clips as cd-fvd does (every frame resized to 224x224 by bilinear interpolation with
  ``align_corners=False`` and no antialiasing, then ``2 x / 255 - 1``); for square frames this
  is also VideoGPT's resize-shorter-side-and-centre-crop up to float rounding. ``to_uint8``
  quantises generator output in [-1, 1] as StyleGAN-V does before its detector sees it.
- **Evaluation only**: dropout (identity in eval) is absent; the forward runs in float32 with
  autocast and TF32 off, as C3D's does.

**The batch-norm eps question.** The TF original uses Sonnet's BatchNorm, whose default eps is
1e-3, and so does piergiaj's pytorch-i3d; the copy of it that VideoGPT used for
``i3d_pretrained_400.pt`` (and that cd-fvd ships) builds its BatchNorm3d with eps=1e-5. The
two give slightly different features, and the numbers papers report with
``i3d_pretrained_400.pt`` were computed with 1e-5, so that is the default here and ``eps`` is
a constructor argument. What eps StyleGAN-V's TorchScript detector uses is not verified:
``load_i3d`` reads it from the archive's graph (the constant eps of its ``batch_norm`` calls)
and otherwise asks the caller for it.
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.metrics.c3d import _no_tf32
from vidgan.metrics.registry import Reader

SIZE = 224  # I3D sees 224x224 frames
MIN_FRAMES = 9  # T: 9 -> 5 (Conv3d_1a) -> 3 (MaxPool3d_4a) -> 2 (MaxPool3d_5a) -> 1 (avg pool)
N_CLASSES = 400  # Kinetics-400
EPS_PYTORCH_I3D = 1e-5  # BatchNorm3d eps of the pytorch-i3d port (i3d_pretrained_400.pt)
EPS_SONNET = 1e-3  # snt.BatchNorm default, the TF original
PT_FORMAT = "vidgan.i3d_kinetics400"
RELEASE_HINT = ("expected the pytorch-i3d Kinetics-400 state dict i3d_pretrained_400.pt "
                "(VideoGPT/TATS/DIGAN), a .pt written by python -m data_prep.convert_i3d, or a "
                "TorchScript archive with the same tensor names")

# Inception blocks: name -> (input channels, widths of b0, b1a, b1b, b2a, b2b, b3b)
# (Szegedy et al. 2015, Table 1, as inflated by Quo Vadis Fig. 3).
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
FEATURE_CHANNELS = 1024  # Mixed_5c: 384 + 384 + 128 + 128


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """(front, back) padding of TF "SAME" along one dimension of length ``size``."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Pad (B, C, T, H, W) with zeros so that a kernel/stride window gives TF "SAME" output."""
    pads: List[int] = []
    for dim in (4, 3, 2):  # F.pad lists the last dimension first
        pads.extend(same_padding(x.shape[dim], kernel[dim - 2], stride[dim - 2]))
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm3d and ReLU (``conv3d``, ``bn`` as pytorch-i3d); the
    ``logits`` unit has a bias instead of batch norm and no ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 eps: float = EPS_PYTORCH_I3D, logits: bool = False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(c_out, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" (zero) padding."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1x1 (b0); 1x1x1 -> 3x3x3 (b1a, b1b);
    1x1x1 -> 3x3x3 (b2a, b2b); 3x3x3 max pool -> 1x1x1 (b3a, b3b)."""

    def __init__(self, c_in: int, widths: Sequence[int], eps: float):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(c_in, w0, eps=eps)
        self.b1a = Unit3D(c_in, w1a, eps=eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), eps=eps)
        self.b2a = Unit3D(c_in, w2a, eps=eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), eps=eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(c_in, w3b, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """Kinetics-400 RGB I3D; ``forward`` gives the time-averaged pre-softmax logits (B, 400)
    that FVD compares. The trunk is the sequence of children in construction order, the names
    TF and pytorch-i3d give them: stem, Mixed_3*, Mixed_4*, Mixed_5*, then ``logits``."""

    def __init__(self, eps: float = EPS_PYTORCH_I3D):
        super().__init__()
        self.eps = eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), eps=eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), eps=eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            self.add_module(name, InceptionBlock(*MIXED[name], eps=eps))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionBlock(*MIXED[name], eps=eps))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            self.add_module(name, InceptionBlock(*MIXED[name], eps=eps))
        self.logits = Unit3D(FEATURE_CHANNELS, N_CLASSES, logits=True)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> Mixed_5c (B, 1024, ~T/8, ~H/32, ~W/32), any size."""
        for name, module in self.named_children():
            if name != "logits":
                x = module(x)
        return x

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """RGB clips (B, 3, T >= 9, 224, 224) in [-1, 1] -> logits (B, 400), averaged over time."""
        if videos.ndim != 5 or videos.shape[1] != 3 or videos.shape[3:] != (SIZE, SIZE):
            raise ValueError(f"I3D expects RGB clips of shape (B, 3, T, {SIZE}, {SIZE}) in "
                             f"[-1, 1], got {tuple(videos.shape)}; resize uint8 clips with "
                             f"vidgan.metrics.i3d.preprocess")
        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs clips of at least {MIN_FRAMES} frames (its [2, 7, 7] "
                             f"average pool comes after three temporal halvings), got "
                             f"{videos.shape[2]}")
        # Full fp32 whatever autocast/TF32 setting the caller runs under, as C3D.
        with torch.autocast(videos.device.type, enabled=False), _no_tf32(videos.is_cuda):
            x = self.trunk(videos.float())  # (B, 1024, T', 7, 7)
            x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T' - 1, 1, 1)
            x = self.logits(x)  # (B, 400, T' - 1, 1, 1)
            return x[:, :, :, 0, 0].mean(dim=2)  # Quo Vadis: logits averaged over time


def preprocess(videos: torch.Tensor) -> torch.Tensor:
    """Clips (B, 3, T, H, W) with values in 0..255 (uint8, or float) -> I3D input
    (B, 3, T, 224, 224) float32 in [-1, 1], as cd-fvd: every frame resized to 224x224 (bilinear,
    align_corners=False, no antialias; the aspect ratio is not kept), then ``x * 2 / 255 - 1``."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"I3D preprocess expects RGB clips (B, 3, T, H, W) with values in "
                         f"0..255, got shape {tuple(videos.shape)}")
    if videos.dtype != torch.uint8 and videos.numel() and (videos.min() < 0 or videos.max() > 255):
        raise ValueError(f"I3D preprocess expects values in 0..255, got "
                         f"[{videos.min().item():.3g}, {videos.max().item():.3g}]; quantise "
                         f"generator output in [-1, 1] with vidgan.metrics.i3d.to_uint8")
    b, c, t, h, w = videos.shape
    frames = videos.transpose(1, 2).reshape(b * t, c, h, w).float()
    frames = F.interpolate(frames, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = frames.view(b, t, c, SIZE, SIZE).transpose(1, 2)
    return x * 2 / 255 - 1  # (B, 3, T, 224, 224)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 as StyleGAN-V: ``(x * 127.5 + 128)`` clamped to
    [0, 255] and truncated, i.e. ``(x + 1) * 127.5`` rounded half up."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------ weights
def save_i3d(model: I3D, out_path: str | Path, source: Optional[dict] = None) -> Path:
    """Write our ``.pt`` format: {'format', 'state_dict', 'eps', 'source'}."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PT_FORMAT, "state_dict": model.state_dict(), "eps": model.eps,
                "source": source or {}}, out_path)
    return out_path


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with serialised code (``code/``) and ``constants.pkl``;
    a ``torch.save`` zip has neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name
                   for name in archive.namelist())


def _listing(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def _batch_norm_eps(module: torch.jit.ScriptModule) -> set:
    """The constant eps arguments of the ``aten::batch_norm`` calls in the archive's graphs
    (scripted and traced modules alike record them there)."""
    values = set()
    for _, sub in module.named_modules():
        try:
            graph = sub.inlined_graph
        except (AttributeError, RuntimeError):  # a module without a forward
            continue
        for node in graph.findAllNodes("aten::batch_norm"):
            # aten::batch_norm(input, weight, bias, mean, var, training, momentum, eps, cudnn)
            value = node.inputsAt(7).toIValue()
            if value is not None:
                values.add(float(value))
    return values


def _torchscript_state(path: Path, expected: Sequence[str]) -> Tuple[dict, set]:
    """Tensors of a TorchScript archive renamed onto ``expected``, and the batch-norm eps
    values its graphs show. Names must be ours after stripping one common prefix."""
    try:
        with warnings.catch_warnings():  # torch.jit.load's own deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises several types for a damaged archive
        raise ValueError(f"I3D weights file {path} is a TorchScript archive that could not be "
                         f"loaded ({err})") from None
    state = module.state_dict()
    anchor = expected[0]  # 'Conv3d_1a_7x7.conv3d.weight'
    hits = [name for name in state if name == anchor or name.endswith("." + anchor)]
    if not hits:
        raise ValueError(
            f"I3D weights file {path} is a TorchScript archive whose tensor names are not the "
            f"pytorch-i3d ones (it has {_listing(list(state), 5)}; expected names such as "
            f"'{anchor}'); vidgan maps only archives with those names")
    prefix = hits[0][: len(hits[0]) - len(anchor)]
    state = {name[len(prefix):] if name.startswith(prefix) else name: tensor
             for name, tensor in state.items()}
    return state, _batch_norm_eps(module)


def _check_state(state: dict, expected: dict, path: Path) -> None:
    """Raise if ``state`` is not the pytorch-i3d layout: every tensor of ``expected`` (the
    ``num_batches_tracked`` counters may be absent), nothing else, the same shapes."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    foreign = [k for k in state if k not in expected]
    wrong = [f"'{k}' has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
             if torch.is_tensor(state[k]) else f"'{k}' is a {type(state[k]).__name__}, not a tensor"
             for k in expected if k in state and
             (not torch.is_tensor(state[k]) or state[k].shape != expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"lacks {_listing(missing)}")
    if foreign:
        problems.append(f"has foreign {_listing(foreign)}")
    if wrong:
        problems.append("; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)"
                                                if len(wrong) > 3 else ""))
    if problems:
        n_release = sum(not k.endswith("num_batches_tracked") for k in expected)
        raise ValueError(f"I3D weights file {path}: {'; '.join(problems)}; expected the "
                         f"{n_release} tensors of the pytorch-i3d layout ({RELEASE_HINT})")


def load_i3d(weights_path: str | Path, device: str | torch.device = "cpu",
             eps: Optional[float] = None) -> I3D:
    """I3D in eval mode, weights frozen, on ``device``. ``weights_path`` is one of:

    - the pytorch-i3d state dict ``i3d_pretrained_400.pt`` (287 tensors, or 344 if re-saved
      with ``num_batches_tracked``), read with ``torch.load(weights_only=True)``; eps 1e-5;
    - our ``.pt`` (``python -m data_prep.convert_i3d``), which carries its eps;
    - a TorchScript archive (such as StyleGAN-V's ``i3d_torchscript.pt``). ``torch.jit.load``
      deserialises the archive's TorchScript code and constants (it does not run its forward,
      and vidgan never calls it); only the tensors of ``state_dict()`` are kept, mapped by name
      after stripping a common prefix, so an archive is accepted only if its names are the
      pytorch-i3d ones. Whether StyleGAN-V's file has such names is unverified; if not, the
      error lists some of its names. Its eps is the constant eps argument of the
      ``batch_norm`` calls in its graphs.

    ``eps`` overrides the file's batch-norm eps; it is required for an archive that does not
    expose one.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights file {path} does not exist ({RELEASE_HINT})")
    with torch.device("meta"):  # names and shapes only
        expected = I3D().state_dict()
    if _is_torchscript(path):
        state, eps_values = _torchscript_state(path, list(expected))
        if eps is None and len(eps_values) != 1:
            shown = f"shows eps {sorted(eps_values)}" if eps_values else "shows no eps"
            raise ValueError(f"I3D weights file {path} is a TorchScript archive whose graph "
                             f"{shown} for its batch norms: pass eps explicitly "
                             f"({EPS_PYTORCH_I3D:g} for a port of i3d_pretrained_400.pt, "
                             f"{EPS_SONNET:g} for the TF original)")
        file_eps = eps_values.pop() if len(eps_values) == 1 else None
    else:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a damaged zip/pickle
            raise ValueError(f"I3D weights file {path} could not be read ({err}); "
                             f"{RELEASE_HINT}") from None
        if not isinstance(blob, dict):
            raise ValueError(f"I3D weights file {path} holds a {type(blob).__name__}, not a "
                             f"state dict; {RELEASE_HINT}")
        if "format" in blob:
            if blob["format"] != PT_FORMAT:
                raise ValueError(f"I3D weights file {path} is a '{blob['format']}' file, not "
                                 f"'{PT_FORMAT}'; {RELEASE_HINT}")
            state, file_eps = blob["state_dict"], float(blob["eps"])
        else:
            state, file_eps = blob, EPS_PYTORCH_I3D
    _check_state(state, expected, path)
    model = I3D(eps=file_eps if eps is None else eps)
    # The 287-tensor release has no num_batches_tracked; they are unused in eval, so zeros.
    full = {k: state[k] if k in state else torch.tensor(0) for k in expected}
    model.load_state_dict(full)
    return model.to(device).eval().requires_grad_(False)


def _read(x: torch.Tensor, i3d: I3D) -> torch.Tensor:
    """I3D features of generated or real clips in [-1, 1]: quantised to uint8 as StyleGAN-V
    does (every reference implementation feeds uint8), resized to 224x224, then I3D."""
    return i3d(preprocess(to_uint8(x)))


# The registry's reader (vidgan.metrics.registry): 400-d features, left on the device
READERS = (Reader("i3d", "i3d", read=_read, cat=torch.cat),)
