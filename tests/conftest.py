import socket
from pathlib import Path

import pytest

from vidgan.config import load_config

# The tests' base config (tests/tiny.yaml), and the train.py arguments that select it.
BASE = Path(__file__).resolve().parent / "tiny.yaml"
TINY = ["--config", str(BASE)]
# Its tiny widths and sizes, as overrides for the shipped configs.
WIDTHS = ["model.resolution=64", "model.n_frames=8", "model.z_dim=8", "model.clstm_ch=8",
          "model.ch=2", "model.dis_ch=2", "train.batch_size=4", "data.num_workers=0",
          "train.log_interval=1", "eval.sample_rows=2", "train.device=cpu",
          "train.head_gradients=false"]


def widths_for(name: str) -> list:
    """WIDTHS for the shipped config ``name``, without the keys its variant does not read (a
    config error): the ConvLSTM's z_dim for a GRU config."""
    gru = load_config(name).model.temporal == "gru"
    return [o for o in WIDTHS if not (gru and o.startswith("model.z_dim"))]


def free_port() -> int:
    """A TCP port nobody listens on, for a gloo process group of the tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_untrained_checkpoint(cfg, out_dir, step: int = 5) -> Path:
    """A checkpoint of freshly built networks (seed 0) for ``cfg``, as training writes it."""
    import torch

    from vidgan.checkpoint import rng_state, save_checkpoint
    from vidgan.config import to_dict
    from vidgan.models import build_discriminator, build_generator
    from vidgan.train.ema import make_ema
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    state = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": make_ema(G).state_dict(),
             "opt_G": torch.optim.Adam(G.parameters()).state_dict(),
             "opt_D": torch.optim.Adam(D.parameters()).state_dict(), "step": step,
             "config": to_dict(cfg), "rng": rng_state(), "classes": []}
    return save_checkpoint(state, out_dir, step=step, keep=1)


def tiny_config(*overrides):
    return load_config(str(BASE), list(overrides))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from vidgan.data.synthetic import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synthetic"), per_class=3, n_frames=12, size=64)


@pytest.fixture(scope="session")
def c3d_pt(tmp_path_factory):
    """A converted-format C3D with He-normal random weights (logits vary with the input)."""
    import torch

    from vidgan.metrics import C3D, save_c3d
    torch.manual_seed(0)
    model = C3D()
    for module in list(model.convs.values()) + list(model.fcs.values()):
        torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        torch.nn.init.normal_(module.bias, std=0.01)
    model.mean_offset.uniform_(8, 48)  # 128 - a mean in [80, 120]
    return save_c3d(model, tmp_path_factory.mktemp("c3d") / "c3d_ucf101.pt")
