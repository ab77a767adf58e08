"""Video tensors <-> files: float [-1, 1] to uint8, sample grids, mp4 (PyAV) and GIF bytes."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (..., 3, T, H, W) -> uint8 with rounding and clipping."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def make_grid(videos: torch.Tensor, rows: int, pad: int = 1) -> torch.Tensor:
    """(N, 3, T, H, W) -> one (3, T, rows*(H+pad)-pad, cols*(W+pad)-pad) video, row-major."""
    n, c, t, h, w = videos.shape
    cols = -(-n // rows)
    grid = videos.new_zeros(c, t, rows * (h + pad) - pad, cols * (w + pad) - pad)
    for i in range(n):  # a handful of tiles; each copy is a whole clip
        r, k = divmod(i, cols)
        grid[:, :, r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = videos[i]
    return grid


def _frames_hwc(video: torch.Tensor) -> np.ndarray:
    """uint8 (3, T, H, W) -> contiguous (T, H, W, 3) numpy."""
    if video.dtype != torch.uint8 or video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a uint8 video of shape (3, T, H, W), got {video.dtype} "
                         f"{tuple(video.shape)}")
    return np.ascontiguousarray(video.permute(1, 2, 3, 0).cpu().numpy())


def write_mp4(path: str | os.PathLike, video: torch.Tensor, fps: int = 8, crf: int = 10) -> None:
    """Write uint8 (3, T, H, W) as H.264/yuv420p mp4 (odd sizes padded by one pixel).

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    import av

    frames = _frames_hwc(video)
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2  # yuv420p needs even sizes
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w + pw, h + ph
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def gif_bytes(video: torch.Tensor, fps: int = 8) -> bytes:
    """uint8 (3, T, H, W) -> animated GIF (what TensorBoard's image tab plays)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in _frames_hwc(video)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def frame_strip(video: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(3, T, H, W) -> one (3, H, T*(W+pad)-pad) image: the frames side by side, left to right."""
    c, t, h, w = video.shape
    padded = torch.nn.functional.pad(video, (0, pad))  # zero (black) gap right of every frame
    return padded.permute(0, 2, 1, 3).reshape(c, h, t * (w + pad))[:, :, :t * (w + pad) - pad]


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def write_png(path: str | os.PathLike, image: torch.Tensor) -> None:
    """Write a uint8 (3, H, W) image as PNG (temporary name, then renamed)."""
    from PIL import Image

    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 image of shape (3, H, W), got {image.dtype} "
                         f"{tuple(image.shape)}")
    array = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    _replace_atomically(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_gif(path: str | os.PathLike, video: torch.Tensor, fps: int = 8) -> None:
    """Write uint8 (3, T, H, W) as an animated GIF (temporary name, then renamed)."""
    data = gif_bytes(video, fps)
    _replace_atomically(Path(path), lambda tmp: tmp.write_bytes(data))
