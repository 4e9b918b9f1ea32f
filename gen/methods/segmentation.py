"""Semantic segmentation (FCN-32s/16s/8s, U-Net): pixel accuracy, mean accuracy, mean IU and
frequency-weighted IU from one confusion matrix over the split (Long et al. 2015, §5)."""
from __future__ import annotations

from typing import Any

import torch

from ..data.labels import label_to_tensor
from ..metrics.segmentation import ConfusionMatrix
from .base import Scoring


class SegmentationScoring(Scoring):
    """A segmentation export on labelled items {"input", "label", "name"}; outputs are the predicted
    label maps in their class colours (1, 3, H, W)."""

    columns = ["photo", "predicted", "ground truth"]
    makes_images = False

    def refuse(self, data_kind: str, name: str) -> str:
        if data_kind != "segmentation":
            return f"run {name} is a segmenter but the data has no labels (data.kind={data_kind})"
        return ""

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        self.cm = ConfusionMatrix(pipe.num_classes)

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        k, outs = self.pipe.num_classes, []
        for item in items:
            if "label" not in item:
                raise ValueError(f"{item.get('name', 'item')}: segmentation is scored on labelled data "
                                 "(data.kind=segmentation)")
            pred = self.pipe(item["input"][None])[0]
            self.cm.update(pred, item["label"])
            pred = pred.cpu()
            self.ctx.saved.save(self.pipe.label_png(pred), item["name"])
            colours = label_to_tensor(pred, k)
            self.keep_row([item["input"], colours, label_to_tensor(item["label"], k)])
            outs.append(colours[None])
            self.count += 1
        return outs

    def result(self) -> dict[str, Any]:
        return self.cm.scores()
