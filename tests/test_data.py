"""Datasets (ucf101 / folder / faceforensics / synthetic), clip sampling, bad files, loader."""
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.fake_ucf101 import BAD_KINDS, CLASSES, add_bad_files, write_avi, write_ucf101_tree
from vidgan.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from tests.conftest import tiny_config
from vidgan.config import ConfigError
from vidgan.data import (ClipDecodeError, ClipGeometry, ClipSampler, DataError, build_dataset,
                         build_loader, collate_clips, manifest_path, normalize)
from vidgan.data.clips import FAILURES

SIZE = (48, 64)  # a 4:3 frame like UCF101's 240x320, small enough for the CPU
N_SRC = 12  # frames per generated video


def ucf_config(root, *overrides):
    return tiny_config("data.dataset=ucf101", f"data.root={root}", *overrides)


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory):
    """Both archive layouts, 4 classes x 3 groups, one clip each (not modified by tests)."""
    roots = {}
    for layout in ("folders", "flat"):
        roots[layout] = write_ucf101_tree(tmp_path_factory.mktemp(layout), groups=3, clips=1,
                                          n_frames=N_SRC, size=SIZE, layout=layout)
    return roots


@pytest.fixture
def bad_tree(tmp_path):
    root = write_ucf101_tree(tmp_path / "ucf", groups=3, clips=1, n_frames=N_SRC, size=SIZE)
    return root, add_bad_files(root)


# ----------------------------------------------------------------------------- ucf101
@pytest.mark.parametrize("layout", ["folders", "flat"])
@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_split_membership_and_labels(ucf_tree, layout, split):
    root = ucf_tree[layout]
    sets = {}
    for subset in ("train", "test", "all"):
        ds = build_dataset(ucf_config(root, f"data.split={split}"), subset, progress=False)
        assert ds.classes == list(CLASSES)  # classInd order
        # the class named in each file name is the label's class
        assert all(ds.classes[l] == f.split("/")[-1].split("_")[1]
                   for f, l in zip(ds.files, ds.labels))
        sets[subset] = {f.split("/")[-1] for f in ds.files}
    groups = {s: {int(n.split("_g")[1][:2]) for n in names} for s, names in sets.items()}
    assert groups["test"] == {split} and groups["train"] == {1, 2, 3} - {split}
    assert sets["train"] | sets["test"] == sets["all"] and not sets["train"] & sets["test"]
    assert len(sets["all"]) == len(CLASSES) * 3


def test_ucf101_missing_lists_is_clear_error(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(FileNotFoundError, match="classInd.txt is missing"):
        build_dataset(ucf_config(tmp_path), progress=False)


def test_ucf101_config_checks():
    with pytest.raises(ConfigError, match="data.split=4"):
        tiny_config("data.dataset=ucf101", "data.split=4")
    with pytest.raises(ConfigError, match="data.subset='val'"):
        tiny_config("data.dataset=ucf101", "data.subset=val")
    with pytest.raises(ConfigError, match="data.resize"):
        tiny_config("data.resize=[32,64]")


# ------------------------------------------------------------------------- bad files
def test_index_excludes_every_bad_kind_with_a_reason(bad_tree):
    root, bad = bad_tree
    ds = build_dataset(ucf_config(root, "data.max_bad_fraction=0.5"), progress=False)
    reasons = dict(ds.excluded)
    assert set(reasons) == set(bad)  # exactly the bad files, every one of them
    kinds = {bad[f]: r.split(":")[0] for f, r in reasons.items()}
    assert kinds == {"empty": "empty file", "not_video": "not a video",
                     "truncated": "truncated", "too_short": "too short",
                     "missing": "missing", "odd_size": "odd size"}
    assert len(ds) == 8 and not set(bad) & set(ds.files)
    assert len(BAD_KINDS) == len(kinds)


def test_too_many_bad_files_stop_with_their_names(bad_tree):
    root, bad = bad_tree
    with pytest.raises(DataError, match="5 of 14 videos are unusable") as err:
        build_dataset(ucf_config(root), progress=False)  # default max_bad_fraction 0.05
    for entry, kind in bad.items():
        assert (entry in str(err.value)) == (kind != "too_short")  # too short is not "bad"


def test_manifest_is_read_not_reprobed_and_invalidated_by_changes(ucf_tree, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf_tree["folders"], root)
    cfg = ucf_config(root)
    rel = build_dataset(cfg, progress=False).files[0]
    path = manifest_path(cfg)
    data = json.loads(path.read_text())
    assert data["entries"][rel]["frames"] == N_SRC
    assert data["entries"][rel]["label"] == rel.split("/")[0]
    assert (data["entries"][rel]["height"], data["entries"][rel]["width"]) == SIZE
    # A manifest entry that still matches the file is trusted: a (fake) frame count of 4 makes
    # the video too short, which only the manifest can have told the dataset.
    data["entries"][rel]["frames"] = 4
    path.write_text(json.dumps(data))
    assert rel in dict(build_dataset(cfg, progress=False).excluded)
    # Touching the file invalidates its entry: it is probed again and usable again.
    st = os.stat(root / rel)
    os.utime(root / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert rel in build_dataset(cfg, progress=False).files
    assert json.loads(path.read_text())["entries"][rel]["frames"] == N_SRC


def _probe_aborting_on(path, label=""):
    """probe_video, except that it aborts its process on the file named in
    VIDGAN_TEST_ABORT: what libavcodec does on some corrupt streams (a failed assertion)."""
    from vidgan.data import manifest
    if Path(path).name == os.environ["VIDGAN_TEST_ABORT"]:
        import faulthandler
        faulthandler.disable()  # pytest's handler would print the dying child's stack
        os.abort()
    return manifest._probe_video_unpatched(path, label)


def test_a_probe_that_aborts_its_process_marks_only_that_file_damaged(ucf_tree, tmp_path,
                                                                       monkeypatch):
    from vidgan.data import manifest
    root = ucf_tree["folders"]
    files = {str(p.relative_to(root)): p.parent.name for p in sorted(root.rglob("*.avi"))}
    bad = sorted(files)[1]
    monkeypatch.setenv("VIDGAN_TEST_ABORT", Path(bad).name)
    monkeypatch.setattr(manifest, "_probe_video_unpatched", manifest.probe_video, raising=False)
    monkeypatch.setattr(manifest, "probe_video", _probe_aborting_on)
    entries = manifest.index_videos(root, files, tmp_path / "manifest.json", workers=2,
                                    progress=False).entries
    assert entries[bad].error == ("damaged: the decoder crashed the process that read it "
                                  "(signal 6)")
    assert all(not entries[rel].error and entries[rel].frames == N_SRC
               for rel in files if rel != bad)


def corrupt_keeping_stat(path):
    """Overwrite with garbage of the same size and mtime: the manifest still trusts it."""
    st = os.stat(path)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, st.st_size, np.uint8).tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_decode_failure_is_skipped_and_logged(ucf_tree, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf_tree["folders"], root)
    ds = build_dataset(ucf_config(root), progress=False)
    bad = ds.files.index("YoYo/v_YoYo_g02_c01.avi")
    corrupt_keeping_stat(root / ds.files[bad])
    FAILURES.clear()
    video, label, skipped = collate_clips([ds[(bad, 7)], ds[(0, 7)]])
    assert video.shape == (2, 3, 8, 64, 64)
    assert [f for f, _ in skipped] == [ds.files[bad]] and not FAILURES
    # the replacement was drawn from the clip's own seed: deterministic
    again = ds[(bad, 7)]
    assert torch.equal(again[0], video[0]) and again[1] == label[0]


def test_all_attempts_failing_names_the_files(ucf_tree, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf_tree["folders"], root)
    ds = build_dataset(ucf_config(root), progress=False)
    for f in ds.files:
        corrupt_keeping_stat(root / f)
    with pytest.raises(ClipDecodeError, match="10 clips in a row failed") as err:
        ds[(0, 0)]
    assert ds.files[0] in str(err.value)
    FAILURES.clear()


# ----------------------------------------------------------------- clip sampling
def test_crop_offsets_follow_the_official_margin_rule():
    """192x256 (UCF101 after resize): training x0 in [4, 60], y0 = 0; evaluation x0 = 32."""
    g = ClipGeometry(16, 192, augment=True)
    rng = np.random.default_rng(0)
    offsets = [g.crop_offset(192, 256, rng) for _ in range(2000)]
    assert {top for top, _ in offsets} == {0}
    assert {left for _, left in offsets} == set(range(4, 61))
    assert ClipGeometry(16, 192, augment=False).crop_offset(192, 256, rng) == (0, 32)
    assert g.decode_size(240, 320) == (192, 256)  # aspect kept, shorter side = resolution
    assert g.decode_size(320, 240) == (256, 192)
    assert ClipGeometry(16, 192, resize=(200, 300)).decode_size(240, 320) == (200, 300)


def test_frame_indices_cover_every_start_and_respect_stride():
    g = ClipGeometry(4, 64, frame_stride=2)  # span 7
    rng = np.random.default_rng(0)
    starts = {g.frame_indices(10, rng)[0] for _ in range(500)}
    assert starts == {0, 1, 2, 3}
    assert g.frame_indices(7, rng) == [0, 2, 4, 6]


def static_asymmetric_video(path, height=48, width=64, frames=10):
    """Left half dark, right half bright, identical frames: a flip is visible."""
    x = np.zeros((frames, height, width, 3), np.uint8)
    x[:, :, width // 2:] = 230
    write_avi(path, x)


def test_flip_and_crop_are_deterministic_per_seed(tmp_path):
    static_asymmetric_video(tmp_path / "a.avi")
    cfg = tiny_config("data.dataset=folder", f"data.root={tmp_path}")
    train = build_dataset(cfg, "train", progress=False)
    flipped = []
    for seed in range(40):
        video, label = train[(0, seed)]
        assert video.shape == (3, 8, 64, 64) and label == 0
        assert torch.equal(video, train[(0, seed)][0])
        left, right = video[..., :24].float().mean(), video[..., -24:].float().mean()
        flipped.append(bool(left > right))
    assert 0.25 < np.mean(flipped) < 0.75
    evaluation = build_dataset(cfg, "test", progress=False)  # centre crop, never flipped
    clips = [evaluation[(0, s)][0] for s in range(5)]
    assert all(torch.equal(c, clips[0]) for c in clips)
    # 48x64 -> 64x85: centre crop starts at column 10, so the edge (col 42.7) lands near 32
    row = clips[0][0, 0, 32].float()
    assert row[:28].max() < 40 and row[36:].min() > 200


WRITE_VIDEO = """
import sys, av, numpy as np
from data_prep.fake_ucf101 import moving_frames
path, fmt, codec, seed = sys.argv[1:]
with av.open(path, "w", format=fmt) as c:
    s = c.add_stream(codec, rate=8)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    for frame in moving_frames(10, 64, 64, np.random.default_rng(int(seed))):
        c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    c.mux(s.encode())
"""


def test_folder_dataset_labels_and_extensions(tmp_path):
    # Written in a fresh interpreter: once decord is imported, its bundled FFmpeg makes
    # PyAV's libvpx encoder fail to open (decoding is unaffected).
    for i, (ext, fmt, codec) in enumerate([("mp4", "mp4", "libx264"), ("avi", "avi", "mpeg4"),
                                           ("mkv", "matroska", "libx264"),
                                           ("mov", "mov", "libx264"),
                                           ("webm", "webm", "libvpx-vp9")]):
        folder = tmp_path / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", WRITE_VIDEO, str(folder / f"clip{i}.{ext}"), fmt,
                        codec, str(i)], check=True, cwd=Path(__file__).parent.parent)
    ds = build_dataset(tiny_config("data.dataset=folder", f"data.root={tmp_path}"),
                       progress=False)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 5 and not ds.excluded
    assert [ds.classes[l] for l in ds.labels] == [f.split("/")[0] for f in ds.files]
    assert {f.rsplit(".", 1)[1] for f in ds.files} == {"mp4", "avi", "mkv", "mov", "webm"}
    assert all(ds[(i, 0)][0].shape == (3, 8, 64, 64) for i in range(len(ds)))


def test_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no videos"):
        build_dataset(tiny_config("data.dataset=folder", f"data.root={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        build_dataset(tiny_config("data.dataset=folder", f"data.root={tmp_path / 'nope'}"))


def test_synthetic_dataset_through_the_same_path(synthetic_root):
    ds = build_dataset(tiny_config(f"data.root={synthetic_root}"), progress=False)
    assert ds.classes == sorted(SYNTHETIC_CLASSES) and len(ds) == 3 * len(SYNTHETIC_CLASSES)
    assert manifest_path(tiny_config(f"data.root={synthetic_root}")).is_file()
    video, label = ds[(0, 1)]
    assert video.dtype == torch.uint8 and video.shape == (3, 8, 64, 64)
    assert ds.classes[label] == ds.files[0].split("/")[0]
    # the demo data has motion: consecutive frames differ
    diffs = (video[:, 1:].float() - video[:, :-1].float()).abs().mean(dim=(0, 2, 3))
    assert (diffs > 0.5).all()


# -------------------------------------------------------------------------- loader
def test_two_workers_give_the_same_stream_as_none(ucf_tree):
    root = ucf_tree["folders"]
    batches = {}
    for workers in (0, 2):
        cfg = ucf_config(root, f"data.num_workers={workers}", "train.batch_size=2")
        ds = build_dataset(cfg, progress=False)
        loader = iter(build_loader(ds, cfg))
        batches[workers] = [next(loader) for _ in range(5)]  # > one epoch of 8 clips
    for (v0, y0, s0), (v2, y2, s2) in zip(batches[0], batches[2]):
        assert torch.equal(v0, v2) and torch.equal(y0, y2) and s0 == s2 == []


def test_sampler_resumes_mid_stream_and_covers_each_epoch():
    full = list(itertools.islice(iter(ClipSampler(7, seed=3)), 40))
    tail = list(itertools.islice(iter(ClipSampler(7, seed=3, start=17)), 23))
    assert tail == full[17:]
    for epoch in range(5):
        assert sorted(i for i, _ in full[epoch * 7:(epoch + 1) * 7]) == list(range(7))
    assert len({s for _, s in full}) == 40  # every clip gets its own seed


def test_normalize_maps_uint8_to_unit_interval():
    x = torch.tensor([0, 255], dtype=torch.uint8)
    assert torch.equal(normalize(x), torch.tensor([-1.0, 1.0]))


def test_runs_writing_one_generated_dataset_take_turns(tmp_path):
    """Two runs started together on a fresh checkout: the second waits for the first's write
    (here: for the lock this test holds) instead of writing the same files at once."""
    import fcntl
    import threading
    import time

    from vidgan.data import WRITE_LOCK, list_videos

    root = tmp_path / "synthetic"
    root.mkdir()
    cfg = tiny_config("data.dataset=synthetic", f"data.root={root}",
                      "data.synthetic_videos_per_class=2", "data.synthetic_frames=8")
    found = []
    with open(root / WRITE_LOCK, "w") as lock:  # flock: a second open() conflicts, even here
        fcntl.flock(lock, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: found.append(list_videos(cfg, "train")))
        writer.start()
        t0 = time.perf_counter()
        list_videos(tiny_config("data.dataset=synthetic", f"data.root={tmp_path / 'other'}",
                                "data.synthetic_videos_per_class=2", "data.synthetic_frames=8"),
                    "train")  # what the same write takes unhindered
        time.sleep(2 * (time.perf_counter() - t0) + 0.5)
        assert writer.is_alive() and not list(root.glob("*/*.mp4"))
    writer.join(timeout=120)
    assert len(found[0].files) == 8 and (root / "COMPLETE").is_file()
