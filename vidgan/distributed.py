"""Data-parallel training across processes (torchrun) that is the same experiment as one
process.

One process per device. ``train.batch_size`` is the global batch B; rank r holds samples
[r * B/N, (r + 1) * B/N) of it. The rule that makes N processes equal one:

- every random draw that has one value per sample (z, memory slots, frame draws) is drawn for
  the global batch from generators that are identical on every rank (same seed, same calls)
  and each rank keeps its slice (``shard``); draws with one value per batch (subsampling
  offsets b_t) are simply the same everywhere;
- losses are means over the global batch, so gradients are averaged over ranks
  (``average_gradients``); a term that is a sum over the batch (R1, Eq. 10) is multiplied by
  N on every rank first (``world_size()``), so the average is the global sum;
- statistics over the batch (the generator's BatchNorm) are taken over the global batch
  (``GlobalBatchNorm2d`` in vidgan/models/normalization.py);
- state written from the batch (the memory discriminator) is written from the gathered global
  batch, in rank order, identically on every rank (``gather``).

Without torchrun (no WORLD_SIZE in the environment) there is no process group, world size 1,
and every function here is the identity.

A process that is lost (killed, hung) leaves the others unable to finish any collective. Every
collective here waits for its peers through ``_finish``, which turns that into one
``PeerLostError`` at once when the collective fails (a dead peer closes its connections),
after ``train.collective_timeout`` seconds without an answer (a hung peer), or a few seconds
after a stop signal when the collective still cannot complete (the signal agreement of the
training loop needs live peers). Waits for rank 0's file work (``barrier``) are allowed
``train.main_work_timeout`` instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pickle
import re
import socket
import stat
import sys
import time
from typing import Any, Callable, Iterable, Iterator, List, Optional

import torch
import torch.distributed as dist

from vidgan import signals
from vidgan.config import TrainConfig

# A collective still waiting this long after a stop signal (and after it began) cannot
# complete: live peers answer within one step's imbalance, which is well below this.
STOP_GRACE_S = 5.0
# How often a wait on gloo looks at the clock and at the signals that came meanwhile.
_POLL = datetime.timedelta(seconds=0.2)
# Exit status of a process that left because a peer was lost (no checkpoint written).
EXIT_PEER_LOST = 3


class PeerLostError(RuntimeError):
    """A collective cannot complete: another process of the job is gone (it died, it hung past
    train.collective_timeout, or a stop signal came while waiting for it). The survivors
    cannot agree on a state, so they leave without writing one."""


@dataclasses.dataclass
class _Group:
    """The process group's settings: the step collectives' limit, and a gloo group with a
    longer one for waiting on rank 0's file work."""
    collective_timeout: float
    main_work_timeout: float
    wait_group: Any


_group: Optional[_Group] = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files (checkpoints, logs, samples, caches)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device,
                  collective_timeout: float = TrainConfig.collective_timeout,
                  main_work_timeout: float = TrainConfig.main_work_timeout) -> torch.device:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU) and return
    this process's device: one GPU per process (``cuda:LOCAL_RANK``) on CUDA. For a plain
    ``python train.py``, ``device`` unchanged and no group.

    ``collective_timeout``: seconds a collective of a step may wait for a peer before the
    peer counts as lost (the process group's own timeout: NCCL's watchdog enforces it on
    GPUs); ``main_work_timeout``: seconds the other processes wait in ``barrier`` while rank 0
    writes files (a dataset, its index, the statistics cache, a checkpoint)."""
    global _group
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=collective_timeout))
    _group = _new_group(collective_timeout, main_work_timeout)
    return device


def _new_group(collective_timeout: float, main_work_timeout: float) -> _Group:
    wait_group = dist.new_group(backend="gloo",
                                timeout=datetime.timedelta(seconds=main_work_timeout))
    return _Group(collective_timeout, main_work_timeout, wait_group)


def _settings() -> _Group:
    """The settings ``init_from_env`` made; for a process group started elsewhere, its
    defaults, made at the first collective that needs them (every process is there)."""
    global _group
    if _group is None:
        _group = _new_group(TrainConfig.collective_timeout, TrainConfig.main_work_timeout)
    return _group


def shutdown() -> None:
    global _group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _group = None


def leave_now(code: int = EXIT_PEER_LOST) -> None:
    """End the process at once after a ``PeerLostError``: its output flushed, no interpreter
    teardown, which would wait for the process group's threads, and they for a peer that
    will never answer. The operating system releases the run lock and the files."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def close_inherited_connections() -> None:
    """In a forked child (a DataLoader worker): close its copies of the parent's TCP sockets,
    the process group's connections among them. While a copy is open, a process that is
    killed keeps its connections up until its workers notice they lost their parent (up to 5
    s), and its peers learn of the loss only then. Workers read local files and talk to
    their parent through pipes and Unix sockets, which stay."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: the peers learn of the loss a few seconds later
        return
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # the listing's own descriptor, already closed
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.close()
        else:
            sock.detach()  # leave it open


def _reason(err: BaseException) -> str:
    """The backend's error in a few words: gloo's first sentence without its source-file
    prefix, e.g. 'Read error [127.0.0.1]:43711: Connection reset by peer'."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*:\d+\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")


def _finish(work: Any, what: str, group: Any = None, limit: Optional[float] = None,
            grace: bool = True) -> None:
    """Wait for the async collective ``work`` (``what``, on ``group``); a ``PeerLostError``
    when it fails, when ``limit`` seconds pass (None: the group's own timeout alone), or,
    with ``grace``, ``STOP_GRACE_S`` after a stop signal while it still waits.

    On gloo the wait is taken in short slices, so the signal handlers run meanwhile; NCCL's
    ``wait`` only orders the streams (no host sync per collective), and its watchdog
    enforces the group's timeout."""
    if dist.get_backend(group) != "gloo":
        try:
            work.wait()
        except RuntimeError as err:
            raise PeerLostError(f"{what} failed ({_reason(err)})") from None
        return
    start = time.monotonic()
    while True:
        try:
            work.wait(timeout=_POLL)
            return
        except RuntimeError as err:
            if work.is_completed():  # it failed (not only the slice ran out)
                reason = _reason(err)
                if "Timed out" in reason and _group is not None:  # the group's timeout
                    reason += f"; train.collective_timeout={_group.collective_timeout:g} s"
                raise PeerLostError(f"{what} failed ({reason})") from None
        now = time.monotonic()
        if limit is not None and now - start > limit:
            raise PeerLostError(f"{what}: no answer within {limit:g} s "
                                f"(train.collective_timeout)")
        signalled = signals.stop_received_at()
        if grace and signalled is not None and now - max(start, signalled) > STOP_GRACE_S:
            raise PeerLostError(f"{what}: no answer {STOP_GRACE_S:g} s after a stop signal")


def local_batch(global_batch: int, what: str = "train.batch_size") -> int:
    """This rank's share of a global batch; a clear error when N does not divide it."""
    n = world_size()
    if global_batch % n:
        raise ValueError(f"{what}={global_batch} is the global batch and must be divisible by "
                         f"the number of processes ({n}); each process takes {what} / {n}")
    return global_batch // n


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's slice (along dim 0) of something drawn for the global batch."""
    n = world_size()
    if n == 1:
        return x
    b = len(x) // n
    return x[rank() * b:(rank() + 1) * b]


def barrier() -> None:
    """Rank 0 has done file work the others need (or must not race): they wait for it up to
    ``train.main_work_timeout`` and are not hurried by a stop signal, since rank 0 may be
    writing the checkpoint that signal asked for; rank 0 itself waits for them, which have
    nothing to do, ``train.collective_timeout``."""
    if not is_distributed():
        return
    group = _settings().wait_group
    limit = _settings().collective_timeout if is_main() else None
    _finish(dist.barrier(group=group, async_op=True), "a barrier", group, limit,
            grace=is_main())


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may write files: data, manifest, caches), the other
    ranks after it, reading what it wrote."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a small float tensor (logged scalars)."""
    if not is_distributed():
        return values
    values = values.clone()
    _finish(dist.all_reduce(values, op=dist.ReduceOp.SUM, async_op=True), "an all-reduce")
    return values / world_size()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (equal shapes) along dim 0 in rank order: the global
    batch. No gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    _finish(dist.all_gather(parts, x.contiguous(), async_op=True), "an all-gather")
    return torch.cat(parts)


class _AllSum(torch.autograd.Function):
    """y = sum over ranks of x; every rank's loss depends on every x, so the gradient of x is
    the sum over ranks of the gradients of y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        _finish(dist.all_reduce(y, op=dist.ReduceOp.SUM, async_op=True), "an all-reduce")
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        _finish(dist.all_reduce(g, op=dist.ReduceOp.SUM, async_op=True), "an all-reduce")
        return g


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (the backward sums the gradients too)."""
    return _AllSum.apply(x) if is_distributed() else x


def average_gradients(params: Iterable[torch.nn.Parameter],
                      loss: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Average the gradients over ranks in one flat all-reduce, as StyleGAN3's training loop
    does (stylegan2-ada-pytorch wraps its modules in DDP instead). No DDP wrapper, so R1's
    double backward, heads unused in a phase and state buffers need no special care.
    ``loss`` rides along and comes back as the mean over ranks, so every rank takes the same
    finite/non-finite decision. Parameters without a gradient on every rank are left alone
    (the same set on every rank: the same phase ran)."""
    if not is_distributed():
        return loss
    grads = [p.grad for p in params if p.grad is not None]
    dtype = grads[0].dtype if grads else torch.float32  # the parameters' (float64 in tests)
    extra = [] if loss is None else [loss.detach().to(dtype).reshape(1)]
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + extra)
    _finish(dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True),
            "the gradient all-reduce")
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return None if loss is None else flat[-1]


def max_over_ranks(values: List[int], device: torch.device) -> List[int]:
    """Elementwise max of small integer lists over ranks (signals: which one, if any)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    _finish(dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True), "the signal agreement")
    return [int(v) for v in t.tolist()]


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor in nested dicts, lists, tuples and dataclasses."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj)})
    return obj


def gather_batches(batches: List[Any], device: torch.device) -> List[Any]:
    """The batches of every process in global order, on ``device``, when process r holds
    batches r, r + N, r + 2N, ... (``generated_clips(split=True)``); any number per process,
    any shapes (they travel as pickled CPU tensors: evaluation results, not training data)."""
    if not is_distributed():
        return batches
    parts = _all_gather_objects(map_tensors(batches, lambda t: t.detach().cpu()))
    n, total = world_size(), sum(len(p) for p in parts)
    ordered = [parts[i % n][i // n] for i in range(total)]
    return map_tensors(ordered, lambda t: t.to(device))


def _all_gather_objects(obj: Any) -> List[Any]:
    """Every process's picklable ``obj``, in rank order (``dist.all_gather_object``'s result,
    through ``_finish``'s waits: sizes first, then the padded bytes). On the wait group: the
    bytes travel through the CPU on any backend."""
    group = _settings().wait_group
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    limit = _settings().collective_timeout
    _finish(dist.all_gather(sizes, torch.tensor([len(data)]), group=group, async_op=True),
            "an all-gather", group, limit)
    longest = int(max(sizes).item())
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:len(data)] = data
    parts = [torch.empty(longest, dtype=torch.uint8) for _ in sizes]
    _finish(dist.all_gather(parts, padded, group=group, async_op=True), "an all-gather",
            group, limit)
    return [pickle.loads(p[:int(n.item())].numpy().tobytes()) for p, n in zip(parts, sizes)]
