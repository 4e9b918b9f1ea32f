"""Colorization metrics of Zhang et al. 2016 (Table 1) and a colourfulness measure.

Raw accuracy AuC: the share of pixels whose predicted ab lies within L2 distance t of the truth,
for t = 0, 1, ..., 150, averaged over t (area under the CDF, in [0, 1]). The class-rebalanced
variant weights every pixel by the inverse frequency of its true ab bin in the evaluated set, so
each colour bin counts equally (rare saturated colours matter as much as common grays).
"""
from __future__ import annotations

import numpy as np
import torch

THRESHOLDS = np.arange(0, 151, dtype=np.float64)


class AuCAccumulator:
    """Accumulates per-pixel ab errors over a whole evaluation set as one (true bin, error step)
    histogram of Q x 152 counts: its size does not grow with the number of images, and both AuCs
    come out of it exactly (the rebalancing weight of a pixel depends only on its true bin)."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins
        self.hist = np.zeros((num_bins, len(THRESHOLDS) + 1), dtype=np.int64)  # (Q, 152)

    def update(self, ab_pred: torch.Tensor, ab_true: torch.Tensor, true_bins: torch.Tensor) -> None:
        """ab_*: (B, 2, H, W) in ab units; true_bins: (B, H, W) nearest-bin index of ab_true."""
        err = (ab_pred.float() - ab_true.float()).norm(dim=1).flatten().cpu().numpy()
        bins = true_bins.flatten().cpu().numpy().astype(np.int64)
        cell = bins * self.hist.shape[1] + _steps(err)
        self.hist += np.bincount(cell, minlength=self.hist.size).reshape(self.hist.shape)

    def scores(self) -> dict[str, float]:
        counts = self.hist.sum(axis=1).astype(np.float64)  # pixels per true bin
        inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
        return {"AuC": _auc_of(self.hist.sum(axis=0).astype(np.float64)),
                "AuC_rebalanced": _auc_of((self.hist * inverse[:, None]).sum(axis=0))}


def _steps(errors: np.ndarray) -> np.ndarray:
    # err <= t (integer t) iff ceil(err) <= t: errors beyond 150 share the last step (never counted)
    return np.minimum(np.ceil(errors), len(THRESHOLDS)).astype(np.int64)


def _auc_of(hist: np.ndarray) -> float:
    """Mean over t = 0..150 of the share of the (weighted) step histogram (152,) at steps <= t."""
    cdf = np.cumsum(hist)[: len(THRESHOLDS)] / hist.sum()
    return float(cdf.mean())


def auc(errors: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean over t = 0..150 of the (weighted) share of errors <= t."""
    return _auc_of(np.bincount(_steps(errors), weights=weights, minlength=len(THRESHOLDS) + 1))


def colourfulness(rgb: torch.Tensor) -> list[float]:
    """Hasler & Suesstrunk (2003) colourfulness of each image; rgb (B, 3, H, W) in [-1, 1]:
    sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2) on 0..255 values, rg = R - G,
    yb = (R + G) / 2 - B. Gray images score 0."""
    x = (rgb.float().clamp(-1, 1) + 1) * 127.5
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mean = (rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2).sqrt()
    return (std + 0.3 * mean).tolist()


class ColorizationScores:
    """One predictor's scores over a whole evaluation set: AuC (raw and rebalanced) from the pooled
    pixels, mean RGB PSNR and mean colourfulness over images."""

    def __init__(self, centres: torch.Tensor):
        self.centres = centres.float().cpu()
        self.auc = AuCAccumulator(len(centres))
        self.psnr: list[float] = []
        self.colourfulness: list[float] = []

    def update(self, images: torch.Tensor, pred_ab: torch.Tensor) -> torch.Tensor:
        """images: true RGB (B, 3, H, W) in [-1, 1]; pred_ab: (B, 2, H, W). Returns the predicted RGB."""
        from ..color import join_lab, nearest_bin, split_lab
        from .image import psnr

        l_norm, ab = split_lab(images.cpu())
        pred_ab = pred_ab.float().cpu()
        self.auc.update(pred_ab, ab, nearest_bin(ab, self.centres))
        rgb = join_lab(l_norm, pred_ab)
        self.psnr += psnr(rgb, images.cpu())
        self.colourfulness += colourfulness(rgb)
        return rgb

    def scores(self) -> dict[str, float]:
        return dict(self.auc.scores(), PSNR=float(np.mean(self.psnr)),
                    colourfulness=float(np.mean(self.colourfulness)))
