from pathlib import Path

import pytest

from vidgan.config import ConfigError, config_from_dict, load_config, to_dict

PAPER_CONFIGS = ["ucf101_st4.yaml", "ucf101_st2.yaml", "ucf101_naive.yaml",
                 "faceforensics_st2.yaml", "demo.yaml"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.model.resolution % 64 == 0


def test_paper_hyperparameters():
    st4, st2, naive, ff = (load_config(n) for n in PAPER_CONFIGS[:4])
    assert st4.model.subsample == [4, 4, 4] and st2.model.subsample == [2, 2, 2]
    assert naive.model.subsample == [1, 1, 1]
    assert ff.model.resolution == 256
    for cfg in (st4, st2, naive, ff):  # tgan2 §5.2
        assert cfg.train.lr == 1e-4 and cfg.train.betas == [0.0, 0.9]
        assert cfg.train.batch_size == 32 and cfg.model.z_dim == 256
        assert cfg.loss.r1_weight == 0.5 and cfg.train.n_dis == 1
        assert cfg.train.lr_decay_iterations == 100000


def test_name_without_extension_and_overrides():
    cfg = load_config("ucf101_st4", ["train.batch_size=8", "model.subsample=[2,1,1]"])
    assert cfg.train.batch_size == 8 and cfg.model.subsample == [2, 1, 1]


def test_roundtrip_through_dict():
    cfg = load_config("ucf101_st2.yaml")
    assert config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, needle", [
    (["model.resolutoin=64"], "model.resolutoin"),
    (["nosuch.key=1"], "nosuch"),
    (["model.resolution=abc"], "model.resolution"),
    (["model.subsample=[2,0,2]"], "model.subsample[1]"),
    (["model.resolution=100"], "model.resolution=100"),
    (["model.n_frames=0"], "model.n_frames=0"),
    (["model.subsample=[2,2]"], "model.subsample"),
    (["loss.combine=max"], "loss.combine"),
    (["model.dis_levels=[1,2]"], "model.dis_levels"),
    (["train.batch_size"], "key=value"),
    (["train.collective_timeout=0"], "train.collective_timeout=0"),
    (["train.main_work_timeout=-1"], "train.main_work_timeout=-1"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config("ucf101_st4.yaml", override)
    assert needle in str(err.value)


def test_error_lists_allowed_values():
    with pytest.raises(ConfigError, match="multiple of 64"):
        load_config("ucf101_st4.yaml", ["model.resolution=96"])
    with pytest.raises(ConfigError, match="allowed keys in model: family, resolution"):
        load_config("ucf101_st4.yaml", ["model.bogus=1"])
    with pytest.raises(ConfigError, match="sum, mean"):
        load_config("ucf101_st4.yaml", ["loss.combine=max"])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  itertions: 5\n")
    with pytest.raises(ConfigError, match="train.itertions"):
        load_config(str(path))


def test_missing_config_lists_available():
    with pytest.raises(ConfigError, match="ucf101_st4.yaml"):
        load_config("no_such_config.yaml")


def test_base_chain(tmp_path):
    (tmp_path / "parent.yaml").write_text("model:\n  resolution: 128\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  seed: 7\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    assert cfg.model.resolution == 128 and cfg.train.seed == 7


def test_temporal_and_frame_discriminator_choices():
    cfg = load_config("demo_mocogan.yaml")
    assert (cfg.model.temporal, cfg.model.content_dim, cfg.model.motion_dim) == ("gru", 50, 10)
    assert load_config("ucf101_3d2d.yaml").model.frame_discriminator == "resnet2d"
    for bad, key in (("model.temporal=lstm", "model.temporal"),
                     ("model.frame_discriminator=3d", "model.frame_discriminator"),
                     ("model.motion_dim=0", "model.motion_dim")):
        with pytest.raises(ConfigError, match=key):
            load_config("demo.yaml", [bad])


def test_demo_squares_is_the_measured_wide_run():
    """docs/BENCHMARKS.md's "wide" runs are demo.yaml with model.ch=32 model.dis_ch=16 for
    3000 iterations; demo_squares.yaml must stay that experiment (only where it writes and how
    often it logs may differ)."""
    squares = to_dict(load_config("demo_squares.yaml"))
    wide = to_dict(load_config("demo.yaml", ["model.ch=32", "model.dis_ch=16",
                                             "train.iterations=3000"]))
    logging = {("train", "out_dir"), ("train", "checkpoint_interval"), ("eval", "interval"),
               ("eval", "sample_interval")}
    differ = {(section, key) for section in wide for key in wide[section]
              if squares[section][key] != wide[section][key]}
    assert differ == logging


@pytest.mark.parametrize("overrides, key, variant", [
    (["model.temporal=gru", "model.z_dim=64"], "model.z_dim", "model.temporal=gru"),
    (["model.content_dim=20"], "model.content_dim", "model.temporal=convlstm"),
    (["model.memory.read=per_label"], "model.memory.read", "model.frame_discriminator=none"),
    (["loss.memory_weight=2"], "loss.memory_weight", "model.frame_discriminator=none"),
    (["model.frame_level=4"], "model.frame_level", "model.frame_discriminator=none"),
    (["data.dataset=folder", "data.subset=test"], "data.subset", "data.dataset=folder"),
    (["data.split=2"], "data.split", "data.dataset=synthetic"),
    (["data.dataset=ucf101", "data.synthetic_frames=8"], "data.synthetic_frames",
     "data.dataset=ucf101"),
])
def test_a_key_the_variant_does_not_read_is_an_error(overrides, key, variant):
    with pytest.raises(ConfigError) as err:
        load_config("tests/tiny.yaml", overrides)
    assert f"'{key}'" in str(err.value) and variant in str(err.value)
    assert "override" in str(err.value)


def test_unused_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "gru.yaml"
    path.write_text("model:\n  temporal: gru\n  z_dim: 32\n")
    with pytest.raises(ConfigError, match=r"gru\.yaml: 'model\.z_dim' is read only with "
                                          r"model\.temporal=convlstm"):
        load_config(str(path))


def test_keys_of_a_base_or_of_an_overridden_variant_are_not_checked(tmp_path):
    """A file cannot unset its base's keys, and an override that picks another variant
    leaves the file's keys for the old one behind: both load."""
    (tmp_path / "child.yaml").write_text(
        f"base: {load_config.__globals__['CONFIG_DIR'] / 'ucf101_st4.yaml'}\n"
        "model:\n  temporal: gru\n")
    assert load_config(str(tmp_path / "child.yaml")).model.temporal == "gru"
    cfg = load_config("tests/tiny.yaml", ["model.temporal=gru"])  # tiny.yaml sets z_dim
    assert cfg.model.temporal == "gru" and cfg.model.z_dim == 8


def test_removed_key_is_an_error_in_a_config_and_a_warning_in_a_checkpoint():
    with pytest.raises(ConfigError, match="'model.discriminator' is no longer a setting"):
        load_config("tests/tiny.yaml", ["model.discriminator=multi3d"])
    stored = to_dict(load_config("tests/tiny.yaml"))
    stored["model"]["discriminator"] = "multi3d"  # what every checkpoint before 0.3 holds
    with pytest.warns(UserWarning, match="model.discriminator=multi3d is no longer a setting"):
        cfg = config_from_dict(stored)
    assert cfg == load_config("tests/tiny.yaml")
    stored["model"]["discriminator"] = "single3d"
    with pytest.raises(ConfigError, match="model.discriminator='single3d'"):
        config_from_dict(stored)


def _field_comment(cls_name: str, field: str) -> str:
    """The comment lines right above ``field`` in ``cls_name``'s body in vidgan/config.py,
    and the comment on its own line."""
    import inspect
    import vidgan.config as config
    lines = inspect.getsource(getattr(config, cls_name)).splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{field}:"))
    text = [lines[at].split("#", 1)[1] if "#" in lines[at] else ""]
    i = at - 1
    while i > 0 and lines[i].strip().startswith("#"):
        text.append(lines[i])
        i -= 1
    return "\n".join(text)


def test_every_allowed_value_is_explained_beside_its_field():
    """CHOICES is the one list of allowed values (validate and the modules read it); the
    comment of each field must name every one of them, so a new value cannot go
    undocumented."""
    import re
    from vidgan.config import CHOICES
    classes = {"model": "ModelConfig", "model.memory": "MemoryConfig", "model.de": "DEConfig",
               "data": "DataConfig",
               "loss": "LossConfig", "train": "TrainConfig", "eval": "EvalConfig"}
    for key, allowed in CHOICES.items():
        section, field = key.rsplit(".", 1)
        comment = _field_comment(classes[section], field)
        missing = [v for v in allowed if not re.search(rf"\b{re.escape(v)}\b", comment)]
        assert not missing, f"{key}: the comment beside the field does not name {missing}"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "configs")
                                        .glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    """No shipped config sets a key its variant does not read, or any other bad value."""
    load_config(str(path))
