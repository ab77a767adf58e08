"""A training run: its directory, models, optimizers and data stream, resume and checkpoints,
logging, signals and the end of the run. What one iteration does is vidgan/train/step.py."""
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
                           changed_settings, config_from_dict, parent_dict, score_of, to_dict)
from vidgan.data import DataError, build_dataset, build_loader, summarize_excluded
from vidgan.device import resolve_device
from vidgan.metrics.registry import check_metric_names, classifiers_needed
from vidgan.models import build_discriminator, build_generator, link_memory
from vidgan.train.ema import make_ema
from vidgan.train.logs import Writer, add_scalars, averaged, open_writer
from vidgan.train.loss import GANLoss
from vidgan.train.optim import make_optimizer
from vidgan.train.outputs import RunOutputs
from vidgan.train.rundir import (hold_run_dir, newest_readable, prepare_run_dir,
                                 set_aside_diverged, write_config)
from vidgan.train.step import Batches, TrainingStep


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


class Trainer(TrainingStep, RunOutputs):
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
        self.loss = GANLoss(self.G, self.D, cfg.loss)
        self.opt_G = make_optimizer(self.G.parameters(), t)
        self.opt_D = make_optimizer(self.D.parameters(), t, self.r1_interval)
        self.r1_metrics: Dict[str, torch.Tensor] = {}  # the last lazy R1 step's, logged between
        self.step = 0
        # the checkpoint written last (or resumed from): what a lost process's error names
        self.newest_checkpoint: Optional[Path] = None
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        # eval.keep_best: {metric, value, step} of checkpoints/best.pt, None before one
        self.best: Optional[Dict] = None
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
                best = ev.keep_best
                no_best = (f", and eval.keep_best={best} keeps no best.pt"
                           if best and score_of(best, wanted) else "")
                tqdm.write(f"warning: eval.{name}_weights is not set, so the in-training "
                           f"{name.upper()} scores ({', '.join(wanted)}) are off{no_best}; "
                           f"set eval.{name}_weights{mean} to log them every eval.interval "
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
                "best": self.best,
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
        self.best = self.best_to_resume(state.get("best"))
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
            self.keep_best(self.evaluate(writer))
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
