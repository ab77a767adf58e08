"""Train a video GAN: ``python train.py [--config demo.yaml] [--resume] [key=value ...]``.

With no arguments this is the embedded demo: it writes the synthetic moving-shapes dataset if
missing, trains a small TGANv2 on the CPU and leaves samples, TensorBoard logs and a
checkpoint under runs/demo/.
"""
import argparse
import os
import shlex
import sys
from typing import List, Optional

from vidgan import distributed, signals
from vidgan.checkpoint import CheckpointError
from vidgan.config import ConfigError, load_config
from vidgan.metrics.synthetic import report
from vidgan.train import NonFiniteLossError, RunDirError, Trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train a TGANv2-style video GAN.")
    parser.add_argument("--config", default="demo.yaml",
                        help="a YAML file, or a name in configs/ (default: demo.yaml)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the newest readable checkpoint in train.out_dir")
    start.add_argument("--resume-from", metavar="CKPT",
                       help="continue from this checkpoint file (e.g. a diverged_*.pt)")
    start.add_argument("--overwrite", action="store_true",
                       help="start a fresh run even if train.out_dir holds one: deletes its "
                            "checkpoints, samples, TensorBoard log and config.yaml")
    parser.add_argument("--report", action="store_true",
                        help="at the end, print the last in-training scores of the synthetic "
                             "metric beside the real data's (the demo's printout)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=8")
    args = parser.parse_intermixed_args(argv)  # options may follow the overrides
    trainer = None
    try:
        cfg = load_config(args.config, args.overrides)
        # Start-up (indexing, building models): a signal ends the process, nothing to lose.
        trainer = Trainer(cfg, resume=args.resume, resume_from=args.resume_from,
                          overwrite=args.overwrite)
        signals.ignore_stop_signals()  # from now on only Trainer.run answers them
        result = trainer.run()
        if args.report and result.scores and "synthetic" in trainer.eval_metrics:
            step, scores = result.scores
            reference = trainer.real_stats.synthetic if trainer.real_stats else None
            print(report(scores, reference,
                         f"What the samples show at step {step} ({cfg.eval.n_samples} clips of "
                         f"the EMA generator, vidgan.metrics.synthetic):"))
            print(f"  samples: {cfg.train.out_dir}/samples/ (mp4 grids); what longer runs "
                  f"draw: docs/DEMO.md")
    except distributed.PeerLostError as err:  # torchrun: another process is gone
        command = sys.argv if argv is None else ["train.py", *argv]
        print(f"error: {peer_lost_message(err, trainer, command)}", file=sys.stderr)
        distributed.leave_now()  # the process group cannot be shut down cleanly
    except (ConfigError, CheckpointError, FileNotFoundError, NonFiniteLossError, RunDirError,
            ValueError) as err:  # bad input or a stopped run: one line (+ file lists)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()  # torchrun: leave the process group
    return 128 + result.stopped_by if result.stopped_by else 0


def peer_lost_message(err: distributed.PeerLostError, trainer: Optional[Trainer],
                      argv: List[str]) -> str:
    """One line: when, what failed, that nothing was saved, the newest checkpoint and the
    command that resumes from it (or, before the first checkpoint, the command again)."""
    if trainer is None:
        return (f"a peer process was lost during start-up: {err}. Start the run again: "
                f"{launch_command(argv)}")
    where = f"a peer process was lost after step {trainer.step}: {err}"
    if trainer.newest_checkpoint is None:
        return f"{where}. No checkpoint was written yet; start again: {launch_command(argv)}"
    return (f"{where}. Nothing saved now, as the processes can no longer agree on a state; "
            f"the newest checkpoint is {trainer.newest_checkpoint}. Resume with: "
            f"{resume_command(argv)}")


def resume_command(argv: List[str]) -> str:
    """``argv`` (this process's command line, program first) as the command that resumes its
    run: --resume in place of --overwrite / --resume / --resume-from, with any number of
    processes."""
    kept, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume-from":
            skip = True
        elif arg not in ("--resume", "--overwrite") and not arg.startswith("--resume-from="):
            kept.append(arg)
    return launch_command([argv[0], *kept, "--resume"])


def launch_command(argv: List[str]) -> str:
    """``argv`` as a shell command, under torchrun as torchrun launched it where that can be
    told (one node)."""
    command = shlex.join(argv)
    if not distributed.launched_by_torchrun():
        return f"python {command}"
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local and local == os.environ.get("WORLD_SIZE"):
        return f"torchrun --standalone --nproc_per_node={local} {command}"
    return f"torchrun <the same options> {command}"


if __name__ == "__main__":
    sys.exit(main())
