"""Train a video GAN: ``python train.py [--config demo.yaml] [--resume] [key=value ...]``.

With no arguments this is the embedded demo: it writes the synthetic moving-shapes dataset if
missing, trains a small TGANv2 on the CPU and leaves samples, TensorBoard logs and a
checkpoint under runs/demo/.
"""
import argparse
import sys

from vidgan.config import ConfigError, load_config
from vidgan.train import NonFiniteLossError, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train a TGANv2-style video GAN.")
    parser.add_argument("--config", default="demo.yaml",
                        help="a YAML file, or a name in configs/ (default: demo.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in train.out_dir")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=8")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        trainer = train(cfg, resume=args.resume)
    except (ConfigError, FileNotFoundError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 128 + trainer.interrupted_by if trainer.interrupted_by else 0


if __name__ == "__main__":
    sys.exit(main())
