import pytest

from vidgan.config import load_config

# A model small enough for CPU tests; the architecture is the real one.
TINY = ["model.resolution=64", "model.n_frames=8", "model.z_dim=8", "model.clstm_ch=8",
        "model.ch=2", "model.dis_ch=2", "train.batch_size=4", "data.num_workers=0",
        "train.log_interval=1", "eval.sample_rows=2", "train.device=cpu"]


def tiny_config(*overrides):
    return load_config("demo.yaml", TINY + list(overrides))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from vidgan.data.synthetic import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synthetic"), per_class=3, n_frames=12, size=64)
