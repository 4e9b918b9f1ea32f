"""Semantic segmentation scores from one confusion matrix accumulated over a whole evaluation set
(Long et al. 2015, FCN §5), not averaged per image.

n[i, j] = pixels of true class i predicted as j; t_i = sum_j n[i, j].
pixel accuracy = sum_i n_ii / sum_i t_i
mean accuracy  = mean_i n_ii / t_i                              (classes with t_i > 0)
mean IU        = mean_i n_ii / (t_i + sum_j n_ji - n_ii)        (classes seen in truth or prediction)
f.w. IU        = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulated on the predictions' device (the counts never leave it until `scores()`)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.counts: torch.Tensor | None = None  # (K, K) int64, on the device of the first update

    @property
    def matrix(self) -> np.ndarray:
        """n[i, j] as a (K, K) int64 array."""
        if self.counts is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.counts.cpu().numpy()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """pred, target: same shape, class indices; target pixels equal to ignore_index are skipped."""
        pred, target = torch.as_tensor(pred).flatten(), torch.as_tensor(target).flatten()
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("class maps must hold integer class ids, got floating-point values")
        device = pred.device if self.counts is None else self.counts.device
        pred, target = pred.to(device).long(), target.to(device).long()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.numel()} pixels but target has {target.numel()}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        ids = torch.cat([target, pred])
        bad = ids[(ids < 0) | (ids >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"class ids outside 0..{self.num_classes - 1}: {sorted(set(bad.tolist()))[:10]}")
        k = self.num_classes
        counts = torch.bincount(target * k + pred, minlength=k * k).view(k, k)
        self.counts = counts if self.counts is None else self.counts + counts

    def scores(self) -> dict[str, float]:
        n = self.matrix.astype(np.float64)
        diag, truth, predicted = np.diag(n), n.sum(1), n.sum(0)
        union = truth + predicted - diag
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = diag / truth
            iu = diag / union
        total = truth.sum()
        return {"pixel_acc": float(diag.sum() / total) if total else float("nan"),
                "mean_acc": float(np.nanmean(acc)) if (truth > 0).any() else float("nan"),
                "mean_iu": float(np.nanmean(iu)) if (union > 0).any() else float("nan"),
                "fw_iu": float(np.nansum(truth * iu) / total) if total else float("nan")}
