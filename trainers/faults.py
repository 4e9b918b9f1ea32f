"""Fault injection for the crash-and-resume tests: `GEN_FAULT=<point>:<step>` makes the process
SIGKILL itself at that point of that step. Points: during_step (optimizers stepped, LR schedules
and the step counter not yet), after_step, during_checkpoint (between the weights and the RNG files
of the temporary checkpoint), after_checkpoint, during_export.
Unset in normal use; reading one environment variable is the whole cost."""
from __future__ import annotations

import os
import signal

POINTS = ("during_step", "after_step", "during_checkpoint", "after_checkpoint", "during_export")


def maybe_kill(point: str, step: int) -> None:
    spec = os.environ.get("GEN_FAULT")
    if not spec:
        return
    where, _, at = spec.partition(":")
    if where == point and at.isdigit() and int(at) == step:
        os.kill(os.getpid(), signal.SIGKILL)
