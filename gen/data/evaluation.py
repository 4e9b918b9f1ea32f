"""What evaluation and comparison read of a run's data, as plain values: built from an experiment
config by gen.data.build.eval_data, or by hand from Python (no config needed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .transforms import Geometry


@dataclass
class EvalData:
    """One split of a run's data.

    kind: paired | segmentation (paired, with label maps) | images (photos) | unpaired (CycleGAN).
    items: the dataset of a paired / segmentation / images split (None for unpaired).
    files: unpaired only: {"A", "B"} test files and {"trainA", "trainB"} for the domain classifier.
    bins: (Q, 2) ab bins scoring colorization when a pipeline carries none of its own.
    report: what the split's listing found and skipped (gen.data.listing), printed by sample.py.
    """

    split: str
    kind: str
    items: Any = None
    num_classes: int = 0
    bins: Optional[np.ndarray] = None
    files: dict[str, list[Path]] = field(default_factory=dict)
    geometry: Optional[Geometry] = None
    channels: tuple[int, int] = (3, 3)
    max_16bit: Optional[float] = None
    report: str = ""
    roots: dict[str, Path] = field(default_factory=dict)  # unpaired: the A and B folders item names are under
