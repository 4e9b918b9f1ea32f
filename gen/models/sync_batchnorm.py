"""Synchronized batch norm (`norm="sync_batch"`): training statistics over the global batch of all
processes of torch.distributed, as if one process had run the whole batch.

One process, evaluation, or no process group: exactly nn.BatchNorm2d (same state dict, same kernel),
so an exported sync_batch network is a batch-norm network at inference. torch.nn.SyncBatchNorm runs
on GPUs only (DDP and its forward refuse CPU modules), so the layer here synchronizes on any device
with differentiable all-reduces (gloo on the CPU), and `use_torch_kernels` swaps in torch's fused CUDA
layer where it runs (the trainer does so on a GPU).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn


def _world_size(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients too, so every rank's loss reaches every
    rank's inputs through the shared statistics (as torch's SyncBatchNorm backward does). The same as
    torch.distributed.nn.functional.all_reduce, which is deprecated."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllReduceSum.apply(grad, ctx.group), None


def _all_reduce(t: torch.Tensor, group) -> torch.Tensor:
    return _AllReduceSum.apply(t, group if group is not None else dist.group.WORLD)


def global_batch_stats(x: torch.Tensor, group=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased variance and element count of x (B, C, H, W) over every process.
    Two passes (mean, then squared deviations) in float64 across ranks: sum(x^2)/n - mean^2 would
    cancel, and the count must stay exact beyond float32's 2^24. Differentiable; (C,), (C,), ()."""
    xf = x.float()
    n = xf.new_full((1,), xf.numel() // xf.shape[1], dtype=torch.float64)
    sums = _all_reduce(torch.cat([xf.sum((0, 2, 3)).double(), n]), group)  # (C + 1,)
    count = sums[-1]
    mean = (sums[:-1] / count).float()
    dev = xf - mean[None, :, None, None]
    var = (_all_reduce((dev * dev).sum((0, 2, 3)).double(), group) / count).float()
    return mean, var, count


class SyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode statistics (and running-statistics updates) are those of
    the global batch. x: (B, C, H, W) -> same shape and dtype. Every process must call it the same
    number of times per step (as with any collective); evaluation mode never communicates."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size(self.process_group) == 1:
            return super().forward(x)
        self._check_input_dim(x)
        mean, var, count = global_batch_stats(x, self.process_group)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())
        shape = (1, -1, 1, 1)
        y = (x.float() - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """nn.BatchNorm's update: momentum (or the cumulative average for momentum None), unbiased var."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum
        if factor is None:
            factor = 1.0 / self.num_batches_tracked.item()
        unbiased = var * (count / (count - 1).clamp(min=1)).float()
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def use_torch_kernels(net: nn.Module) -> int:
    """Replace every SyncBatchNorm2d in `net` by torch.nn.SyncBatchNorm in place (fused CUDA kernels;
    GPUs only), keeping the same parameter and buffer objects (optimizers built on them stay valid)
    and the layers' forward hooks. Returns the number of layers replaced."""
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not SyncBatchNorm2d:
                continue
            new = nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, child.process_group)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            for hooks in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                          "_forward_hooks_with_kwargs"):
                getattr(new, hooks).update(getattr(child, hooks))
            new.train(child.training)
            setattr(parent, name, new)
            replaced += 1
    return replaced
