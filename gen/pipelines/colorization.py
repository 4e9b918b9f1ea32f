"""Colorization with an exported network: any image -> its L channel -> predicted ab -> RGB at the
input's size with the input's own L.

Export layout: `network/` (save_pretrained) and `pipeline.json` with the head (classification over
the stored ab bins, decoded by the annealed mean at `temperature`, or ab regression) and the bins.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..color import annealed_mean, join_lab, split_lab
from ..data.transforms import from_pil, to_pil
from ..models.unet import UNET_CLASSES, UNet
from .base import CLASS_KEY, NetworkPipeline, read_export, require_finite, write_meta

AB_SCALE = 110.0  # regression heads predict ab / AB_SCALE


class GrayBaseline:
    """The grayscale baseline of every colorization table (Zhang et al. Table 1): ab = 0 everywhere.
    l_norm (B, 1, H, W) -> ab zeros (B, 2, H, W), on l_norm's device."""

    kind, method, bins = "colorization", "grayscale baseline", None

    def __call__(self, l_norm: torch.Tensor) -> torch.Tensor:
        return torch.zeros(l_norm.shape[0], 2, *l_norm.shape[-2:], device=l_norm.device)


class ColorizationPipeline(NetworkPipeline):
    """x: L channel (B, 1, H, W) normalised to [-1, 1] -> ab (B, 2, H, W) in Lab units, any H, W; a
    network at output stride s > 1 is decoded at H/s and its ab upsampled bilinearly."""

    kind = "colorization"

    def __init__(self, net: UNet, head: str, bins: Optional[np.ndarray] = None, temperature: float = 0.38,
                 method: str = "colorization"):
        if head not in ("classification", "regression"):
            raise ValueError(f"unknown colorization head {head!r}")
        if head == "classification" and (bins is None or len(bins) != net.config.out_channels):
            raise ValueError("a classification head needs one ab bin per output channel")
        self.net, self.head, self.temperature, self.method = net, head, temperature, method
        self.bins = None if bins is None else np.asarray(bins, dtype=np.float64)
        self.inference = "eval"
        self._centres: Optional[torch.Tensor] = None  # the bins on the network's device, copied once

    @torch.no_grad()
    def __call__(self, l_norm: torch.Tensor, temperature: Optional[float] = None) -> torch.Tensor:
        was_training = self.net.training
        self.net.eval()
        try:
            out = require_finite(self.forward(l_norm), "colorization outputs")
        finally:
            self.net.train(was_training)
        if self.head == "regression":
            ab = out * AB_SCALE
        else:
            if self._centres is None or self._centres.device != out.device:
                self._centres = torch.from_numpy(self.bins).to(out.device)
            ab = annealed_mean(out, self._centres, self.temperature if temperature is None else temperature)
        s = self.net.out_stride
        if s == 1:
            return ab
        # A coarse head (Zhang et al.'s 1/4 resolution): the annealed mean is linear in the annealed
        # distribution, so upsampling ab bilinearly equals decoding the bilinearly upsampled annealed
        # distribution.
        ab = F.interpolate(ab, scale_factor=s, mode="bilinear", align_corners=False)
        return ab[..., :l_norm.shape[-2], :l_norm.shape[-1]]

    def colorize(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB (or gray replicated to RGB) in [-1, 1] (B, 3, H, W) -> colorized RGB in [-1, 1]."""
        l_norm, _ = split_lab(rgb)
        return join_lab(l_norm, self(l_norm).cpu())

    def translate_image(self, img: Image.Image) -> Image.Image:
        """Any PIL image (colour is converted to L first) -> colorized RGB of the same size."""
        return to_pil(self.colorize(from_pil(img, 3))[0])

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.net.save_pretrained(path / "network")
        write_meta(path, self.kind, self.method, head=self.head, temperature=self.temperature,
                   bins=None if self.bins is None else self.bins.tolist(),
                   **{CLASS_KEY: type(self.net).__name__})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ColorizationPipeline":
        meta, net = read_export(Path(path), "network", UNET_CLASSES)
        return cls(net, meta["head"], meta["bins"], meta["temperature"], meta.get("method", "colorization"))
