"""What a run writes besides checkpoints: the fixed-z sample grid (mp4, TensorBoard GIF)
and the in-training evaluation of the EMA generator (tgan2 §5)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import torch
from tqdm import tqdm

from vidgan import distributed
from vidgan.checkpoint import BEST_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vidgan.config import score_order
from vidgan.train.logs import Writer, add_gif
from vidgan.video_io import make_grid, to_uint8, write_mp4


class RunOutputs:
    """The sampling and scoring part of ``Trainer``: reads its cfg, G_ema, y_fixed, out_dir,
    step, classifiers, eval_metrics, device and main, and keeps ``real_stats``,
    ``last_scores`` and ``best``."""

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """The fixed-z grid from the EMA generator, uint8 (3, T, H', W').

        The noise comes from its own seeded generator, the same at every call, so sampling
        never moves the training RNG (a resumed run stays bitwise identical); with MCGN the
        memory slots are drawn from the memory as it is now.
        """
        fixed = torch.Generator().manual_seed(self.cfg.train.seed + 1)
        z = self.G_ema.sample_z(self.cfg.eval.sample_rows ** 2, generator=fixed)
        video = self.G_ema(z, self.y_fixed)
        return make_grid(to_uint8(video).cpu(), self.cfg.eval.sample_rows)

    def write_samples(self, writer: Writer) -> Optional[Path]:
        """The fixed-z grid as mp4 and TensorBoard GIF; a failed write (full disk) is a
        warning: samples can be drawn again from a checkpoint, so they never stop the run."""
        grid = self.sample_grid()
        path = self.out_dir / "samples" / f"sample_{self.step:08d}.mp4"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, grid, fps=self.cfg.eval.fps)
            add_gif(writer, "samples/ema_fixed_z", grid, self.step, self.cfg.eval.fps)
        except OSError as err:
            tqdm.write(f"warning: could not write samples {path}: {err}")
            return None
        return path

    def evaluate(self, writer: Writer) -> Dict[str, float]:
        """One repeat of the tgan2 protocol on ``eval.n_samples`` clips of the EMA generator,
        logged as eval/<metric> (eval/modes_covered, ... for the modes metric). Real
        statistics are computed (or read from the cache) once. Under torchrun every process
        renders its share of the clips and gets the scores of all (``evaluate_generator``)."""
        from vidgan.metrics.evaluation import evaluate_generator, load_real_stats

        ev = self.cfg.eval
        if self.real_stats is None:
            with distributed.main_first():  # rank 0 fills the statistics cache
                self.real_stats = load_real_stats(self.cfg, self.classifiers, self.eval_metrics,
                                                  device=self.device, batch_size=ev.batch_size,
                                                  progress=self.main)
        scores = evaluate_generator(self.G_ema, self.classifiers, metrics=self.eval_metrics,
                                    n_samples=ev.n_samples, batch_size=ev.batch_size,
                                    device=self.device, seed=self.cfg.train.seed + self.step,
                                    real_stats=self.real_stats,
                                    n_frames=self.cfg.model.n_frames)
        self.last_scores = (self.step, scores)
        for name, value in scores.items():
            writer.add_scalar(f"eval/{name}", value, self.step)
        if self.main:
            tqdm.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}"
                                                     for k, v in scores.items()))
        return scores

    def best_to_resume(self, restored: Optional[Dict]) -> Optional[Dict]:
        """The best record a resumed run compares against: the checkpoint's, or best.pt's
        when that one is better. A run resumed from a checkpoint older than best.pt (its
        newest was damaged, or --resume-from) replays the steps after it, on a GPU not
        bitwise: it must not overwrite a better best.pt. A record of another metric than
        eval.keep_best names now is no comparison."""
        name = self.cfg.eval.keep_best
        if not name:
            return restored
        if restored is not None and restored.get("metric") != name:
            restored = None
        path = self.out_dir / "checkpoints" / BEST_NAME
        if not path.is_file():
            return restored
        try:
            on_disk = load_checkpoint(path).get("best")
        except (CheckpointError, OSError) as err:
            tqdm.write(f"warning: {err}; the best so far is the resumed checkpoint's")
            return restored
        if on_disk is None or on_disk.get("metric") != name:
            return restored
        if restored is None or is_better(name, on_disk["value"], restored["value"]):
            return on_disk
        return restored

    def keep_best(self, scores: Dict[str, float]) -> Optional[Path]:
        """eval.keep_best: when the in-training score named there beats every earlier one,
        the run's state goes to checkpoints/best.pt (with ``best``: metric, value, step).
        Single IS readings vary by more than the differences between models, so the
        latent-ODE paper scores every 1000 iterations and reports the best (Gordon & Parde
        §4); ``--resume`` never picks best.pt, and the best so far survives a resume."""
        name = self.cfg.eval.keep_best
        if not name or name not in scores:
            return None
        value = float(scores[name])
        if self.best is not None and not is_better(name, value, self.best["value"]):
            return None
        if value != value:  # NaN: never the best
            return None
        self.best = {"metric": name, "value": value, "step": self.step}
        path = None
        if self.main:
            path = save_checkpoint(self.state_dict(), self.out_dir, self.step, keep=None,
                                   name=BEST_NAME)
            tqdm.write(f"step {self.step}: best {name} so far ({value:.4g}): {path}")
        distributed.barrier()
        return path


def is_better(name: str, value: float, best: float) -> bool:
    """Whether score ``name`` = ``value`` beats ``best`` (``score_order``: lower, higher, or a
    ratio nearer 1, compared in log space so that 2 and 1/2 are as far from 1)."""
    order = score_order(name)
    if order == "lower":
        return value < best
    if order == "one":
        return value > 0 and (best <= 0 or abs(math.log(value)) < abs(math.log(best)))
    return value > best
