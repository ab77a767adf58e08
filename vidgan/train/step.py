"""The updates of one training iteration (tgan2 §4, Algorithm 1 of TGAN): one G step and
``train.n_dis`` D steps in ``train.step_order``, the critic's constraint, the EMA, and the
bookkeeping of skipped clips and non-finite losses. ``Trainer`` (vidgan/train/loop.py) is the
run around it."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from tqdm import tqdm

from vidgan import distributed
from vidgan.data import DataError, bad_files_error, normalize
from vidgan.train.constraints import constrain_discriminator
from vidgan.train.ema import update_ema
from vidgan.train.logs import phase_scalars
from vidgan.train.loss import Fakes, PhaseResult
from vidgan.train.optim import lazy_r1_ratio, linear_decay


class TrainingStep:
    """The per-iteration part of ``Trainer``: it reads the trainer's cfg, G, D, G_ema, loss,
    opt_G, opt_D, batch, device, amp, r1_interval, step and the data counters, and updates
    them.

    ``Batches``, the loader's iterator held alone, lives here too, as what a step draws from.
    """

    def _set_lr(self) -> float:
        lr = linear_decay(self.cfg.train.lr, self.step, self.cfg.train.lr_decay_iterations)
        for opt, scale in ((self.opt_G, 1.0), (self.opt_D, lazy_r1_ratio(self.r1_interval))):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        return lr

    def record_skips(self, skipped) -> None:
        """Count clips the loader skipped (another video was drawn in their place)."""
        for path, reason in skipped:
            self.skipped_clips += 1
            if path not in self.bad_files:
                self.bad_files[path] = reason
                tqdm.write(f"warning: skipped {path}: {reason}")

    def too_many_bad_files(self) -> Optional[DataError]:
        limit = self.cfg.data.max_bad_fraction
        if len(self.bad_files) > limit * len(self.dataset):
            return bad_files_error(sorted(self.bad_files.items()), len(self.dataset), limit,
                                   "(they failed to decode during training)")
        return None

    def _labels(self, y: torch.Tensor) -> Optional[torch.Tensor]:
        return y.to(self.device, non_blocking=True) if self.cfg.model.n_classes else None

    def discriminator_step(self, video: torch.Tensor, y: Optional[torch.Tensor],
                           d_step: int = 0, fakes: Optional[Fakes] = None) -> Tuple[Dict, bool]:
        """D step number ``d_step`` (counted over the run) on ``fakes`` (None: a new G draw):
        D main with R1 (Eq. 10; none when loss.r1_weight is 0), or with lazy R1 (k = ``loss.r1_interval`` > 1) D main alone,
        then, every k-th D step, one more step on R1 alone weighted k * lambda (StyleGAN2's
        "Dreg")."""
        real = normalize(video.to(self.device, non_blocking=True))  # (B, 3, T, H, W)
        lazy = self.r1_interval > 1
        penalised = self.cfg.loss.r1_weight > 0  # no double backward for a weight of 0 (WGAN)
        with self.amp:
            result = self.loss.discriminator(real, y, r1=penalised and not lazy, fakes=fakes)
        self.opt_D.zero_grad(set_to_none=True)
        result.total.backward()
        ok = self._step_if_finite(self.opt_D, self.D, result.total)
        if ok:
            self.loss.after_discriminator_step(result)
        metrics = {"loss/D": result.total.detach(), **phase_scalars(result)}
        if penalised and lazy and d_step % self.r1_interval == 0:
            with self.amp:
                reg = self.loss.discriminator_r1(real, y,
                                                 self.r1_interval * self.cfg.loss.r1_weight)
            self.opt_D.zero_grad(set_to_none=True)
            reg.total.backward()
            ok = self._step_if_finite(self.opt_D, self.D, reg.total) and ok
            # its terms and stats; the main step's logits stay the ones logged
            self.r1_metrics = {k: v for k, v in phase_scalars(reg).items()
                               if not k.startswith("logits/")}
        return {**metrics, **self.r1_metrics}, ok

    def generator_step(self, y: Optional[torch.Tensor],
                       head_gradients: bool = False) -> Tuple[Dict, bool, PhaseResult]:
        """G step on a new z; also returns its phase result (``fakes``: that G forward's
        videos, detached, and z). With ``head_gradients``, also the norm of the gradient each
        D head sends G (``grad_G/<head>``)."""
        with self.amp:
            result = self.loss.generator(self.batch, y)
        metrics = {"loss/G": result.total.detach()}
        if head_gradients:
            metrics.update({f"grad_G/{name}": v
                            for name, v in self.loss.head_gradient_norms(result).items()})
        self.opt_G.zero_grad(set_to_none=True)
        result.total.backward()
        ok = self._step_if_finite(self.opt_G, self.G, result.total)
        return {**metrics, **phase_scalars(result)}, ok, result

    @staticmethod
    def _step_if_finite(opt: torch.optim.Optimizer, model: torch.nn.Module,
                        loss: torch.Tensor) -> bool:
        """Average the gradients over processes (torchrun; the loss comes back averaged too,
        so every process decides alike), then step unless the loss is not finite."""
        loss = distributed.average_gradients(model.parameters(), loss)
        if not torch.isfinite(loss):
            opt.zero_grad(set_to_none=True)
            return False
        opt.step()
        return True

    def train_step(self, batches) -> Dict:
        """One iteration: one G update and n_dis D updates in ``train.step_order``, then the
        EMA update. Returns detached metrics.

        g_first (the official code's updater): the G step on a new z through D as it is, then
        the D step on the videos of that same G forward (detached), so G runs forward once
        per iteration; with n_dis > 1 every further D step draws new fakes (G in train mode,
        without gradient), as the official loop does. d_first: the n_dis D steps, each on its
        own fakes, then the G step on a new z through the updated D.
        """
        self.G.train()
        metrics, finite = {}, True
        t = self.cfg.train
        # Fetch every batch first: a loader error then leaves the models untouched.
        fetched = [next(batches) for _ in range(t.n_dis)]
        labels = []
        for _, y, skipped in fetched:
            self.record_skips(skipped)
            labels.append(self._labels(y))
        # conditional fakes take the labels of a real batch: the first in g_first (the one
        # its D step judges them beside), the last in d_first
        g_labels = labels[0] if t.step_order == "g_first" else labels[-1]
        # per-head gradients to G on the iterations whose metrics are logged
        diagnose = t.head_gradients and ((self.step + 1) % t.log_interval == 0
                                         or self.step + 1 == t.iterations)
        fakes = None
        if t.step_order == "g_first":
            g_metrics, g_ok, g_result = self.generator_step(g_labels, diagnose)
            metrics.update(g_metrics)  # the D step's logits/fake_* then replace G's
            fakes = g_result.fakes
        for j, ((video, _, _), y) in enumerate(zip(fetched, labels)):
            d_metrics, ok = self.discriminator_step(video, y, self.step * t.n_dis + j,
                                                    fakes if j == 0 else None)
            metrics.update(d_metrics)
            finite &= ok
        if t.d_constraint != "none" and (self.step + 1) % t.d_constraint_interval == 0:
            # TGAN Algorithm 1: the critic's constraint after its update, every n_clip
            # iterations (the official code: after the D step of iterations 5, 10, ...)
            constrain_discriminator(self.D, t.d_constraint, t.weight_clip, t.bn_scale_bound)
        if t.step_order == "d_first":
            g_metrics, g_ok, g_result = self.generator_step(g_labels, diagnose)
            metrics.update(g_metrics)
        finite &= g_ok
        if g_ok:
            # The G step's writes (the memory's second fake write) come after the D step in
            # both orders: in g_first the D step judges the very fakes of the G step, and a
            # memory that had just stored them would read them as fake whatever D learnt.
            metrics.update(self.loss.after_generator_step(g_result))
        update_ema(self.G_ema, self.G, self.cfg.train.ema_beta, self.step)
        self.step += 1
        if finite:
            self.nonfinite_streak = 0
        else:
            self.nonfinite_streak += 1
            self.nonfinite_total += 1
        metrics["nonfinite_skipped"] = self.nonfinite_total
        metrics["data/skipped_clips"] = self.skipped_clips
        metrics["data/bad_files"] = len(self.bad_files)
        return metrics


class Batches:
    """The loader's batches, its iterator held here alone: ``close`` stops the worker
    processes even while an exception's traceback still holds the frames that drew from it.
    Left to the interpreter's exit instead, a worker (which ignores SIGTERM) would be joined
    for ever, and the process would never leave."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self._it = iter(loader)

    def __iter__(self) -> "Batches":
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._it = None  # its last reference: the workers are shut down now
