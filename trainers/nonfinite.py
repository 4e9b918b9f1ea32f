"""Non-finite losses: found without a host sync per step, then either stop the run (default) or,
with `train.nonfinite=skip`, skip the optimizer updates whose gradients are not finite.

LossMonitor keeps, on the device, each loss term's sum over finite values, how many there were,
and the first step at which a term was NaN or inf; the loop reads it at log cadence and before
every checkpoint, so a non-finite step is never checkpointed (`check_finite`). In skip mode,
SkipGuard guards the optimizers, counts the skipped updates, makes a skipped step leave no trace,
and stops a run whose recent steps were mostly skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from torch import nn

from . import devices
from .checkpoint import checkpoint_dirs

SKIP_WINDOW = 10  # steps; skip mode stops when more than half of the last ones were skipped


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


def last_good(ckpt_root: Path) -> str:
    """The newest whole checkpoint under `ckpt_root`, for an error message ('none' without one)."""
    found = checkpoint_dirs(ckpt_root)
    return str(found[0]) if found else "none"


def check_finite(monitor: LossMonitor, acc: Accelerator, ckpt_root: Path) -> None:
    """train.nonfinite=stop: raise FloatingPointError, on every process together, when a loss was
    non-finite since the run started, naming the step, the terms and the last good checkpoint;
    called before anything non-finite is logged as fine or checkpointed."""
    bad = monitor.first_bad()
    if acc.num_processes > 1:  # every process stops together, not one while the rest wait
        if devices.largest(acc, bad is not None) and bad is None:
            raise FloatingPointError(
                "non-finite loss on another process; see its message. Lower train.lr, "
                "try train.mixed_precision=fp32, or set train.nonfinite=skip"
            )
    if bad is not None:
        raise FloatingPointError(
            f"non-finite loss {', '.join(bad[1])} at step {bad[0]}; last good checkpoint: "
            f"{last_good(ckpt_root)} (nothing after it was saved). Lower train.lr, try "
            "train.mixed_precision=fp32, or set train.nonfinite=skip to skip such updates")


class SkipGuard:
    """train.nonfinite=skip: an optimizer update whose gradients are not finite is skipped and
    counted (`skipped`), the step leaves no trace (norm running statistics are restored), and when
    more than half of the last SKIP_WINDOW steps skipped an update the run stops: skip mode tolerates
    a rare bad batch, not a diverged run. Disabled (`enabled=False`), every method does nothing.
    `ckpt_root` and `lr` are named in that stop's message."""

    def __init__(self, enabled: bool, ckpt_root: Path, lr: float):
        self.enabled, self.ckpt_root, self.lr = enabled, ckpt_root, lr
        self.skipped = 0  # updates skipped so far, over every optimizer
        self.recent: list[bool] = []  # whether each of the last SKIP_WINDOW steps skipped an update
        self.nets: list[nn.Module] = []
        self.before: Optional[tuple[int, list[torch.Tensor]]] = None  # (skipped, buffers) at begin()

    def count(self) -> None:
        self.skipped += 1

    def watch(self, optimizers: list, nets: list[nn.Module]) -> None:
        """Guard `optimizers`' steps; `nets` (unwrapped) are the networks whose buffers a skipped step
        restores."""
        if not self.enabled:
            return
        for opt in optimizers:
            guard_optimizer(opt, self.count)
        self.nets = nets

    def begin(self) -> None:
        """Before a step: copies of every buffer of the watched networks, and the skip count."""
        if self.enabled:
            self.before = (self.skipped, [b.detach().clone() for net in self.nets for b in net.buffers()])

    def end(self, step: int) -> None:
        """After step `step`'s updates: when one was skipped, restore the buffers copied at begin();
        raise FloatingPointError when the run has diverged (its weights are still those of the last
        good update, and nothing is saved)."""
        if not self.enabled:
            return
        count, buffers = self.before
        skipped = self.skipped > count
        if skipped:
            with torch.no_grad():
                for b, old in zip((b for net in self.nets for b in net.buffers()), buffers):
                    b.copy_(old)
        self.recent = (self.recent + [skipped])[-SKIP_WINDOW:]
        if len(self.recent) == SKIP_WINDOW and sum(self.recent) > SKIP_WINDOW // 2:
            raise FloatingPointError(
                f"train.nonfinite=skip: {sum(self.recent)} of the last {SKIP_WINDOW} steps had non-finite "
                f"gradients (up to step {step}); the run has diverged, so it stops here without saving. "
                f"Last good checkpoint: {last_good(self.ckpt_root)}. Lower train.lr (now {self.lr:g}) or "
                "set train.max_grad_norm"
            )
