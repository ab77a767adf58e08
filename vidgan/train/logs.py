"""What a run logs: TensorBoard scalars (averaged over processes), the GIF of the fixed-z grid,
and the text summary of the data; rank 0 writes, the other processes log to a NullWriter."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch
from torch.utils.tensorboard import SummaryWriter

from vidgan import distributed
from vidgan.train.loss import PhaseResult
from vidgan.video_io import gif_bytes


class NullWriter:
    """What ranks other than 0 log to: nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def add_text(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


Writer = Union[SummaryWriter, NullWriter]


def open_writer(out_dir: Path, step: int, main: bool) -> Writer:
    """The run's TensorBoard log (``<out_dir>/tb``) on rank 0, events after ``step`` dropped
    (a resumed run overwrites what its crashed predecessor logged past the checkpoint). The
    checkpoint of ``step`` is written after that step's logs and scores, so those stay:
    TensorBoard purges from ``purge_step`` on, hence ``step + 1``."""
    return SummaryWriter(str(out_dir / "tb"), purge_step=step + 1) if main else NullWriter()


def phase_scalars(result: PhaseResult) -> Dict[str, torch.Tensor]:
    """A phase's named terms (loss/D_main, loss/D_r1, loss/G_main, heads' terms), its stats
    (loss/R1 unweighted, heads' diagnostics) and each head's mean logit per side
    (logits/real_L4, ...), detached."""
    out = {f"loss/{k}": v.detach() for k, v in result.terms.items()}
    out.update({k: v.detach() for k, v in result.stats.items()})
    for side, logits in result.logits.items():
        out.update({f"logits/{side}_{head}": v.detach().float().mean()
                    for head, v in logits.items()})
    return out


def averaged(metrics: Dict, device: torch.device) -> Dict[str, float]:
    """Logged scalars as floats, averaged over processes (one all-reduce under torchrun)."""
    names = list(metrics)
    values = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float64).to(device)
                          for k in names])
    return dict(zip(names, distributed.mean_over_ranks(values).tolist()))


def add_scalars(writer: Writer, values: Dict[str, float], step: int) -> None:
    for k, v in values.items():
        writer.add_scalar(k, v, step)


def add_gif(writer: SummaryWriter, tag: str, video: torch.Tensor, step: int, fps: int) -> None:
    """Log uint8 (3, T, H, W) as an animated GIF image summary.

    SummaryWriter.add_video needs moviepy; TensorBoard itself plays GIF-encoded images, so we
    encode with Pillow (a torchvision dependency) and hand the summary proto to the writer's
    event file (``SummaryWriter.file_writer``).
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=video.shape[2], width=video.shape[3], colorspace=3,
                          encoded_image_string=gif_bytes(video, fps))
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
