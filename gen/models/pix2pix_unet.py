"""The pix2pix-style U-Net (Isola et al. 2017, App. 6.1.1): pix2pix's and CycleGAN's U-Net generator,
Zhang et al.'s colorizer (in 1, out 313, no activation), the dense predictors (out K classes).

Level i of the encoder maps `channels[i-1] -> channels[i]` with a stride-2 step; the decoder mirrors
it and concatenates the encoder's activation of the same level (the skip). With the default
transposed-conv decoder a level is exactly the reference `UnetSkipConnectionBlock`: 4x4 stride-2
conv down, LeakyReLU(0.2), ReLU + 4x4 transposed conv up, no norm on the outermost down conv nor on
the innermost one, dropout after the up norm of the chosen levels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
# DiffusionPipeline.from_pretrained finds a component's loader by looking `ModelMixin` up in the
# module model_index.json names (this one for new exports): it must be importable from here.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn

from .layers import NORMS, BilinearUpsample, conv_bias, max_unpool2x2, norm_layer
from .unet import UNet

UPSAMPLERS = ("transposed", "bilinear", "unpool")


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

    def forward(self, x: torch.Tensor):
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
        self.unpool = upsample == "unpool"

    def forward(self, x: torch.Tensor, switches: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.unpool:
            # The concatenated skip and decoder halves are both unpooled at this level's switches.
            x = max_unpool2x2(F.relu(x), switches.repeat(1, x.shape[1] // switches.shape[1], 1, 1))
        return self.body(x)


class Pix2PixUNet(UNet, block_style="pix2pix"):
    """x: (B, in_channels, H, W) -> (B, out_channels, H/s, W/s), s = `output_stride`; H, W multiples
    of 2 ** len(channels) (`forward_any_size` for any size). Defaults: the reference unet_256.

    norm: batch | sync_batch | instance | group | none. dropout: its rate on `dropout_levels`' up
    convs (the noise of pix2pix). upsample: the decoder's x2 step (transposed | bilinear | unpool).
    output_stride 2^k: the last k decoder levels are replaced by a 1x1 conv head on the skip-
    concatenated features of level k (Zhang et al. 2016 predict at 1/4 resolution).

    Feature taps (PatchNCE): layer 0 is the input, layer i the output of encoder level i (1..levels)."""

    default_feature_layers = (0, 1, 2, 3, 4)

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
        norm: str = "batch",
        dropout: float = 0.5,
        dropout_levels: Sequence[int] = (4, 5, 6),
        upsample: str = "transposed",
        out_activation: str = "tanh",
        output_stride: int = 1,
    ):
        super().__init__(channels, out_activation)
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"unknown upsample {upsample!r}; choose one of {list(UPSAMPLERS)}")
        self.check_levels("dropout_levels", dropout_levels)
        levels = self.levels
        strides = [2 ** k for k in range(levels)]
        if output_stride not in strides:
            raise ValueError(f"output_stride={output_stride}: a U-Net of {levels} levels predicts at stride "
                             f"{', '.join(map(str, strides))}")
        self.multiple = 2 ** levels
        # output_stride 2^k stops the decoder k levels early: ups[0..k-1] are not built.
        self.out_stride, self.first_up = output_stride, output_stride.bit_length() - 1
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, c in enumerate(channels):
            c_prev = in_channels if i == 0 else channels[i - 1]
            innermost, outermost = i == levels - 1, i == 0
            self.downs.append(DownLevel(c_prev, c, norm, outermost, innermost, upsample))
            if i < self.first_up:
                continue
            up_in = c if innermost else 2 * c
            up_out = out_channels if outermost else channels[i - 1]
            self.ups.append(UpLevel(up_in, up_out, norm, outermost, dropout if i in dropout_levels else 0.0,
                                    upsample))
        if self.first_up:
            c = channels[self.first_up - 1]
            self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * c, out_channels, 1))
        self.out_act = self.activation(out_activation)

    def check_feature_layers(self, layers: Sequence[int]) -> list[int]:
        """`layers` as a sorted list, or ValueError naming the encoder's taps."""
        layers = list(layers)
        if not layers or layers != sorted(set(layers)) or not all(0 <= i <= self.levels for i in layers):
            raise ValueError(f"feature layers {layers}: this U-Net's encoder taps are 0 (the input) .. "
                             f"{self.levels} (its levels; increasing, no repeats)")
        return layers

    def encode_features(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """The input (layer 0) and encoder level outputs (layer i: (B, channels[i-1], H / 2^i, W / 2^i))
        at `layers`; the levels below the last are not run."""
        layers = self.check_feature_layers(layers)
        self.check_input_size(x)
        feats = [x] if layers[0] == 0 else []
        for i, down in enumerate(self.downs[:layers[-1]], start=1):
            x = down(x)[0]
            if i in layers:  # a copy: the next level's in-place LeakyReLU would change this one
                feats.append(x.clone() if i < layers[-1] else x)
        return feats

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """C_i of each tapped layer (to build PatchNCE heads before any forward)."""
        c = [self.config.in_channels, *self.config.channels]
        return [c[i] for i in self.check_feature_layers(layers)]

    def forward(self, x: torch.Tensor, feature_layers: Optional[Sequence[int]] = None) -> torch.Tensor:
        """The translation; with `feature_layers`, encode_features(x, feature_layers) instead (a pass
        through forward, so training's DDP and autocast wrappers see it)."""
        if feature_layers is not None:
            return self.encode_features(x, feature_layers)
        self.check_input_size(x)
        skips, switches = [], []
        for down in self.downs:
            x, idx = down(x)
            skips.append(x)
            switches.append(idx)
        k = self.first_up
        for i in reversed(range(k, self.levels)):
            if i != self.levels - 1:
                x = torch.cat([skips[i], x], dim=1)  # (B, 2*c_i, H_i, W_i)
            x = self.ups[i - k](x, switches[i])
        if k:
            x = self.head(torch.cat([skips[k - 1], x], dim=1))  # (B, out, H / 2^k, W / 2^k)
        return self.out_act(x)
