"""Training on several processes: torchrun's environment, DistributedDataParallel, sharded eval.

``torchrun --nproc-per-node N -m mnistkit train ...`` starts N copies of the command; each
reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR:MASTER_PORT`` from the
environment and :func:`setup` joins them into one process group (gloo on the CPU, NCCL on
CUDA, each rank on GPU ``LOCAL_RANK``). ``mnistkit train --nproc N`` is a shortcut that
launches the same thing through torchrun's own launcher (:mod:`mnistkit.training.launch`).

How one step is split, so that a run does not depend on N except through floating-point
order (see :class:`DataParallel`):

- every rank seeds the same weights and draws the same permutation of each epoch, builds the
  same global batch of ``--batch-size`` examples (augmented with the same random numbers) and
  keeps its own slice: the union of the slices is the one-process batch;
- each rank's gradient is weighted by its share of the batch before DDP sums them, so the
  result is the gradient of the batch mean even when the slices differ in size (a batch size
  not divisible by N, the last batch of an epoch);
- figures are summed over ranks; evaluation is split over ranks and gathered;
- only rank 0 prints progress and writes the run directory.

Batch norm: on CUDA the layers become ``SyncBatchNorm`` (statistics over the global batch, as
one process has them). PyTorch's SyncBatchNorm runs on GPUs only, so on the CPU each rank
normalises by the statistics of its own slice ("ghost batch norm", 128 images per rank for
``fast`` on two ranks): the same maths in expectation, not the same numbers. The running
statistics of rank 0 are the ones kept.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mnistkit.errors import MnistkitError
from mnistkit.training.step import EVAL_BATCH

DEFAULT_TIMEOUT_S = 600  # longest wait for another rank; override with $MNISTKIT_DIST_TIMEOUT


class PeerFailure(RuntimeError):
    """Another rank died, hung past the timeout, or cannot be reached (not a usage error)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands in a torchrun job."""

    rank: int  # 0 .. world_size - 1, over all machines
    world_size: int
    local_rank: int  # on this machine: picks the GPU
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """``$WORLD_SIZE`` as torchrun sets it; 1 outside torchrun."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise MnistkitError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number.") from None


def timeout_s() -> float:
    value = os.environ.get("MNISTKIT_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        return float(value)
    except ValueError:
        raise MnistkitError(
            f"MNISTKIT_DIST_TIMEOUT={value!r} is not a number of seconds."
        ) from None


_owned: list[Any] = []  # the process group setup() created, which teardown() may destroy


def setup(device: torch.device, batch_size: int) -> Context | None:
    """Join torchrun's process group, or return None when this is the only process.

    Args:
        device: the resolved device; ``cuda`` becomes ``cuda:LOCAL_RANK``.
        batch_size: the global batch, which must give every rank at least one example.

    Returns:
        The :class:`Context`, or None with ``WORLD_SIZE`` unset or 1.

    Raises:
        MnistkitError: a GPU rank without its GPU, a batch smaller than the world.
        PeerFailure: the other ranks did not arrive within the timeout.
    """
    world = world_size()
    if world <= 1:
        return None
    if batch_size < world:
        raise MnistkitError(f"a batch of {batch_size} cannot be split over {world} processes; "
                            f"--batch-size is the global batch, give at least {world}.")  # fmt: skip
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise MnistkitError(f"local rank {local_rank} needs GPU {local_rank}, but only "
                                f"{torch.cuda.device_count()} are visible; lower --nproc-per-node.")  # fmt: skip
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s()))  # fmt: skip
        except (RuntimeError, dist.DistError) as e:
            raise PeerFailure(f"rank {rank} could not join the other ranks ({e}).") from e
        _owned.append(dist.group.WORLD)
        atexit.register(teardown)
    return Context(rank, world, local_rank, device)


def teardown(sync: bool = False) -> None:
    """Leave the process group, if :func:`setup` joined it (not a caller's own).

    Args:
        sync: wait at a barrier first, so no rank tears its connections down while another
            is still writing (seen as a SIGABRT in gloo when rank 1 left while rank 0 saved
            the run). Only on the normal path, where every rank gets here; at exit after an
            error a barrier would wait for ranks that are gone.
    """
    if _owned and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()
    _owned.clear()


def is_peer_failure(e: BaseException) -> bool:
    """Whether an exception from a collective means another rank is gone or stuck."""
    if isinstance(e, PeerFailure | dist.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("Connection closed", "Connection reset", "Timed out", "gloo")
    )


def explain(e: BaseException) -> str:
    """One line for a failed collective: what happened, and where to look."""
    text = str(e)
    if isinstance(e, PeerFailure):
        return text
    if any(s in text for s in ("Connection reset", "Connection closed", "Broken pipe")):
        what = "a connection to another rank closed"
    elif "timed out" in text.lower() or "timeout" in text.lower():
        what = f"no answer within {timeout_s():.0f} s, $MNISTKIT_DIST_TIMEOUT"
    else:
        what = (text.strip().splitlines() or [type(e).__name__])[0][:120]
    return (f"rank {os.environ.get('RANK', '?')} lost the other ranks ({what}): one of them "
            f"died or hung; see its own output.")  # fmt: skip


def _weighted_allreduce(state, bucket):
    """DDP communication hook: sum of the ranks' gradients, each times its share of the batch
    (DDP's own hook divides by the number of ranks, right only for equal slices).

    Unannotated on purpose: DDP compares the annotations with its classes, and under
    ``from __future__ import annotations`` they would be strings.
    """
    grads = bucket.buffer().mul_(state.weight)
    fut = dist.all_reduce(grads, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class DataParallel:
    """A model under DistributedDataParallel, and what :class:`mnistkit.training.loop.Trainer` asks of it.

    Args:
        ctx: from :func:`setup`.
        model: on ``ctx.device``, its optimizer already built (the wrapper shares the
            parameters; on CUDA its batch-norm layers are swapped in place for SyncBatchNorm
            layers that keep the same parameter and buffer tensors).
    """

    def __init__(self, ctx: Context, model: nn.Module):
        self.ctx = ctx
        self.weight = 1.0  # this rank's share of the current global batch
        if ctx.device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the children in place
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # The constructor broadcasts rank 0's weights: every rank starts from the same ones.
        self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.net.register_comm_hook(self, _weighted_allreduce)

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This rank's slice of a global batch; sets its gradient weight for the step.

        Slices differ in size by at most one. A batch smaller than the number of ranks would
        leave a rank without examples; every rank then skips it (None), the same decision on
        all of them since they all see the same batch.
        """
        n, ranks = len(y), self.ctx.world_size
        if n < ranks:
            return None
        lo, hi = n * self.ctx.rank // ranks, n * (self.ctx.rank + 1) // ranks
        self.weight = (hi - lo) / n
        return x[lo:hi], y[lo:hi]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over all ranks (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t)
        return t

    @torch.no_grad()
    def broadcast_state(self, model: nn.Module) -> None:
        """Give every rank rank 0's weights and buffers (batch-norm statistics drift apart)."""
        for t in model.state_dict().values():
            if t.is_contiguous():
                dist.broadcast(t, 0)
            else:  # channels-last kernels: gloo sends dense tensors only
                dense = t.contiguous()
                dist.broadcast(dense, 0)
                t.copy_(dense)

    def evaluate(
        self, model: nn.Module, split: Any, batch_size: int = EVAL_BATCH
    ) -> dict[str, Any]:
        """:func:`mnistkit.training.step.evaluate` with each rank taking a contiguous part of the
        split: the same dict, on every rank."""
        from mnistkit.training.step import logit_scores

        return logit_scores(self.logits(model, split.x, batch_size), split.y)

    def logits(
        self, model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH
    ) -> torch.Tensor:
        """:func:`mnistkit.training.step.predict_logits` with each rank taking a contiguous part of
        ``x``: all the logits (N, 10), on every rank."""
        from mnistkit.training.step import predict_logits

        self.broadcast_state(model)
        n, ranks = len(x), self.ctx.world_size
        chunk = -(-n // ranks)  # ceil
        lo, hi = min(n, self.ctx.rank * chunk), min(n, (self.ctx.rank + 1) * chunk)
        mine = torch.zeros(chunk, 10, device=x.device)  # padded to equal sizes
        if hi > lo:
            mine[: hi - lo] = predict_logits(model, x[lo:hi], batch_size)
        parts = [torch.empty_like(mine) for _ in range(ranks)]
        dist.all_gather(parts, mine)
        return torch.cat(parts)[:n]


def is_main_process() -> bool:
    """Rank 0, or not under torchrun: the process that prints results."""
    return os.environ.get("RANK", "0") == "0"
