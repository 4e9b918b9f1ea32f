"""What every method's scoring shares: the context it scores in, the grid it keeps, the driver.

One scoring object per method (gen/methods/<method>.py) turns items of a split into outputs through
the method's export pipeline and accumulates the method's metrics. Training's validation,
`sample.py evaluate` and `sample.py compare` all run it, so a change to how a method is scored is a
change to one module, and the three report the same figures for the same weights and items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..seeding import item_key
from ..visualize import image_grid


class SavedOutputs:
    """Every output of an evaluated split as a PNG named by its input's stem (None folder: not saved),
    browsable and scorable by other tools. A folder that already holds files is refused unless
    `overwrite`: an earlier evaluation's outputs are not silently mixed or replaced."""

    def __init__(self, folder: Optional[Path], overwrite: bool = False):
        self.folder, self.taken, self.count = folder, set(), 0
        if folder is not None and folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ValueError(f"{folder} already holds files; choose another --output or pass --overwrite")

    def save(self, img: Image.Image, name: str, suffix: str = "", sub: str = "") -> None:
        """img as <folder>/<sub>/<name's path without extension><suffix>.png: subfolders of the split
        mirrored, as sample.py mirrors them."""
        if self.folder is None:
            return
        rel = PurePosixPath(item_key(name))
        stem, k = rel.name, 2
        while f"{sub}/{rel.parent}/{stem}{suffix}".lower() in self.taken:  # inputs sharing a stem keep both
            stem, k = f"{rel.name}_{k}", k + 1
        self.taken.add(f"{sub}/{rel.parent}/{stem}{suffix}".lower())
        folder = (self.folder / sub if sub else self.folder) / rel.parent
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{stem}{suffix}.png")
        self.count += 1


@dataclass
class Sampling:
    """How diffusion runs are sampled: k samples per input, sampler, steps and the seed (None: each
    run's own, as its training grid; sample j of an input is seeded by the seed, the input's name and
    j: gen.seeding)."""
    samples_per_input: int = 1
    steps: int = 50
    scheduler: Optional[str] = None  # None: each run's own (its export's default: DDIM, EDM's Heun)
    seed: Optional[int] = None

    def seed_of(self, pipe) -> int:
        return pipe.seed if self.seed is None else self.seed

    def scheduler_of(self, pipe) -> str:
        """The sampler `pipe` runs: the one asked for, else its export's default; ValueError when the
        export cannot sample with it (a DDPM sampler for an EDM model, or back)."""
        return pipe.check_scheduler(self.scheduler)


@dataclass
class Context:
    """What a scoring adds to its method's own metrics, and where its outputs go.

    lpips / distances: an LPIPS metric and an InceptionDistances (None: left out; with a reason in
    lpips_missing / fid_missing, reported as unavailable). segmenter: a SegmentationPipeline for the
    FCN-score on labelled data. classifier: CycleGAN's domain classifier. bins: the data's ab bins
    for colorization exports that carry none. cifar: a CifarDistances (FD_cifarnet / KID_cifarnet of
    unconditional DDPM samples; None: left out, with the reason in cifar_missing when asked for)."""
    grid_rows: int = 8
    lpips: Any = None
    lpips_missing: str = ""
    distances: Any = None
    fid_missing: str = ""
    cifar: Any = None
    cifar_missing: str = ""
    segmenter: Any = None
    classifier: Any = None
    bins: Optional[np.ndarray] = None
    sampling: Sampling = field(default_factory=Sampling)
    saved: SavedOutputs = field(default_factory=lambda: SavedOutputs(None))

    def unavailable(self) -> dict[str, str]:
        """The metrics this context was asked for but could not compute, with the reason."""
        out = {}
        if self.lpips_missing:
            out["LPIPS"] = self.lpips_missing
        if self.fid_missing:
            out["FID"] = out["KID"] = self.fid_missing
        return out


class Scoring:
    """Scores one pipeline over items. add(items) runs the pipeline on a batch of items and returns
    each item's outputs, (k, C, H, W) on the CPU in [-1, 1] (k = 1 except for diffusion samplers,
    one-hot label colours for segmentation); result() -> {metric: value}; rows / columns: the
    method's own grid (its first ctx.grid_rows items)."""

    columns: list[str] = []
    batch_size = 1  # items per add(); outputs never depend on it (a seed names a sample)

    def __init__(self, pipe, ctx: Optional[Context] = None):
        self.pipe, self.ctx = pipe, ctx or Context()
        self.rows: list[list[torch.Tensor]] = []
        self.count = 0

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        raise NotImplementedError

    makes_images = True  # outputs are images scored against a target (LPIPS, FID, FCN-score apply)

    @property
    def outputs_per_item(self) -> int:
        """How many outputs add() returns per item (grid columns in a comparison)."""
        return 1

    def refuse(self, data_kind: str, name: str) -> str:
        """Why this run cannot be compared on data of `data_kind` ('' when it can)."""
        if data_kind == "images":
            return (f"run {name} ({self.pipe.method}) needs paired data; data.kind=images only has "
                    "grayscale -> colour inputs, for colorization runs")
        return ""

    def notes(self, name: str, data_kind: str, size: tuple[int, int]) -> list[str]:
        """What a comparison table should say about how this run was scored (inputs of `size`)."""
        return []

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Reference predictors scored by the same code beside the method (colorization's gray)."""
        return {}

    def keep_row(self, row: list[torch.Tensor]) -> None:
        if len(self.rows) < self.ctx.grid_rows:
            self.rows.append([t.detach().cpu().clone() for t in row])  # copies: a view keeps its batch alive

    def grid(self) -> Image.Image:
        return image_grid(self.rows, self.columns)


def score_items(scoring: Scoring, items: Sequence[dict], n: Optional[int] = None, desc: str = "score",
                progress: bool = True) -> tuple[dict[str, Any], Image.Image]:
    """The first n items (all by default) through `scoring`, in its batch size -> (metrics, grid)."""
    n = len(items) if n is None else min(n, len(items))
    starts = range(0, n, scoring.batch_size)
    for start in tqdm(starts, desc=desc, dynamic_ncols=True, disable=not progress):
        scoring.add([items[i] for i in range(start, min(start + scoring.batch_size, n))])
    result = scoring.result()
    for name, scores in scoring.baselines().items():
        result[name] = scores
    return result, scoring.grid()
