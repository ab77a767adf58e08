"""The signals a training run answers, and who answers them.

SIGTERM, SIGINT and SIGHUP stop the run at the next step boundary with one checkpoint (exit
128 + signal); SIGUSR1 writes a checkpoint and trains on (Slurm's ``--signal=USR1@<s>``). Only
the main process acts on them: schedulers (Slurm ``scancel``, preemption, ``kill -TERM
-PGID``, systemd) signal the whole process group, and a DataLoader worker that died of SIGTERM
would make the main process raise inside a step or a save, losing the work. So the workers
ignore these signals and leave shutdown to the main process.
"""
from __future__ import annotations

import contextlib
import signal
import time
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SAVE_SIGNALS = (signal.SIGUSR1,)
RUN_SIGNALS = STOP_SIGNALS + SAVE_SIGNALS

# When (time.monotonic()) the first stop signal reached the RunSignals now entered: a
# collective that waits for a lost peer gives up a few seconds after it (vidgan.distributed).
_stop_received_at: Optional[float] = None


def stop_received_at() -> Optional[float]:
    """The time the run was asked to stop (None: not asked, or no run entered)."""
    return _stop_received_at


class RunSignals:
    """While entered, the run signals only set flags, read at step boundaries: a handler
    never interrupts a step or a checkpoint write, so a second signal cannot damage a save."""

    def __init__(self):
        self.stop: Optional[int] = None  # the first stop signal received
        self.save = False  # a checkpoint was requested (SIGUSR1)
        self._previous = {}

    def _on_signal(self, signum, _frame) -> None:
        global _stop_received_at
        if signum in SAVE_SIGNALS:
            self.save = True
        elif self.stop is None:
            self.stop = signum
            _stop_received_at = time.monotonic()

    def take_save_request(self) -> bool:
        requested, self.save = self.save, False
        return requested

    def __enter__(self) -> "RunSignals":
        global _stop_received_at
        _stop_received_at = None
        self._previous = {s: signal.signal(s, self._on_signal) for s in RUN_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        global _stop_received_at
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        _stop_received_at = None


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold the run signals back (delivered on exit): worker processes forked meanwhile
    inherit the blocked mask, so none can die of a signal before it installs SIG_IGN."""
    signal.pthread_sigmask(signal.SIG_BLOCK, RUN_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, RUN_SIGNALS)


def ignore_stop_signals() -> None:
    """For a process that exists to train (the CLI): a stop signal outside ``Trainer.run``
    (e.g. a scheduler's second SIGTERM just after the run wrote its checkpoint and returned)
    must not kill the process on its way out with 128 + the first signal."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def ignore_in_worker(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: ignore the run signals, then take the mask back."""
    for s in RUN_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RUN_SIGNALS)
