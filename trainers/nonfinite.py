"""Non-finite losses: found without a host sync per step, then either stop the run (default) or,
with `train.nonfinite=skip`, skip the optimizer updates whose gradients are not finite.

LossMonitor keeps, on the device, each loss term's sum over finite values, how many there were,
and the first step at which a term was NaN or inf; the loop reads it at log cadence and before
every checkpoint, so a non-finite step is never checkpointed.
"""
from __future__ import annotations

import torch


class LossMonitor:
    def __init__(self, device: torch.device):
        self.device = device
        self.reset()
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_terms: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}

    def add(self, losses: dict[str, torch.Tensor], step: int, scale: float = 1.0) -> None:
        for k, v in losses.items():
            v = v.detach().float()
            finite = torch.isfinite(v)
            self.sums[k] = self.sums.get(k, 0) + torch.where(finite, v, 0.0) * scale
            self.counts[k] = self.counts.get(k, 0) + finite.float() * scale
            self.bad_terms[k] = (
                self.bad_terms.get(k, torch.zeros((), dtype=torch.bool, device=self.device)) | ~finite
            )
            self.first_bad_step = torch.where(~finite & (self.first_bad_step < 0), step, self.first_bad_step)

    def pop_means(self, reduce=None) -> dict[str, float]:
        """Mean of each term's finite values since the last call (NaN when there were none), then a
        reset. `reduce` (e.g. a sum over processes) combines every process's sums and counts first."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        totals = torch.stack([torch.stack([torch.as_tensor(self.sums[k], device=self.device).float(),
                                           torch.as_tensor(self.counts[k], device=self.device).float()])
                              for k in keys])  # (terms, 2): one tensor, one collective, one host read
        if reduce is not None:
            totals = reduce(totals)
        self.reset()
        return {k: s / n if n > 0 else float("nan") for k, (s, n) in zip(keys, totals.tolist())}

    def first_bad(self) -> tuple[int, list[str]] | None:
        """(first step with a non-finite loss, the terms that were non-finite) or None."""
        step = int(self.first_bad_step)
        if step < 0:
            return None
        return step, sorted(k for k, flag in self.bad_terms.items() if bool(flag))


def guard_optimizer(optimizer, on_skip) -> None:
    """Make `optimizer.step()` a no-op (calling on_skip) when any gradient is NaN or inf."""
    inner = optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            optimizer.zero_grad(set_to_none=True)
            on_skip()
            return None
        return inner(*args, **kwargs)

    optimizer.step = step
