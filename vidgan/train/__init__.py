"""Training: losses, EMA, checkpoints, the run directory, logging and the loop."""
from vidgan.train.loop import NonFiniteLossError, RunResult, Trainer, train
from vidgan.train.rundir import RunDirError

__all__ = ["Trainer", "RunResult", "train", "NonFiniteLossError", "RunDirError"]
