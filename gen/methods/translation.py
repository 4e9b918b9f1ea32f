"""Paired translation (pix2pix, L1-only regression, cGAN-only): L1, PSNR, SSIM, LPIPS and FID / KID of
the output against the target; with a segmenter on labelled data (labels -> photo) the FCN-score, the
segmenter's scores on the generated photos against the input labels beside its scores on the real
photos (the ground-truth row, an upper bound): Isola et al. 2017 §4.2."""
from __future__ import annotations

from typing import Any

import torch

from ..data.transforms import to_pil
from ..metrics import ImageScores
from ..metrics.segmentation import ConfusionMatrix
from .base import Context, Scoring


class FCNScore:
    """The FCN-score of image-making runs: one confusion matrix for the generated photos, one for the
    real ones, against the input label maps."""

    def __init__(self, segmenter, num_classes: int):
        self.seg = segmenter
        self.fake, self.real = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)

    def add(self, outs: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> None:
        for out in outs.split(1):
            self.fake.update(self.seg(out)[0], label)
        self.real.update(self.seg(target)[0], label)

    def result(self) -> dict[str, Any]:
        return {"fcn_score": self.fake.scores(), "fcn_score_ground_truth": self.real.scores()}


class ImageOutputs:
    """The scores every image-making method gives its outputs against a target: ImageScores, FID /
    KID (ctx.distances) and the FCN-score (ctx.segmenter, labelled items)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.scores = ImageScores(ctx.lpips)
        self.distances = ctx.distances.fresh() if ctx.distances is not None else None
        self.fcn = None

    def add(self, outs: torch.Tensor, item: dict) -> None:
        """outs: (k, C, H, W) outputs for item's (C, H, W) target, on the CPU."""
        y = item["target"][None]
        for out in outs.split(1):
            self.scores.add(out, y)
        if self.distances is not None and y.shape[1] in (1, 3):
            self.distances.add_real(y)
            self.distances.add_fake("run", outs)
        if self.ctx.segmenter is not None:
            if "label" not in item:
                raise ValueError("the FCN-score needs labelled data (data.kind=segmentation)")
            if self.fcn is None:
                self.fcn = FCNScore(self.ctx.segmenter, self.ctx.segmenter.num_classes)
            self.fcn.add(outs, y, item["label"])

    def result(self) -> dict[str, Any]:
        out = self.scores.means()
        if self.distances is not None:
            out.update(self.distances.report("run"))
        if self.fcn is not None:
            out.update(self.fcn.result())
        return out


class PairedScoring(Scoring):
    """pix2pix-style export on paired items {"input", "target", "name"[, "label"]}."""

    columns = ["input", "output", "target"]

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        self.images = ImageOutputs(self.ctx)

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        outs = []
        for item in items:
            x = item["input"][None]
            out = self.pipe(x).cpu()
            self.ctx.saved.save(to_pil(out[0]), item["name"])
            if "label" in item:  # labels -> photo: the input as the network saw it, beside the output
                self.ctx.saved.save(to_pil(x[0]), item["name"], "_input")
            self.images.add(out, item)
            self.keep_row([x[0], out[0], item["target"]])
            outs.append(out)
            self.count += 1
        return outs

    def result(self) -> dict[str, Any]:
        return {**self.images.result(), **self.ctx.unavailable(), "inference": self.pipe.inference}
