"""C3D (Tran et al. 2015), Sports-1M pre-trained and fine-tuned on UCF101: the classifier behind
the published video Inception Scores (TGAN §6.5, tgan2 §5.7), run exactly as the official
TGANv2 evaluation runs it (docs/FIDELITY.md, Evaluation).

The architecture (``C3D``) is separate from weight loading (``load_c3d``), as torchvision does.
Two weight formats are read:

- the TGANv2 release ``conv3d_deepnetA_ucf.npz`` (Chainer npz, keys ``conv1a/W`` ...
  ``fc8/b``; Chainer's Convolution3D W is (out, in, kd, kh, kw) and Linear W is (out, in), the
  PyTorch layouts) together with ``mean2.npz`` (key ``mean``, (3, 16, 128, W), BGR);
- our converted ``.pt`` (``python -m data_prep.convert_c3d``), which holds the weights *and*
  the mean offset, so ``load_c3d(pt_path)`` needs no mean file.
"""
from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vidgan.metrics.registry import Reader

N_FRAMES = 16  # C3D sees 16-frame clips
SIZE = 112  # frames are resized to 112x112 (docs/FIDELITY.md, Evaluation)
MEAN_CROP = slice(8, 8 + SIZE)  # the official code slices mean[:, :, 8:120, 8:120]
N_CLASSES = 101  # UCF101
PT_FORMAT = "vidgan.c3d_ucf101"

# (name, in, out) of the 3x3x3 convolutions, in order; pools follow conv1a, 2a, 3b, 4b, 5b.
CONVS = (("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
         ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))
POOL_AFTER = ("conv1a", "conv2a", "conv3b", "conv4b", "conv5b")
FCS = (("fc6", 512 * 4 * 4, 4096), ("fc7", 4096, 4096), ("fc8", 4096, N_CLASSES))
RELEASE_HINT = "is it the TGANv2 release conv3d_deepnetA_ucf.npz?"
MEAN_HINT = "is it the TGANv2 release mean2.npz?"


def npz_layout() -> dict:
    """Chainer npz key -> array shape of the TGANv2 release weights."""
    layout = {}
    for name, c_in, c_out in CONVS:
        layout[f"{name}/W"], layout[f"{name}/b"] = (c_out, c_in, 3, 3, 3), (c_out,)
    for name, n_in, n_out in FCS:
        layout[f"{name}/W"], layout[f"{name}/b"] = (n_out, n_in), (n_out,)
    return layout


class C3D(nn.Module):
    """conv1a(64) pool1(1,2,2) conv2a(128) pool2 conv3a/b(256) pool3 conv4a/b(512) pool4
    conv5a/b(512) pool5 fc6 fc7 fc8 (docs/FIDELITY.md, Evaluation). Dropout is off at
    evaluation, so it is absent.

    ``mean_offset`` is the (3, 16, 112, 112) BGR term ``128 - mean[:, :, 8:120, 8:120]``.
    """

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({name: nn.Conv3d(c_in, c_out, 3, padding=1)
                                    for name, c_in, c_out in CONVS})
        # Chainer's max_pooling_nd defaults to cover_all=True, i.e. ceil mode: pool5 maps
        # (2, 7, 7) -> (1, 4, 4), which is why fc6 takes 512*4*4 inputs.
        self.pools = nn.ModuleDict({
            name: nn.MaxPool3d((1, 2, 2) if name == "conv1a" else 2, ceil_mode=True)
            for name in POOL_AFTER})
        self.fcs = nn.ModuleDict({name: nn.Linear(n_in, n_out) for name, n_in, n_out in FCS})
        self.register_buffer("mean_offset", torch.zeros(3, N_FRAMES, SIZE, SIZE))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1], (N, 3, 16, H, W) -> the network input (N, 3, 16, 112, 112).

        docs/FIDELITY.md, Evaluation: clip to [-1, 1]; RGB -> BGR and x128 (the official 1x1x1
        'pre' convolution); bilinear resize of every frame to 112x112 with align_corners=True
        (Chainer resize_images); add 128 - mean. So x = -1 maps to 0 and +1 to 256 before the
        mean subtraction.
        """
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] != N_FRAMES:
            raise ValueError(f"C3D expects RGB clips of shape (N, 3, {N_FRAMES}, H, W), got "
                             f"{tuple(x.shape)}; generate {N_FRAMES} frames for evaluation")
        n, c, t, h, w = x.shape
        x = x.float().clamp(-1.0, 1.0).flip(1) * 128.0  # BGR, [-128, 128]
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        frames = F.interpolate(frames, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        x = frames.view(n, t, c, SIZE, SIZE).transpose(1, 2)
        return x + self.mean_offset  # (N, 3, 16, 112, 112)

    def extract(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(post-ReLU fc7 features (N, 4096), fc8 logits (N, 101)) of clips in [-1, 1]."""
        # Full fp32 whatever autocast/TF32 setting the caller runs under: the scores are
        # compared with numbers the authors computed in fp32.
        with torch.autocast(x.device.type, enabled=False), _no_tf32(x.is_cuda):
            h = self.preprocess(x)
            for name, conv in self.convs.items():
                h = F.relu(conv(h))
                if name in self.pools:
                    h = self.pools[name](h)
            h = h.flatten(1)  # (N, 512*1*4*4), C order as Chainer's Linear reshape
            h = F.relu(self.fcs["fc6"](h))
            features = F.relu(self.fcs["fc7"](h))
            return features, self.fcs["fc8"](features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU fc7 activations (N, 4096): the FID embedding (tgan2 fid.py get_feature)."""
        return self.extract(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc8 logits (N, 101); softmax gives p(y|x) for the Inception Score."""
        return self.extract(x)[1]


@contextlib.contextmanager
def _no_tf32(active: bool):
    """Turn off TF32 convolutions/matmuls (cuDNN enables TF32 convolutions by default)."""
    if not active:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _open_npz(path: Path, what: str, hint: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist ({hint})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{what} {path} is not a readable npz file ({err}); {hint}") from None


def load_mean_offset(mean_path: str | Path) -> torch.Tensor:
    """``128 - mean[:, :, 8:120, 8:120]`` from ``mean2.npz`` as float32 (3, 16, 112, 112).

    The slice is exactly [8:120, 8:120] whatever the mean's width is (the release mean is
    128 x 171); its channels are BGR already and are not swapped (docs/FIDELITY.md, Evaluation).
    """
    path = Path(mean_path)
    with _open_npz(path, "C3D mean file", MEAN_HINT) as data:
        if "mean" not in data.files:
            raise ValueError(f"C3D mean file {path} lacks key 'mean' (has {data.files}); "
                             f"{MEAN_HINT}")
        mean = data["mean"]
    if (mean.ndim != 4 or mean.shape[:2] != (3, N_FRAMES) or mean.shape[2] < MEAN_CROP.stop
            or mean.shape[3] < MEAN_CROP.stop):
        raise ValueError(f"C3D mean file {path}: key 'mean' has shape {mean.shape}, expected "
                         f"(3, {N_FRAMES}, 128, W) with W >= {MEAN_CROP.stop} "
                         f"(BGR, frames, height, width); {MEAN_HINT}")
    # As the official Bias link: computed in the file's dtype, stored as float32.
    return torch.from_numpy(np.ascontiguousarray(
        (128 - mean[:, :, MEAN_CROP, MEAN_CROP]).astype(np.float32)))


def state_dict_from_npz(weights_path: str | Path) -> dict:
    """The release npz as a ``C3D`` state dict (without ``mean_offset``)."""
    path = Path(weights_path)
    layout = npz_layout()
    with _open_npz(path, "C3D weights file", "expected the TGANv2 release "
                   "conv3d_deepnetA_ucf.npz") as data:
        missing = [key for key in layout if key not in data.files]
        if missing:
            raise ValueError(f"C3D weights file {path} lacks key '{missing[0]}'"
                             f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} "
                             f"({RELEASE_HINT})")
        arrays = {key: data[key] for key in layout}
    wrong = [f"'{key}' has shape {arrays[key].shape}, expected {shape}"
             for key, shape in layout.items() if arrays[key].shape != shape]
    if wrong:
        raise ValueError(f"C3D weights file {path}: {'; '.join(wrong)} ({RELEASE_HINT})")
    state = {}
    for key, array in arrays.items():
        layer, param = key.split("/")
        group = "convs" if layer.startswith("conv") else "fcs"
        name = "weight" if param == "W" else "bias"
        state[f"{group}.{layer}.{name}"] = torch.from_numpy(array.astype(np.float32))
    return state


def save_c3d(model: C3D, out_path: str | Path, source: Optional[dict] = None) -> Path:
    """Write our ``.pt`` format: {'format', 'state_dict' (with mean_offset), 'source'}."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PT_FORMAT, "state_dict": model.state_dict(), "source": source or {}},
               out_path)
    return out_path


def _state_dict_from_pt(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"C3D weights file {path} does not exist (expected a .pt "
                                f"written by python -m data_prep.convert_c3d)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip/pickle
        raise ValueError(f"C3D weights file {path} could not be read ({err}); expected a .pt "
                         f"written by python -m data_prep.convert_c3d") from None
    if not isinstance(blob, dict) or blob.get("format") != PT_FORMAT:
        raise ValueError(f"C3D weights file {path} is not a '{PT_FORMAT}' file; convert the "
                         f"release npz with python -m data_prep.convert_c3d")
    return blob["state_dict"]


def load_c3d(weights_path: str | Path, mean_path: Optional[str | Path] = None,
             device: str | torch.device = "cpu") -> C3D:
    """C3D in eval mode, weights frozen, on ``device``.

    ``weights_path``: the release ``.npz`` (then ``mean_path`` = ``mean2.npz`` is required) or
    our ``.pt`` (which carries the mean; a ``mean_path`` given anyway replaces it).
    """
    path = Path(weights_path)
    if path.suffix == ".npz":
        if not mean_path:
            raise ValueError(f"C3D weights file {path} is the release npz, which holds no mean: "
                             f"also give the mean file mean2.npz (--c3d-mean / eval.c3d_mean)")
        state = state_dict_from_npz(path)
    else:
        state = _state_dict_from_pt(path)
    if mean_path:
        state["mean_offset"] = load_mean_offset(mean_path)
    model = C3D()
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if bad:
        raise ValueError(f"C3D weights file {path}: entry '{bad[0]}' is missing or has the "
                         f"wrong shape (expected {tuple(expected[bad[0]].shape)})")
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)


def _cat_reads(reads):
    features, logits = zip(*reads)
    return torch.cat(features), torch.cat(logits)


# The registry's reader (vidgan.metrics.registry): fc7 features and logits, left on the device
READERS = (Reader("c3d", "c3d", read=lambda x, c3d: c3d.extract(x), cat=_cat_reads),)
