"""Semantic segmentation with an exported U-Net: photo -> class-index map.

Export layout: `segmenter/` (save_pretrained) and `pipeline.json` with the class count and the
raw label value of class 0, so written label maps use the dataset's own ids.
"""
from __future__ import annotations

from pathlib import Path


import numpy as np
import torch
from PIL import Image

from ..data.labels import palette
from ..data.transforms import from_pil
from ..models.inference import inference_semantics
from ..models.fcn import FCN
from ..models.unet import UNET_CLASSES, UNet
from .base import CLASS_KEY, NetworkPipeline, read_export, require_finite, write_meta

SEGMENTER_CLASSES = {**UNET_CLASSES, "FCN": FCN}


class SegmentationPipeline(NetworkPipeline):
    """x: (B, 3, H, W) in [-1, 1] -> class indices (B, H, W) int64, any H, W."""

    kind = "segmentation"

    def __init__(self, net: UNet | FCN, num_classes: int, first_label: int = 0, method: str = "segmentation"):
        self.net, self.num_classes, self.first_label, self.method = net, num_classes, first_label, method
        self.inference = "eval"

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with inference_semantics(self.net, "eval"):
            return require_finite(self.forward(x), "segmentation logits")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)

    def translate_image(self, img: Image.Image) -> Image.Image:
        """Any PIL photo -> palette PNG of the same size whose pixel values are the raw label ids."""
        return self.label_png(self(from_pil(img, self.net.config.in_channels))[0])

    def label_png(self, classes: torch.Tensor) -> Image.Image:
        """(H, W) class indices -> palette PNG image of the raw label ids (first_label + index)."""
        raw = (classes.cpu().numpy() + self.first_label).astype(np.uint8)
        out = Image.fromarray(raw, "P")
        colours = np.zeros((256, 3), np.uint8)
        colours[self.first_label:self.first_label + self.num_classes] = palette(self.num_classes)
        out.putpalette(colours.ravel().tolist())
        return out

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.net.save_pretrained(path / "segmenter")
        write_meta(path, self.kind, self.method, num_classes=self.num_classes, first_label=self.first_label,
                   **{CLASS_KEY: type(self.net).__name__})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "SegmentationPipeline":
        meta, net = read_export(Path(path), "segmenter", SEGMENTER_CLASSES)
        return cls(net, meta["num_classes"], meta.get("first_label", 0), meta.get("method", "segmentation"))
