"""Colorization (Zhang et al. 2016): the network colours the L channel of a photo; scored by AuC of
the ab error (raw and class-rebalanced, Table 1), RGB PSNR and colourfulness, FID / KID against the
real photos, beside the grayscale baseline (ab = 0) scored by the same code and the ground truth's
colourfulness."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..color import split_lab
from ..data.transforms import to_pil
from ..metrics.colorization import ColorizationScores, colourfulness
from ..pipelines.colorization import GrayBaseline
from .base import Scoring


def bins_of(pipe, fallback: Optional[np.ndarray]) -> np.ndarray:
    """The ab bins the metrics' rebalancing uses: the pipeline's own, else `fallback` (the data's)."""
    if pipe.bins is not None:
        return pipe.bins
    if fallback is None:
        raise ValueError("colorization scoring needs ab bins: the export has none and the data gives none")
    return fallback


def photo_of(item: dict) -> torch.Tensor:
    """The colour photo whose L channel is coloured: an image folder's image, a pair's target."""
    return item["image"] if "image" in item else item["target"]


class ColorizationScoring(Scoring):
    """A colorization export on items holding an RGB photo ("image", or a pair's "target") in [-1, 1]."""

    columns = ["gray baseline", "colorized", "ground truth"]
    batch_size = 32

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        centres = torch.from_numpy(bins_of(pipe, self.ctx.bins))
        self.method, self.gray = ColorizationScores(centres), ColorizationScores(centres)
        d = self.ctx.distances
        self.distances = {"run": d.fresh(), "gray": d.fresh()} if d is not None else None
        self.truth_colour: list[float] = []

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        sizes = {tuple(photo_of(it).shape) for it in items}
        if len(sizes) > 1:  # photos of different sizes (data.preprocess=none): one at a time
            return [out for it in items for out in self.add([it])]
        images = torch.stack([photo_of(it) for it in items])
        l_norm, _ = split_lab(images)
        out = self.method.update(images, self.pipe(l_norm).cpu())
        gray_rgb = self.gray.update(images, GrayBaseline()(l_norm))
        for it, img in zip(items, out):
            self.ctx.saved.save(to_pil(img), it["name"])
        if self.distances is not None:
            self.distances["run"].add_real(images)
            self.distances["run"].add_fake("run", out)
            self.distances["gray"].add_real(images)
            self.distances["gray"].add_fake("run", gray_rgb)
        self.truth_colour += colourfulness(images)
        for i in range(len(items)):
            self.keep_row([gray_rgb[i], out[i], images[i]])
        self.count += len(items)
        return [o[None] for o in out]

    def refuse(self, data_kind: str, name: str) -> str:
        return ""  # colours the photo of any split: an image folder's, a pair's target

    def notes(self, name: str, data_kind: str, size: tuple[int, int]) -> list[str]:
        photo = "the ground-truth photo (not the input column)"
        source = "the gray input" if data_kind == "images" else photo
        return [f"{name} colours the L channel of {source}; the grayscale baseline row (ab = 0) is scored "
                "by the same code"]

    def _fid(self, which: str) -> dict[str, Any]:
        return self.distances[which].report("run") if self.distances is not None else {}

    def result(self) -> dict[str, Any]:
        # LPIPS is not a colorization metric
        missing = {k: v for k, v in self.ctx.unavailable().items() if k != "LPIPS"}
        return {**self.method.scores(), **self._fid("run"), **missing,
                "ground_truth_colourfulness": float(np.mean(self.truth_colour))}

    def baselines(self) -> dict[str, dict[str, Any]]:
        gray = {**self.gray.scores(), **self._fid("gray")}
        if self.ctx.fid_missing:
            gray.update(FID=self.ctx.fid_missing, KID=self.ctx.fid_missing)
        return {"grayscale_baseline": gray}
