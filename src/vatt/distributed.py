"""Process-group helpers: rank/world queries, set-up from torchrun's environment, and
``gather_with_grad``, the autograd-aware all-gather behind the global contrastive negatives.

Everything here works in a single process with no process group: the world is then one rank and
a gather returns its input unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_local_rank() -> int:
    """The rank within this node, as torchrun sets it in ``LOCAL_RANK`` (0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_by_torchrun() -> bool:
    """True when ``RANK`` and ``WORLD_SIZE`` are in the environment (torchrun, Slurm + torchrun)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str | torch.device = "cpu", timeout_minutes: float = 30.0) -> bool:
    """Join the process group torchrun describes in the environment; no-op without it.

    Uses NCCL when ``device`` is CUDA, gloo otherwise. Returns True when a group was created
    (the caller then owns :func:`cleanup`).
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return False
    world = int(os.environ["WORLD_SIZE"])
    if world <= 1:
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    log.info("joined process group: rank %d of %d (%s)", dist.get_rank(), world, backend)
    return True


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank has finished its collectives
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (no gradient); returns ``x`` itself in one process."""
    if not is_distributed():
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(x) / get_world_size()


def gather_sizes(n: int, device: str | torch.device = "cpu") -> list[int]:
    """The leading size each rank contributes, in rank order (``[n]`` in one process)."""
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _all_gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0; ranks may contribute different sizes."""
    top = max(sizes)
    if x.shape[0] < top:
        pad = x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends each rank the gradient of its own rows, summed over ranks.

    Every rank's loss uses every rank's rows, so the gradient w.r.t. rank r's input is the sum
    over all ranks s of d loss_s / d x_r: an all-reduce(sum) of the full gradient, then the
    local slice. With DDP, which averages parameter gradients over ranks, this gives the
    gradient of the mean of the per-rank losses. (Returning only the local slice of the local
    gradient, or dividing the sum by the world size, are the classic mistakes.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        return _all_gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # A copy: autograd may hand us a buffer it still uses, and all_reduce works in place.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` ``[n_r, ...]`` from every rank in rank order: ``[sum n_r, ...]``.

    Gradients flow back to each rank's own rows (see :class:`_GatherWithGrad`). In one process
    (no group, or a group of one) this returns ``x`` itself. ``sizes`` (from
    :func:`gather_sizes`) saves a round of communication when several tensors share them.
    """
    if not is_distributed():
        return x
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes, dist.get_rank())


def gather_no_grad(x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (masks, labels)."""
    if not is_distributed():
        return x
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device)
    with torch.no_grad():
        return _all_gather_padded(x.detach(), sizes)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks (every rank's loss uses the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (identity in one process)."""
    return _AllReduceSum.apply(x) if is_distributed() else x


class SyncBatchNorm(torch.nn.BatchNorm1d):
    """BatchNorm over ``[B, C]`` whose training statistics cover the batch of every rank.

    Unlike ``torch.nn.SyncBatchNorm`` it runs on CPU (gloo) as well as GPU; the parameters and
    buffers are those of ``BatchNorm1d``, so state dicts are interchangeable. In one process, or
    in eval mode, it is exactly ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"SyncBatchNorm expects [B, C], got {list(x.shape)}")
        xf = x.float()
        count = all_reduce_sum(torch.tensor(float(x.shape[0]), device=x.device))
        mean = all_reduce_with_grad(xf.sum(0)) / count
        var = all_reduce_with_grad(((xf - mean) ** 2).sum(0)) / count  # biased, as BN normalises
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        return y.to(x.dtype)


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``BatchNorm1d`` in ``module`` by :class:`SyncBatchNorm` (same weights, device
    and dtype)."""
    if isinstance(module, torch.nn.BatchNorm1d) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, device=None)
        like = next(t for t in module.state_dict().values() if t.is_floating_point())
        new.to(like.device, like.dtype)  # before loading: load_state_dict casts to the new module's dtype
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
