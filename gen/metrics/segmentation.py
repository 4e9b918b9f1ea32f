"""Semantic segmentation scores from one confusion matrix accumulated over a whole evaluation set
(Long et al. 2015, FCN §5), not averaged per image.

n[i, j] = pixels of true class i predicted as j; t_i = sum_j n[i, j].
pixel accuracy = sum_i n_ii / sum_i t_i
mean accuracy  = mean_i n_ii / t_i                              (classes with t_i > 0)
mean IU        = mean_i n_ii / (t_i + sum_j n_ji - n_ii)        (classes seen in truth or prediction)
f.w. IU        = (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from ..data.labels import IGNORE_INDEX


@contextmanager
def _native_bincount() -> Iterator[None]:
    """Deterministic algorithms off for the block. Under them torchmetrics counts with an (N, K*K)
    one-hot table instead of torch.bincount (1.3 GB and 200x the time for one 256x256 image with 35
    classes), although bincount without weights is deterministic on the CPU and CUDA alike."""
    on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if on:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        if on:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)


class ConfusionMatrix:
    """torchmetrics' MulticlassConfusionMatrix, accumulated on the predictions' device (the counts
    never leave it until `scores()`), with the FCN scores and errors that name the bad class ids."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._metric: MulticlassConfusionMatrix | None = None  # made on the device of the first update

    @property
    def counts(self) -> torch.Tensor | None:
        """n[i, j] as a (K, K) int64 tensor on the accumulating device; None before any update."""
        return None if self._metric is None else self._metric.confmat

    @property
    def matrix(self) -> np.ndarray:
        """n[i, j] as a (K, K) int64 array."""
        if self.counts is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        return self.counts.cpu().numpy()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """pred, target: same shape, class indices; target pixels equal to ignore_index are skipped.

        Raises ValueError for floating-point maps, a pixel-count mismatch or ids outside 0..K-1."""
        pred, target = torch.as_tensor(pred).flatten(), torch.as_tensor(target).flatten()
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("class maps must hold integer class ids, got floating-point values")
        if self._metric is None:
            # Validation runs on the main process alone: syncing on compute would wait for the others.
            self._metric = MulticlassConfusionMatrix(self.num_classes, ignore_index=self.ignore_index,
                                                     validate_args=False, sync_on_compute=False)
            self._metric.to(pred.device)
        device = self.counts.device
        pred, target = pred.to(device).long(), target.to(device).long()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.numel()} pixels but target has {target.numel()}")
        keep = target != self.ignore_index
        ids = torch.cat([target[keep], pred[keep]])
        bad = ids[(ids < 0) | (ids >= self.num_classes)]
        if bad.numel():
            raise ValueError(f"class ids outside 0..{self.num_classes - 1}: {sorted(set(bad.tolist()))[:10]}")
        with _native_bincount():
            self._metric.update(pred, target)  # its own validation is off: the checks above name the ids

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
