"""Anti-aliased resampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"), as
CUT's ResNet generator uses it (Park et al. 2020): blur, then subsample; upsample, then blur.

Both use the binomial filter [1, 2, 1] x [1, 2, 1] / 16 (down) and [1, 3, 3, 1] x [1, 3, 3, 1] / 64 x 4
(up), one per channel, held as non-persistent buffers: they are constants, not weights (a reference
checkpoint's `filt` tensors are checked and dropped by gen.convert.reference).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ReflectionPad2d


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter of side `size` (3: [1,2,1] outer itself / 16). (size, size)."""
    taps = torch.tensor([float(math.comb(size - 1, k)) for k in range(size)])
    f = torch.outer(taps, taps)
    return f / f.sum()


class BlurDownsample(nn.Module):
    """Reflection pad 1, 3x3 binomial blur, stride 2 (the reference's `Downsample`, filt_size 3).
    (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))."""

    def __init__(self, channels: int):
        super().__init__()
        self.pad = ReflectionPad2d(1)
        self.register_buffer("filt", binomial_filter(3).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


def replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """F.pad(x, (1, 1, 1, 1), mode="replicate") by concatenation, whose backward has a deterministic
    CUDA kernel. (B, C, H, W) -> (B, C, H + 2, W + 2)."""
    x = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    return torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)


class BlurUpsample(nn.Module):
    """x2 upsampling by a stride-2 transposed convolution with the 4x4 binomial filter (gain 4: the
    inserted zeros), on a replicate-padded input, cropped to 2H x 2W (the reference's `Upsample`,
    filt_size 4, pad 'repl'). (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", (binomial_filter(4) * 4).expand(channels, 1, 4, 4).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # padded H + 2 -> transposed conv (stride 2, padding 2, kernel 4) gives 2H + 2; drop the first
        # and the last row / column
        y = F.conv_transpose2d(replicate_pad1(x), self.filt.to(x.dtype), stride=2, padding=2,
                               groups=x.shape[1])
        return y[..., 1:-1, 1:-1]
