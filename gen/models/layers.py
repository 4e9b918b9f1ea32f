"""Small building blocks shared by the U-Net and the discriminators."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation by name; instance norm is non-affine as in the pix2pix/CycleGAN reference."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {list(NORMS)}")


def conv_bias(norm: str) -> bool:
    # A conv followed by an affine norm gets its bias from the norm (reference: no bias with BatchNorm).
    return norm in ("instance", "none")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Isola et al.: conv weights ~ N(0, gain), norm scales ~ N(1, gain), biases 0. Layers marked
    with `keep_init = True` (FCN's bilinear upsampling, its zero skip scores) keep their own init."""
    for m in net.modules():
        if getattr(m, "keep_init", False):
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


class AnySize:
    """Mixin for networks whose input must be a multiple of `self.multiple` in each spatial dim."""

    multiple: int

    def check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.multiple} (the network's "
                             "stride-2 levels); crop or pad it, or use forward_any_size")

    def forward_any_size(self, x: torch.Tensor, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Replicate-pad H, W up to the next multiple, run, crop back to (H, W)."""
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return (self.forward(x) if timesteps is None else self.forward(x, timesteps))[..., :h, :w]
