"""The one U-Net of gen: every method (pix2pix, CycleGAN, colorization, DDPM, segmentation) is a
configuration of this class, never a subclass.

Level i of the encoder maps `channels[i-1] -> channels[i]` with a stride-2 step; the decoder mirrors
it and concatenates the encoder's activation of the same level (the skip). With block style
`pix2pix` a level is exactly the reference `UnetSkipConnectionBlock` (Isola et al. 2017, App. 6.1.1):
4x4 stride-2 conv down, LeakyReLU(0.2), ReLU + 4x4 transposed conv up, no norm on the outermost
down conv nor on the innermost one, dropout after the up norm of the chosen levels.

Room for the other methods' knobs: `block_style`, `norm`, `out_activation` and `upsample` are data,
and blocks take `(x, emb=None)` so a time embedding can be threaded through later.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import AnySize, conv_bias, norm_layer

BLOCK_STYLES = ("pix2pix",)
UPSAMPLERS = ("transposed", "bilinear", "unpool")
OUT_ACTIVATIONS = ("tanh", "none")


class BilinearUpsample(nn.Module):
    """Fixed x2 upsampling, no parameters: zero insertion, then the separable [1/4, 1/2, 1/4] filter
    with gain 2 per axis (the inserted zeros halve the density), i.e. linear interpolation between
    neighbours. (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = 2 * torch.tensor([0.25, 0.5, 0.25])
        self.register_buffer("kernel", torch.outer(taps, taps).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A stride-2 transposed conv is exactly zero insertion followed by a convolution.
        return F.conv_transpose2d(x, self.kernel.to(x.dtype), stride=2, padding=1, output_padding=1,
                                  groups=x.shape[1])


class DownLevel(nn.Module):
    """(B, c_in, H, W) -> ((B, c_out, H/2, W/2), pooling switches or None).

    transposed/bilinear decoders: a 4x4 stride-2 conv. unpool (DeconvNet, Noh et al. 2015): a 3x3
    conv then 2x2 max pooling whose argmax switches the decoder's unpooling reuses."""

    def __init__(self, c_in: int, c_out: int, norm: str, outermost: bool, innermost: bool, upsample: str):
        super().__init__()
        layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2, True)]
        if upsample == "unpool":
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=conv_bias(norm)))
        else:
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=conv_bias(norm)))
        if not (outermost or innermost):
            layers.append(norm_layer(norm, c_out))
        self.body = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(2, return_indices=True) if upsample == "unpool" else None

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None):
        x = self.body(x)
        return self.pool(x) if self.pool is not None else (x, None)


class UpLevel(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W); c_in already includes the concatenated skip.

    transposed: ReLU + 4x4 stride-2 transposed conv (pix2pix). bilinear: ReLU + fixed bilinear x2 +
    learned 3x3 conv. unpool: ReLU + max unpooling at the encoder's switches + learned 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, norm: str, outermost: bool, dropout: float, upsample: str):
        super().__init__()
        bias = True if outermost else conv_bias(norm)
        # In place is safe: the input is a fresh concatenation (or, innermost, a conv output that
        # nothing else reads), and ReLU(LeakyReLU(skip)) == ReLU(skip) keeps the reference's function.
        layers: list[nn.Module] = [] if upsample == "unpool" else [nn.ReLU(True)]
        if upsample == "transposed":
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias))
        else:
            if upsample == "bilinear":
                layers.append(BilinearUpsample(c_in))
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
        if not outermost:
            layers.append(norm_layer(norm, c_out))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.unpool = nn.MaxUnpool2d(2) if upsample == "unpool" else None

    def forward(self, x: torch.Tensor, switches: Optional[torch.Tensor] = None,
                emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.unpool is not None:
            # The concatenated skip and decoder halves are both unpooled at this level's switches.
            x = self.unpool(F.relu(x), switches.repeat(1, x.shape[1] // switches.shape[1], 1, 1))
        return self.body(x)


class UNet(AnySize, ModelMixin, ConfigMixin):
    """Encoder-decoder with skips. x: (B, in_channels, H, W) -> (B, out_channels, H, W).

    H and W must be multiples of `self.multiple` (2 ** levels) in training; `forward_any_size`
    pads and crops back for inference on any size.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
        block_style: str = "pix2pix",
        norm: str = "batch",
        dropout: float = 0.5,
        dropout_levels: Sequence[int] = (4, 5, 6),
        upsample: str = "transposed",
        out_activation: str = "tanh",
    ):
        super().__init__()
        if block_style not in BLOCK_STYLES:
            raise ValueError(f"unknown block_style {block_style!r}; choose one of {list(BLOCK_STYLES)}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"unknown upsample {upsample!r}; choose one of {list(UPSAMPLERS)}")
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"unknown out_activation {out_activation!r}; choose one of {list(OUT_ACTIVATIONS)}")
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got channels={list(channels)}")
        levels = len(channels)
        bad = [i for i in dropout_levels if not 0 <= i < levels]
        if bad:
            raise ValueError(f"dropout_levels {bad} are outside 0..{levels - 1}")
        self.levels = levels
        self.multiple = 2 ** levels
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, c in enumerate(channels):
            c_prev = in_channels if i == 0 else channels[i - 1]
            innermost, outermost = i == levels - 1, i == 0
            self.downs.append(DownLevel(c_prev, c, norm, outermost, innermost, upsample))
            up_in = c if innermost else 2 * c
            up_out = out_channels if outermost else channels[i - 1]
            self.ups.append(UpLevel(up_in, up_out, norm, outermost, dropout if i in dropout_levels else 0.0,
                                    upsample))
        self.out_act = nn.Tanh() if out_activation == "tanh" else nn.Identity()

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.check_size(x)
        skips, switches = [], []
        for down in self.downs:
            x, idx = down(x, emb)
            skips.append(x)
            switches.append(idx)
        for i in reversed(range(self.levels)):
            if i != self.levels - 1:
                x = torch.cat([skips[i], x], dim=1)  # (B, 2*c_i, H_i, W_i)
            x = self.ups[i](x, switches[i], emb)
        return self.out_act(x)
