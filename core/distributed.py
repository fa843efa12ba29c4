"""Distributed training on torch's own engine: `torchrun ... -m core.train --distributed`.

- `init()` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), picks
  the device (cuda:LOCAL_RANK with NCCL, or the CPU with gloo) and joins the process group.
- Sharding: every rank builds the same global order from the seed and takes its contiguous share of
  each global batch (`shard_bounds`), so `--batch-size` is the global batch and N processes see
  exactly what one process would see, in the same order.
- `DistributedMPerClassSampler`: PML's m-per-class batches, reproducible from (seed, epoch), each rank
  taking a disjoint share of every global batch.
- `LossStep`: backbone + head behind one `forward`, the module DDP wraps, so parameters owned by a loss
  head (L2-softmax alpha, classifier weights, ArcFace W) are synchronised like the backbone's.
- `GlooSyncBatchNorm`: torch's SyncBatchNorm refuses CPU tensors; this one all-reduces batch
  statistics (with gradients) through any backend, so BatchNorm on N CPU ranks matches one process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group (a plain single-process run)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from the environment torchrun sets; None outside torchrun."""
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except (KeyError, ValueError):
        return None


def env_rank() -> int:
    """This process's rank before (or without) a process group: 0 outside torchrun."""
    env = torchrun_env()
    return env[0] if env else 0


def init(device: str = "auto") -> DistInfo:
    """Join the process group torchrun prepared. Device per LOCAL_RANK: NCCL on GPUs, gloo on the CPU."""
    env = torchrun_env()
    if env is None:
        raise ValueError(
            "--distributed needs the environment torchrun sets (RANK, WORLD_SIZE, ...): start with "
            "`torchrun --nproc_per_node N -m core.train --distributed ...`"
        )
    rank, world, local = env
    want_cuda = device == "auto" or device.startswith("cuda")
    if want_cuda and torch.cuda.is_available():
        n_gpu = torch.cuda.device_count()
        if local >= n_gpu:
            raise ValueError(
                f"LOCAL_RANK {local} but this node has {n_gpu} GPU(s): use --nproc_per_node <= {n_gpu}, "
                "or --device cpu"
            )
        dev, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(dev)
    elif device.startswith("cuda"):
        raise ValueError(f"device {device} requested but CUDA is not available")
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End a rank's process without Python's interpreter finalization (what `multiprocessing` does
    for its workers), once everything it wrote is closed and its output flushed.

    Why: destroy_process_group() does not stop the gloo backend of a DDP run. DDP keeps C++
    references to the process group, so its native threads (two `pt_gloo_runloop` workers and the
    `gloo_tcp_loop`) keep running; shutdown() and abort() do not join them. A normal exit then
    finalizes the interpreter and runs C++ static destructors while those threads are alive. A native
    thread that touches the interpreter (the GIL) during finalization is ended by Python with a
    forced unwind, and a C++ thread object destroyed while still joinable calls std::terminate:
    "terminate called without an active exception", SIGABRT. Ranks other than 0 hit it most, since
    they exit while rank 0 still evaluates and holds the connections; CPU load widens the window.
    os._exit ends the process (and those threads) at once, with the exit code torchrun reports."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be said
            pass
    os._exit(int(code))


def barrier(info: DistInfo) -> None:
    if not info.enabled:
        return
    if info.backend == "nccl":
        dist.barrier(device_ids=[info.device.index])
    else:
        dist.barrier()


def all_reduce(values: Sequence[float], info: DistInfo, op: str = "sum") -> list[float]:
    """Reduce a few numbers across ranks in one collective (float64); identity without a group."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return [float(v) for v in t.cpu()]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous share of n items (sizes differ by at most one, like
    numpy.array_split); concatenating the shares in rank order gives back the whole batch."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's copy is the sum of the copies' gradients."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: ANN001
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class _AllGather(torch.autograd.Function):
    """Equal-sized tensors of all ranks concatenated along dim 0; backward = reduce-scatter (written as
    all_reduce + own slice, which every backend has)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: ANN001
        ctx.rank, ctx.n = dist.get_rank(), t.shape[0]
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def all_reduce_with_grad(t: Tensor) -> Tensor:
    return _AllReduceSum.apply(t)


def gather_with_grad(t: Tensor, info: DistInfo) -> Tensor:
    """All ranks' equal-sized `t`, concatenated in rank order; gradients flow back to each owner."""
    if not info.enabled or info.world_size == 1:
        return t
    return _AllGather.apply(t)


def gather(t: Tensor, info: DistInfo) -> Tensor:
    if not info.enabled or info.world_size == 1:
        return t
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


class DistributedMPerClassSampler:
    """PML's MPerClassSampler made reproducible and shardable.

    `global_batches()` depends only on (labels, m, batch size, length, seed, epoch), never on the global
    numpy random state, so every rank (and a single-process run) builds the same list of m-per-class
    global batches. Iterating yields this rank's share of each: `batch_size / world_size` indices, a
    contiguous slice, so the shares are disjoint and together form the global batch."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        m_per_class: int,
        batch_size: int,
        length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        from core.losses import make_sampler

        if batch_size % world_size:
            raise ValueError(
                f"the m-per-class batch ({batch_size}) must split evenly over {world_size} processes; "
                "choose a batch size that is a multiple of both m_per_class and the number of processes"
            )
        self.sampler = make_sampler(np.asarray(labels), m_per_class, batch_size, length)
        self._label_order = list(self.sampler.labels)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Global batches per epoch."""
        return len(self.sampler) // self.batch_size

    @property
    def num_samples(self) -> int:
        """Indices per epoch, all ranks together."""
        return len(self.sampler)

    def global_batches(self) -> np.ndarray:
        """[batches, batch_size] indices for this epoch."""
        from pytorch_metric_learning.utils import common_functions as c_f

        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(seed)
        self.sampler.labels = list(self._label_order)  # PML shuffles this list in place
        try:
            idx = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.sampler))
        finally:
            c_f.NUMPY_RANDOM = saved
        return idx.reshape(-1, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        start, end = shard_bounds(self.batch_size, self.rank, self.world_size)
        for batch in self.global_batches():
            yield batch[start:end].tolist()


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any backend (gloo too).

    Two-pass mean/variance through autograd-aware all_reduce, the same maths as one process on the
    whole batch; running statistics use the unbiased global variance like torch's BatchNorm. Without a
    process group (or in eval mode) it is plain BatchNorm. State-dict keys are BatchNorm's."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(input)
        all_reduce = all_reduce_with_grad
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() / c], dtype=input.dtype, device=input.device)
        # pass 1: global mean (the count rides along in the same collective)
        packed = all_reduce(torch.cat([input.sum(dims), count]))
        total = packed[c].detach()
        mean = packed[:c] / total
        # pass 2: global biased variance around the global mean
        var = all_reduce((input - mean.view(shape)).pow(2).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
                )
                n = float(total)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=factor)
        out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on GPUs; `GlooSyncBatchNorm` on the CPU (torch's refuses CPU tensors)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


class LossStep(nn.Module):
    """What DDP wraps: embed and compute the loss in one forward, so every parameter (backbone and
    head) is used inside DDP's forward and synchronised.

    - `gather=False` (softmax-type losses, a per-sample mean): the local mean is scaled by
      `weight = n_local * world / n_global`; DDP averages gradients over ranks, so the result is the
      gradient of the global-batch mean, also for a last batch that does not split evenly.
    - `gather=True` (triplet, N-pair: mining needs the whole batch): embeddings and labels of all
      ranks are gathered (with gradients) and every rank computes the global-batch loss.

    Returns (loss to backpropagate, the batch's loss value, local embeddings)."""

    def __init__(self, model: nn.Module, info: DistInfo, gather: bool) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.gather = gather

    def forward(self, x: Tensor, y: Tensor, weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        expand = getattr(self.model.head, "expand_batch", None)
        if expand is not None and self.model.training:
            # heads that train on more than the batch (core.transform_classes): one forward over
            # the batch and its extra copies; the batch's own embeddings are reported
            x_all, y_all = expand(x, y)
            emb_all = self.model.embed(x_all)
            loss = self._head_loss(emb_all, y_all)
            return (loss * weight if weight != 1.0 else loss), loss, emb_all[: len(x)]
        emb = self.model.embed(x)
        if self.gather:
            loss = self._head_loss(gather_with_grad(emb, self.info), gather(y, self.info))
            return loss, loss, emb
        loss = self._head_loss(emb, y)
        return (loss * weight if weight != 1.0 else loss), loss, emb

    def _head_loss(self, emb: Tensor, y: Tensor) -> Tensor:
        # under bf16 autocast only the backbone runs in bfloat16: the normalisation, the class
        # weights and the softmax of every loss keep float32 (a bf16 softmax loses the small
        # probabilities that the loss lives on)
        with torch.autocast(emb.device.type, enabled=False):
            return self.model.head(emb.float(), y)


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if info.device.type == "cuda":
        return DDP(module, device_ids=[info.device.index], output_device=info.device.index)
    return DDP(module)


# A failed rank's report lives in core/rank_failure.py; these names stay importable from here.
from core.rank_failure import (  # noqa: E402, F401
    finish_failure_report,
    outcome_of_stop,
    peer_failure,
    start_failure_report,
)
