"""Train a video GAN: ``python train.py [--config demo.yaml] [--resume] [key=value ...]``.

With no arguments this is the embedded demo: it writes the synthetic moving-shapes dataset if
missing, trains a small TGANv2 on the CPU and leaves samples, TensorBoard logs and a
checkpoint under runs/demo/.
"""
import argparse
import sys

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
    except (ConfigError, CheckpointError, FileNotFoundError, NonFiniteLossError, RunDirError,
            ValueError) as err:  # bad input or a stopped run: one line (+ file lists)
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()  # torchrun: leave the process group
    return 128 + result.stopped_by if result.stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
