"""FCN-style segmentation baseline after Long, Shelhamer and Darrell (2015): a fully convolutional
encoder (VGG-like stages, no pretrained weights here), a 1x1 classifier, and learned upsampling
(transposed convs initialised to bilinear interpolation; `upsample="bilinear"` keeps them fixed) with
skip fusion.

FCN-32s upsamples the stride-32 scores once by 32. FCN-16s first fuses them (x2) with scores from
the stride-16 features; FCN-8s also with the stride-8 features. Skip classifiers start at zero so
a deeper-fused net starts as its coarser parent, as in the paper's staged training.
"""
from __future__ import annotations


import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import AnySize, conv_bias, norm_layer

FCN_UPSAMPLERS = ("transposed", "bilinear")


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """(C, C, 2f, 2f) weights that make ConvTranspose2d(stride f, padding f/2) bilinear x f (per channel)."""
    size = 2 * factor
    centre = factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    kernel = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    kernel[range(channels), range(channels)] = torch.outer(taps, taps)
    return kernel.float()


def bilinear_upsample(channels: int, factor: int, trainable: bool = True) -> nn.ConvTranspose2d:
    """Bilinear x factor as a transposed conv, initialised so; `trainable=False` keeps it fixed."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, factor))
    up.keep_init = True  # init_weights must not redraw it
    up.weight.requires_grad_(trainable)
    return up


class FCN(AnySize, ModelMixin, ConfigMixin):
    """x: (B, in_channels, H, W) -> logits (B, num_classes, H, W); H, W multiples of 32."""

    @register_to_config
    def __init__(self, in_channels: int = 3, num_classes: int = 21, ngf: int = 64, variant: str = "fcn8s",
                 norm: str = "batch", dropout: float = 0.5, upsample: str = "transposed"):
        super().__init__()
        if variant not in ("fcn32s", "fcn16s", "fcn8s"):
            raise ValueError(f"unknown FCN variant {variant!r}; choose fcn32s, fcn16s or fcn8s")
        if upsample not in FCN_UPSAMPLERS:
            raise ValueError(
                f"an FCN head upsamples with one of {FCN_UPSAMPLERS} (learned from bilinear, or "
                f"fixed bilinear), got {upsample!r}; unpooling needs the U-Net's mirrored decoder"
            )
        widths = [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8]
        self.stages = nn.ModuleList()
        c = in_channels
        for w in widths:  # each stage halves the resolution: strides 2, 4, 8, 16, 32
            self.stages.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=conv_bias(norm)), norm_layer(norm, w), nn.ReLU(True),
                nn.Conv2d(w, w, 3, padding=1, bias=conv_bias(norm)), norm_layer(norm, w), nn.ReLU(True),
                nn.MaxPool2d(2)))
            c = w
        fc = ngf * 16  # "fc6/fc7" as convolutions
        self.head = nn.Sequential(nn.Conv2d(c, fc, 3, padding=1), nn.ReLU(True), nn.Dropout2d(dropout),
                                  nn.Conv2d(fc, fc, 1), nn.ReLU(True), nn.Dropout2d(dropout),
                                  nn.Conv2d(fc, num_classes, 1))
        self.variant, self.multiple = variant, 32
        fused = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}[variant]
        # Skip classifiers on pool4 (stride 16) and pool3 (stride 8), zero-initialised.
        self.skip_scores = nn.ModuleList(nn.Conv2d(widths[3 - k], num_classes, 1) for k in range(fused))
        for conv in self.skip_scores:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            conv.keep_init = True
        learned = upsample == "transposed"
        self.fuse_up = nn.ModuleList(bilinear_upsample(num_classes, 2, learned) for _ in range(fused))
        self.final_up = bilinear_upsample(num_classes, 32 // 2 ** fused, learned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_size(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)  # strides 2, 4, 8, 16, 32
        scores = self.head(x)  # (B, K, H/32, W/32)
        for k, (skip, up) in enumerate(zip(self.skip_scores, self.fuse_up)):
            scores = up(scores) + skip(feats[3 - k])  # stride 32 -> 16 -> 8
        return self.final_up(scores)
