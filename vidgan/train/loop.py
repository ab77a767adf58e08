"""The TGANv2 training loop: per iteration one G update and n_dis D updates, in the official
code's order by default (train.step_order)."""
from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from tqdm import tqdm

from vidgan import distributed, signals
from vidgan.checkpoint import (checkpoint_path, checkpoint_step, load_checkpoint, rng_state,
                               save_checkpoint, set_rng_state)
from vidgan.config import (BEHAVIOUR_ONLY_MODEL_KEYS, Config, ConfigError, ModelConfig,
                           changed_settings, config_from_dict, parent_dict, to_dict)
from vidgan.data import (DataError, bad_files_error, build_dataset, build_loader, normalize,
                         summarize_excluded)
from vidgan.device import resolve_device
from vidgan.metrics.registry import check_metric_names, classifiers_needed
from vidgan.models import build_discriminator, build_generator, link_memory
from vidgan.train.ema import make_ema, update_ema
from vidgan.train.logs import (Writer, add_gif, add_scalars, averaged, open_writer,
                               phase_scalars)
from vidgan.train.loss import Fakes, GANLoss, PhaseResult
from vidgan.train.constraints import constrain_discriminator
from vidgan.train.optim import lazy_r1_ratio, make_optimizer
from vidgan.train.rundir import (hold_run_dir, newest_readable, prepare_run_dir,
                                 set_aside_diverged, write_config)
from vidgan.video_io import make_grid, to_uint8, write_mp4


class NonFiniteLossError(RuntimeError):
    """Too many consecutive iterations had a non-finite loss."""


@dataclasses.dataclass
class RunResult:
    """How ``Trainer.run`` ended: the final checkpoint and step, the signal that stopped the
    run early (None when it trained to train.iterations), and the last in-training scores as
    (step, {metric: value}) (None when nothing was scored)."""
    checkpoint: Path
    step: int
    stopped_by: Optional[int]
    scores: Optional[Tuple[int, Dict[str, float]]]


def linear_decay(base_lr: float, step: int, decay_iterations: int) -> float:
    """lr decays linearly from base_lr to 0 over decay_iterations (tgan2 §5.2)."""
    return base_lr * max(0.0, 1.0 - step / decay_iterations)


class Trainer:
    """Holds G, D, EMA, optimizers and the data stream of one run directory."""

    def __init__(self, cfg: Config, resume: bool = False, resume_from: Optional[str] = None,
                 overwrite: bool = False):
        """``resume``: continue from the newest readable checkpoint in ``train.out_dir``;
        ``resume_from``: from that checkpoint file; ``overwrite``: a fresh run may replace
        the run already in ``train.out_dir`` (otherwise that is refused)."""
        self.cfg = cfg
        t = cfg.train
        self.r1_interval = cfg.loss.r1_interval
        self.out_dir = Path(t.out_dir)
        resume = resume or resume_from is not None
        # torchrun: one process per device, in the process group
        self.device = distributed.init_from_env(resolve_device(t.device), t.collective_timeout,
                                                t.main_work_timeout)
        self.batch = distributed.local_batch(t.batch_size)  # this process's share
        self.main = distributed.is_main()  # rank 0 alone writes files
        # rank 0 holds train.out_dir for the whole run, before reading or changing anything
        self.run_lock = hold_run_dir(self.out_dir, resume_from) if self.main else None
        try:
            self._build(resume, resume_from, overwrite)
        except BaseException:
            self.close()  # a run that cannot start leaves the directory free at once
            raise

    def _build(self, resume: bool, resume_from: Optional[str], overwrite: bool) -> None:
        cfg, t = self.cfg, self.cfg.train
        if self.main:
            prepare_run_dir(self.out_dir, resume, overwrite)
        distributed.barrier()
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        self.G = build_generator(cfg).to(self.device)
        self.D = build_discriminator(cfg).to(self.device)
        self.G_ema = make_ema(self.G)
        self.loss = GANLoss(self.G, self.D, cfg.model, cfg.loss)
        self.opt_G = make_optimizer(self.G.parameters(), t)
        self.opt_D = make_optimizer(self.D.parameters(), t, self.r1_interval)
        self.r1_metrics: Dict[str, torch.Tensor] = {}  # the last lazy R1 step's, logged between
        self.step = 0
        # the checkpoint written last (or resumed from): what a lost process's error names
        self.newest_checkpoint: Optional[Path] = None
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        # Clips that failed to decode during training (the index already left out the files
        # it could tell were bad): skip events, and the distinct files with their reason.
        self.skipped_clips = 0
        self.bad_files: Dict[str, str] = {}
        link_memory(self.G, self.D)  # MCGN: G and G_ema sample the keys of D's memory
        link_memory(self.G_ema, self.D)
        n = cfg.eval.sample_rows ** 2
        self.y_fixed = (torch.arange(n, device=self.device) % cfg.model.n_classes
                        if cfg.model.n_classes else None)
        if resume:
            with distributed.main_first():  # rank 0 sets unreadable checkpoints aside first
                self._resume(Path(resume_from) if resume_from else None)
        with distributed.main_first():  # rank 0 writes the data or its manifest first
            self.dataset = build_dataset(cfg, cfg.data.subset, augment=True)
        self.data_summary = (f"data: {cfg.data.dataset} '{cfg.data.root}' ({cfg.data.subset}): "
                             f"{len(self.dataset)} videos, "
                             f"{summarize_excluded(self.dataset.excluded)}")
        if self.main:
            tqdm.write(self.data_summary)
            for path, reason in self.dataset.excluded[:20]:
                tqdm.write(f"  excluded {path}: {reason}")
        if cfg.model.n_classes and len(self.dataset.classes) > cfg.model.n_classes:
            raise ValueError(f"model.n_classes={cfg.model.n_classes} but data.root "
                             f"'{cfg.data.root}' has {len(self.dataset.classes)} classes")
        self.classifiers, self.real_stats = self._load_classifiers(), None
        self.last_scores: Optional[Tuple[int, Dict[str, float]]] = None  # (step, scores)
        # what the in-training evaluation scores: metrics whose classifier is loaded
        self.eval_metrics = [m for m in cfg.eval.metrics
                             if all(c in self.classifiers for c in classifiers_needed([m]))]
        samples_per_step = t.n_dis * t.batch_size
        self.loader = build_loader(self.dataset, cfg, start_sample=self.step * samples_per_step)
        self.amp = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                    if t.amp == "bf16" else contextlib.nullcontext())

    def _load_classifiers(self) -> dict:
        """The classifiers (C3D, I3D) the in-training metrics need, by registry name; one
        whose weights are not set is left out with one warning, and its metrics are off.

        Loaded now, so a wrong path fails at start-up rather than at the first evaluation.
        """
        ev = self.cfg.eval
        try:
            check_metric_names(ev.metrics, "eval.metrics") if ev.metrics else None
        except ValueError as err:
            raise ConfigError(str(err)) from None
        out = {}
        for name, weights in (("c3d", ev.c3d_weights), ("i3d", ev.i3d_weights)):
            wanted = [m for m in ev.metrics if name in classifiers_needed([m])]
            if not wanted:
                continue
            if not weights:
                mean = " (and eval.c3d_mean for the release npz)" if name == "c3d" else ""
                tqdm.write(f"warning: eval.{name}_weights is not set, so the in-training "
                           f"{name.upper()} scores ({', '.join(wanted)}) are off; set "
                           f"eval.{name}_weights{mean} to log them every eval.interval "
                           "iterations")
                continue
            from vidgan.metrics.evaluation import load_classifier
            out[name] = load_classifier(name, weights, self.device, ev.c3d_mean)
        return out

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(), "step": self.step,
                "nonfinite_total": self.nonfinite_total, "rng": rng_state(),
                "data_skips": {"skipped_clips": self.skipped_clips,
                               "bad_files": dict(self.bad_files)},
                "config": to_dict(self.cfg),
                # label names, so generate/evaluate can name classes without the dataset
                "classes": list(self.dataset.classes)}

    def _resume(self, path: Optional[Path] = None) -> None:
        """Load ``path``, or the newest readable checkpoint of the run directory: an unreadable
        one (truncated, zero-filled, refused) is set aside as ``<name>.unreadable`` with a
        warning and the next older one is tried."""
        if path is not None:
            state = load_checkpoint(path, map_location=self.device)
        else:
            path, state = newest_readable(
                self.out_dir, lambda p: load_checkpoint(p, map_location=self.device),
                set_unreadable_aside=self.main)
        stored = config_from_dict(state["config"])
        if not same_parameters(stored.model, self.cfg.model):
            raise ValueError(f"--resume: the model section of {path} differs from the config "
                             f"given now; resume with the same model settings")
        changed = changed_settings(stored, self.cfg)
        if changed and self.main:
            tqdm.write(f"note: {path} was trained with other settings than this run's "
                       f"defaults or config (vidgan follows the official TGANv2 step since "
                       f"0.2, docs/FIDELITY.md): {'; '.join(changed)}. Pass the old values as "
                       f"overrides to continue as it was.")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.step = state["step"]
        self.nonfinite_total = state.get("nonfinite_total", 0)
        skips = state.get("data_skips", {})
        self.skipped_clips = skips.get("skipped_clips", 0)
        self.bad_files = dict(skips.get("bad_files", {}))
        set_rng_state(state["rng"])
        self.newest_checkpoint = path
        tqdm.write(f"resumed from {path} at step {self.step}")

    def save(self) -> Path:
        # No pruning during a non-finite streak: if it turns into a divergence, the older
        # checkpoints are the healthy ones (stop_diverged).
        keep = self.cfg.train.keep_checkpoints if self.nonfinite_streak == 0 else None
        path = checkpoint_path(self.out_dir, self.step)
        if self.main:  # every rank holds the same state; the others wait for the file
            path = save_checkpoint(self.state_dict(), self.out_dir, self.step, keep)
            self.newest_checkpoint = path  # written, whatever becomes of the others
        distributed.barrier()
        self.newest_checkpoint = path
        return path

    def stop_diverged(self) -> NonFiniteLossError:
        """Keep the last healthy state of a run that ``train.max_nonfinite`` stops.

        The checkpoint written last before the first non-finite step is pinned (never
        pruned, and what ``--resume`` picks); checkpoints written during the non-finite streak
        and the state now are set aside as ``diverged_<step>.pt``, which ``--resume`` skips.
        """
        first_bad = self.step - self.nonfinite_streak + 1  # the step the streak began with
        if not self.main:
            distributed.barrier()  # rank 0 sets the files aside
            return NonFiniteLossError(f"non-finite losses from step {first_bad}; rank 0 "
                                      f"reports the files")
        healthy = set_aside_diverged(self.out_dir, first_bad)
        diverged = save_checkpoint(self.state_dict(), self.out_dir, self.step, keep=None,
                                   name=f"diverged_{self.step:08d}.pt")
        if healthy is not None:
            advice = (f"the last checkpoint before it, {healthy} (step "
                      f"{checkpoint_step(healthy)}), is kept and --resume continues from it")
        else:
            advice = ("no checkpoint precedes it; start again (--overwrite replaces this run "
                      "directory)")
        distributed.barrier()
        return NonFiniteLossError(
            f"{self.nonfinite_streak} consecutive iterations had a non-finite loss (steps "
            f"{first_bad}-{self.step}); stopped. The diverged state is in {diverged}; {advice}. "
            f"Lower train.lr, check the data, or raise train.max_nonfinite.")

    # ------------------------------------------------------------------ step
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
        D main with R1 (Eq. 10), or with lazy R1 (k = ``loss.r1_interval`` > 1) D main alone,
        then, every k-th D step, one more step on R1 alone weighted k * lambda (StyleGAN2's
        "Dreg")."""
        real = normalize(video.to(self.device, non_blocking=True))  # (B, 3, T, H, W)
        lazy = self.r1_interval > 1
        with self.amp:
            result = self.loss.discriminator(real, y, r1=not lazy, fakes=fakes)
        self.opt_D.zero_grad(set_to_none=True)
        result.total.backward()
        ok = self._step_if_finite(self.opt_D, self.D, result.total)
        if ok:
            self.loss.after_discriminator_step(result)
        metrics = {"loss/D": result.total.detach(), **phase_scalars(result)}
        if lazy and d_step % self.r1_interval == 0:
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
            constrain_discriminator(self.D, t.d_constraint, t.weight_clip)
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

    # ---------------------------------------------------------------- output
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

    # ------------------------------------------------------------------ loop
    def run(self) -> RunResult:
        """Train until train.iterations; the result names the final checkpoint.

        SIGTERM, SIGINT, SIGHUP (to this process or its whole group) finish the current
        iteration, write a checkpoint and return early; SIGUSR1 writes one and trains on.
        """
        writer = open_writer(self.out_dir, self.step, self.main)
        if self.main:  # rank 0 alone writes the config, the log, samples and checkpoints
            write_config(self.out_dir, self.cfg)
            excluded = "\n".join(f"    {p}: {r}" for p, r in self.dataset.excluded)
            writer.add_text("data/index", f"    {self.data_summary}\n{excluded}", self.step)
        bar = tqdm(total=self.cfg.train.iterations, initial=self.step, desc="train",
                   dynamic_ncols=True, disable=not self.main)
        path, stop, batches = None, None, None
        with signals.RunSignals() as received:
            try:
                with signals.held():  # the workers start here and must not see a signal yet
                    batches = Batches(self.loader)
                self._clock = (time.perf_counter(), self.step)
                if self.step >= self.cfg.train.iterations:  # resumed when already finished
                    path = self._after_iteration(writer, bar, None, self._set_lr(), last=True,
                                                 stop=None, requested=False)
                while path is None:
                    metrics, lr = self._iteration(batches)
                    bar.update(1)
                    # a signal to any process stops (or checkpoints) all at this iteration
                    stop, requested = agreed_signals(received, self.device)
                    last = self.step == self.cfg.train.iterations or stop is not None
                    saved = self._after_iteration(writer, bar, metrics, lr, last, stop, requested)
                    path = saved if last else None
                if self.main:
                    tqdm.write(f"step {self.step}: checkpoint {path}")
            finally:
                # Shut the workers down while the signals are still only flags: a second
                # signal now must not kill this process on the way out.
                if batches is not None:
                    batches.close()
                bar.close()
                try:
                    writer.close()
                except OSError as err:  # e.g. a full disk: the checkpoint matters, not the log
                    tqdm.write(f"warning: TensorBoard log in {self.out_dir / 'tb'} incomplete "
                               f"({err})")
        self.close()
        return RunResult(path, self.step, stop, self.last_scores)

    def _iteration(self, batches) -> Tuple[Dict, float]:
        """One training iteration with its lr; a data or divergence failure saves what it can
        and raises."""
        lr = self._set_lr()
        try:
            metrics = self.train_step(batches)
        except DataError as err:  # the loader gave up on a batch: keep the work
            raise DataError(f"{err}\nState saved to {self.save()}.") from None
        data_error = self.too_many_bad_files()
        if data_error is not None:
            raise DataError(f"{data_error}\nState saved to {self.save()}.")
        if self.nonfinite_streak >= self.cfg.train.max_nonfinite:
            raise self.stop_diverged()
        return metrics, lr

    def _after_iteration(self, writer: Writer, bar: tqdm, metrics: Optional[Dict], lr: float,
                         last: bool, stop: Optional[int], requested: bool) -> Optional[Path]:
        """Log, sample, score and checkpoint what is due after an iteration: at the intervals,
        and all of it on the ``last`` one (the final model is scored unless a signal stopped
        the run); ``metrics`` None: no iteration ran. Returns the checkpoint written, if any."""
        t, ev = self.cfg.train, self.cfg.eval
        if metrics is not None and (self.step % t.log_interval == 0 or last):
            now = time.perf_counter()
            its = (self.step - self._clock[1]) / max(now - self._clock[0], 1e-9)
            self._clock = (now, self.step)
            values = {**averaged(metrics, self.device), "lr": lr, "it_per_s": its}
            add_scalars(writer, values, self.step)
            bar.set_postfix({"D": f"{values['loss/D']:.3f}", "G": f"{values['loss/G']:.3f}",
                             "R1": f"{values.get('loss/R1', float('nan')):.3g}",
                             "it/s": f"{its:.2f}"})
        if ev.sample_interval and (self.step % ev.sample_interval == 0 or last) and self.main:
            self.write_samples(writer)
        if self.eval_metrics and ev.interval and (
                self.step % ev.interval == 0 or (last and stop is None)):
            self.evaluate(writer)
        if not (self.step % t.checkpoint_interval == 0 or requested or last):
            return None
        if stop is not None and self.main:
            tqdm.write(f"received signal {stop}: writing a checkpoint")
        path = self.save()
        if requested and not last:
            tqdm.write(f"SIGUSR1: checkpoint {path}; training on")
        return path

    def close(self) -> None:
        """Let go of train.out_dir (another run may then take it); also at process exit."""
        if self.run_lock is not None:
            self.run_lock.release()


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


def same_parameters(stored: ModelConfig, current: ModelConfig) -> bool:
    """Whether a checkpoint of model ``stored`` can go on training as ``current``: equal but
    for the keys that change no parameter (model.downsample, model.init, ...)."""
    def kept(model: ModelConfig) -> dict:
        values = dataclasses.asdict(model)
        for key in BEHAVIOUR_ONLY_MODEL_KEYS:
            node, name = parent_dict(values, key)
            node.pop(name)
        return values
    return kept(stored) == kept(current)


def agreed_signals(received: "signals.RunSignals", device: torch.device
                   ) -> Tuple[Optional[int], bool]:
    """(stop signal or None, checkpoint requested) as every process sees it: a signal that
    reached any one of them counts for all (one tiny all-reduce per iteration under torchrun,
    none otherwise)."""
    requested = received.take_save_request()  # SIGUSR1
    if not distributed.is_distributed():
        return received.stop, requested
    stop, requested = distributed.max_over_ranks([received.stop or 0, int(requested)], device)
    return stop or None, bool(requested)


def train(cfg: Config, resume: bool = False, resume_from: Optional[str] = None,
          overwrite: bool = False) -> RunResult:
    """Build a Trainer for ``cfg`` (see Trainer for the run-directory options) and run it."""
    return Trainer(cfg, resume=resume, resume_from=resume_from, overwrite=overwrite).run()
