"""The LR schedule and the time budget that may shape it.

`LRPlan` is every method's LR factor: linear warm-up from 0 over train.warmup_steps, constant, then
linear decay to 0 at the horizon, starting at train.lr_decay_start x horizon (Isola et al. 2017;
Zhu et al. 2017 decay over the last half). The horizon is train.max_steps unless a time budget
re-plans it: each re-plan is a knot (step, horizon) from which the factor continues from its value
at that step, so the LR never jumps, and the knots are checkpointed, so a resumed run has the LRs of
the run that wrote them.

`TimeBudget` is train.time_budget_minutes: the deadline (every process stops at the same step), and
with train.budget_schedule=fit the number of steps the rest of the budget allows at the step time
measured so far (validations and checkpoints included), which becomes the plan's horizon.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

MEASURE_AFTER = 2  # steps left out of the step time: the first ones build caches and kernels
MIN_MEASURED = 5  # steps timed before the first estimate
REPLAN_TOLERANCE = 0.01  # a re-estimate within 1% (or 2 steps) of the horizon keeps it


class LRPlan:
    """factor(step) -> LR multiplier in [0, 1]. Knots [(step, horizon), ...], the first (0, max_steps).

    In the segment from knot (s_k, H_k): if the factor at s_k is still 1 and decay_start x H_k lies
    ahead, constant then linear from 1 at int(decay_start x H_k) to 0 at H_k; otherwise linear from
    the factor at s_k to 0 at H_k. With one knot this is the reference's linear decay."""

    def __init__(self, max_steps: int, decay_start: float, warmup_steps: int = 0):
        self.decay_start, self.warmup_steps = decay_start, warmup_steps
        self.knots: list[tuple[int, int]] = [(0, max_steps)]

    @property
    def horizon(self) -> int:
        """The step at which the LR reaches 0 (the run's last step)."""
        return self.knots[-1][1]

    @property
    def replanned(self) -> bool:
        return len(self.knots) > 1

    def segments(self, upto: float = math.inf) -> list[tuple[int, int, float]]:
        """(s_k, H_k, factor at s_k) of the knots at or before step `upto`."""
        segs: list[tuple[int, int, float]] = []
        for s, h in self.knots:
            if s > upto:
                break
            segs.append((s, h, self._linear(segs[-1], s) if segs else 1.0))
        return segs

    def _linear(self, seg: tuple[int, int, float], step: int) -> float:
        s, h, v = seg
        start = int(h * self.decay_start)
        if v == 1.0 and start > s:  # constant, then the decay of this horizon
            return 1.0 if step < start else max(0.0, (h - step) / max(1, h - start))
        return max(0.0, v * (h - step) / max(1, h - s))

    def decay_from(self) -> int:
        """The step at which the LR started (or will start) to decay."""
        began = 0
        for s, h, v in self.segments():
            if v == 1.0:
                began = max(s, int(h * self.decay_start))
        return began

    def plan_value(self, step: int) -> float:
        """The schedule's factor at `step`, warm-up aside."""
        return self._linear(self.segments(step)[-1], step)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.plan_value(step)

    def replan(self, step: int, horizon: int) -> None:
        """From `step` on, reach 0 at `horizon` (> step); knots after `step` are dropped."""
        if horizon <= step:
            raise ValueError(f"a plan's horizon ({horizon}) must lie after its step ({step})")
        self.knots = [k for k in self.knots if k[0] < step] + [(step, horizon)]
        if self.knots[0][0] != 0:
            self.knots.insert(0, (0, horizon))

    def state_dict(self) -> dict:
        return {"knots": [list(k) for k in self.knots]}

    def load_state_dict(self, state: dict) -> None:
        self.knots = [(int(s), int(h)) for s, h in state["knots"]]


class TimeBudget:
    """train.time_budget_minutes from `start` (clock seconds); minutes None: no deadline."""

    def __init__(self, minutes: Optional[float], step: int, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        now = clock()
        self.deadline = now + 60 * minutes if minutes else math.inf
        self.first_step = step  # the step this invocation started from
        self.timed_from: Optional[tuple[int, float]] = None  # (step, clock) where timing starts
        # seconds the last step's extra work takes (its validation, checkpoint), by name: the last
        # step does them all and the export, so the plan keeps that much of the budget for them
        self.reserve: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.deadline != math.inf

    def spent(self) -> bool:
        return self.clock() > self.deadline

    def observe(self, step: int) -> None:
        """Call after each step: starts the timing MEASURE_AFTER steps into this invocation."""
        if self.timed_from is None and step >= self.first_step + MEASURE_AFTER:
            self.timed_from = (step, self.clock())

    def seconds_per_step(self, step: int) -> Optional[float]:
        """Wall seconds per step since timing began (None before MIN_MEASURED steps were timed)."""
        if self.timed_from is None or step - self.timed_from[0] < MIN_MEASURED:
            return None
        s0, t0 = self.timed_from
        return (self.clock() - t0) / (step - s0)

    def timed(self, name: str, seconds: float) -> None:
        """The last `name` cadence (validation, checkpoint) took `seconds`."""
        self.reserve[name] = seconds

    def last_step(self, step: int) -> Optional[int]:
        """The step the rest of the budget, less the reserve for the last step's validation and
        checkpoint (an export costs about a checkpoint), reaches at the measured pace (None: not
        measured yet)."""
        rate = self.seconds_per_step(step)
        if rate is None:
            return None
        left = self.deadline - self.clock() - sum(self.reserve.values()) - self.reserve.get("checkpoint", 0.0)
        return step + max(1, int(max(0.0, left) / max(rate, 1e-9)))


def worth_replanning(horizon: int, estimate: int) -> bool:
    """An estimate away from the horizon by more than the tolerance."""
    return abs(estimate - horizon) > max(2, REPLAN_TOLERANCE * horizon)
