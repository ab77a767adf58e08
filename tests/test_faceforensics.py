"""data_prep/faceforensics.py (face box from the mask, stable square crop) and the dataset."""
import decord
import numpy as np
import pytest
import torch

from data_prep.faceforensics import crop_resize, face_boxes, prepare, stable_square_box
from tests.conftest import tiny_config
from vidgan.data import build_dataset
from vidgan.video_io import write_mp4

H, W, T = 96, 128, 12


def square_masks(tops, lefts, side, invert=False):
    """uint8 (T, H, W, 3): a face square per frame; white on black (or black on white)."""
    m = np.zeros((len(tops), H, W, 3), np.uint8)
    for i, (t, l) in enumerate(zip(tops, lefts)):  # a few test frames
        m[i, t:t + side, l:l + side] = 255
    return 255 - m if invert else m


@pytest.mark.parametrize("invert", [False, True])
def test_face_boxes_from_either_mask_polarity(invert):
    masks = square_masks([10, 20], [30, 40], 25, invert)
    masks[1] = masks[1, 0, 0]  # second frame: no face
    boxes = face_boxes(masks)
    assert boxes[0].tolist() == [10, 34, 30, 54] and np.isnan(boxes[1]).all()


def test_stable_box_is_square_inside_and_covers_every_frame():
    tops, lefts = np.array([5, 8, 11, 14]), np.array([90, 95, 100, 104])  # drifts to the edge
    boxes = face_boxes(square_masks(tops, lefts, 20))
    y0, x0, side = stable_square_box(boxes, H, W, margin=0.15)
    union = 104 + 20 - 90  # columns 90..123
    assert side == round(union * 1.3) and 0 <= y0 and y0 + side <= H and x0 >= 0
    assert x0 + side == W  # moved inside rather than shrunk
    for t, l in zip(tops, lefts):  # every frame's face inside the box
        assert y0 <= t and t + 20 <= y0 + side and x0 <= l and l + 20 <= x0 + side
    big = stable_square_box(face_boxes(square_masks([0], [0], 90)), H, W, margin=0.5)
    assert big[2] == H  # never more than the shorter side
    with pytest.raises(ValueError, match="no face"):
        stable_square_box(np.full((3, 4), np.nan), H, W)


def test_crop_resize_shapes_and_values():
    frames = np.zeros((3, H, W, 3), np.uint8)
    frames[:, 20:60, 40:80] = 200
    out = crop_resize(frames, (20, 40, 40), 64)
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.uint8
    assert (out.float() - 200).abs().max() <= 1  # the box holds only the face


def write_pair(root, split, name, tops, lefts, side=30, invert=False):
    rng = np.random.default_rng(len(name))
    video = rng.integers(0, 60, (T, H, W, 3), dtype=np.uint8)
    for i, (t, l) in enumerate(zip(tops, lefts)):
        video[i, t:t + side, l:l + side] = 220  # the "face"
    for kind, frames in (("original", video), ("mask", square_masks(tops, lefts, side, invert))):
        (root / split / kind).mkdir(parents=True, exist_ok=True)
        write_mp4(root / split / kind / f"{name}.mp4",
                  torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous(), fps=25)


def test_prepare_writes_face_clips_the_dataset_reads(tmp_path):
    src, out = tmp_path / "ff", tmp_path / "clips"
    drift = np.arange(T)
    write_pair(src, "train", "a", 20 + drift, 30 + drift)
    write_pair(src, "train", "b", 40 + 0 * drift, 60 + drift, invert=True)
    write_pair(src, "test", "c", 30 + 0 * drift, 50 + 0 * drift)
    write_pair(src, "val", "no_face", [200] * T, [200] * T)  # square off-frame: empty masks
    skipped = prepare(src, out, size=64, margin=0.0, progress=False)
    assert [(v.name, r) for v, r in skipped] == [("no_face.mp4", "the mask shows no face in "
                                                                 "any frame")]
    reader = decord.VideoReader(str(out / "train" / "a.mp4"))
    assert len(reader) == T and reader[0].shape == (64, 64, 3)
    assert reader.get_avg_fps() == pytest.approx(25)
    # margin 0, face side 30, drift 11 px: the box is 41 px and holds the face in every frame
    centre = reader.get_batch(list(range(T))).asnumpy()[:, 24:40, 24:40].astype(float)
    assert centre.mean() > 180
    ds = build_dataset(tiny_config("data.dataset=faceforensics", f"data.root={out}"),
                       progress=False)
    assert sorted(ds.files) == ["train/a.mp4", "train/b.mp4"] and ds.labels == [0, 0]
    assert ds[(0, 0)][0].shape == (3, 8, 64, 64)
    assert build_dataset(tiny_config("data.dataset=faceforensics", f"data.root={out}",
                                     "data.subset=test"), progress=False).files == ["test/c.mp4"]
    assert prepare(src, out, size=64, progress=False) == [(src / "val/original/no_face.mp4",
                                                           "the mask shows no face in any frame")]
