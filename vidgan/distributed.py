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
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Any, Callable, Iterable, Iterator, List, Optional

import torch
import torch.distributed as dist


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


def init_from_env(device: torch.device, timeout_s: int = 1800) -> torch.device:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU) and return
    this process's device: one GPU per process (``cuda:LOCAL_RANK``) on CUDA. For a plain
    ``python train.py``, ``device`` unchanged and no group."""
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
    if is_distributed():
        dist.barrier()


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
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / world_size()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (equal shapes) along dim 0 in rank order: the global
    batch. No gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _AllSum(torch.autograd.Function):
    """y = sum over ranks of x; every rank's loss depends on every x, so the gradient of x is
    the sum over ranks of the gradients of y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
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
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
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
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
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
    parts: List[Any] = [None] * world_size()
    dist.all_gather_object(parts, map_tensors(batches, lambda t: t.detach().cpu()))
    n, total = world_size(), sum(len(p) for p in parts)
    ordered = [parts[i % n][i // n] for i in range(total)]
    return map_tensors(ordered, lambda t: t.to(device))
