"""Training: losses, EMA, checkpoints and the loop."""
from vidgan.train.loop import NonFiniteLossError, RunDirError, Trainer, train

__all__ = ["Trainer", "train", "NonFiniteLossError", "RunDirError"]
