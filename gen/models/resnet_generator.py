"""The CycleGAN paper's ResNet generator (Johnson et al. 2016 style; Zhu et al. 2017, App. 7.2):
c7s1-ngf, d2ngf, d4ngf, n residual blocks at 4ngf, u2ngf, ungf, c7s1-out, tanh. An option for
CycleGAN; the suite's default backbone stays the U-Net.

`antialias=True` is CUT's variant (Park et al. 2020, after Zhang 2019): each downsampling is a
stride-1 conv, norm, ReLU, then a blur-subsample; each upsampling a blur-upsample, then a stride-1
conv, norm, ReLU. Its layer list is the reference's `nn.Sequential`, index for index, so CUT's
`nce_layers` (0,4,8,12,16) and its checkpoints' keys (`model.N` -> `body.N`) mean the same here.
"""
from __future__ import annotations

from typing import Optional, Sequence


import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .antialias import BlurDownsample, BlurUpsample
from .layers import AnySize, ReflectionPad2d, conv_bias, norm_layer


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), reflection padded. (B, C, H, W) -> same."""

    def __init__(self, channels: int, norm: str, dropout: float):
        super().__init__()
        bias = conv_bias(norm)
        layers = [ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
                  nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(AnySize, ModelMixin, ConfigMixin):
    """x: (B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W) in [-1, 1]; H, W multiples of 4.

    Feature taps (PatchNCE): layer i is the output of `body[i]`; the encoder is layers 0 .. the last
    residual block. CUT's default taps are 0, 4, 8, 12, 16."""

    default_feature_layers = (0, 4, 8, 12, 16)

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: float = 0.0, antialias: bool = False):
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings
            c_in, c_out = ngf * mult, ngf * mult * 2
            if antialias:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), norm_layer(norm, c_out),
                           nn.ReLU(True), BlurDownsample(c_out)]
            else:
                layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias), norm_layer(norm, c_out),
                           nn.ReLU(True)]
        layers += [ResidualBlock(ngf * 4, norm, dropout) for _ in range(n_blocks)]
        self.encoder_layers = len(layers)  # taps 0 .. encoder_layers - 1: up to the last residual block
        for mult in (4, 2):
            c_in, c_out = ngf * mult, ngf * mult // 2
            if antialias:
                layers += [BlurUpsample(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)]
            else:
                layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1,
                                                 bias=bias))
            layers += [norm_layer(norm, c_out), nn.ReLU(True)]
        layers += [ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.multiple = 4

    def forward(self, x: torch.Tensor, feature_layers: Optional[Sequence[int]] = None):
        """The translation; with `feature_layers`, encode_features(x, feature_layers) instead (a pass
        through forward, so training's DDP and autocast wrappers see it)."""
        if feature_layers is not None:
            return self.encode_features(x, feature_layers)
        self.check_input_size(x)
        return self.body(x)

    def check_feature_layers(self, layers: Sequence[int]) -> list[int]:
        """`layers` as a sorted list, or ValueError naming the encoder's taps."""
        layers = list(layers)
        last = self.encoder_layers - 1
        if not layers or layers != sorted(set(layers)) or not all(0 <= i <= last for i in layers):
            raise ValueError(f"feature layers {layers}: this ResnetGenerator's encoder taps are 0..{last} "
                             "(increasing, no repeats)")
        return layers

    def encode_features(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """[body[:i+1](x) for i in layers]: (B, C_i, H_i, W_i) each; the layers after the last are not run."""
        layers = self.check_feature_layers(layers)
        self.check_input_size(x)
        feats = []
        for i, layer in enumerate(self.body[:layers[-1] + 1]):
            x = layer(x)
            if i in layers:
                feats.append(x)
        return feats

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """C_i of each tapped layer (to build PatchNCE heads before any forward)."""
        layers = self.check_feature_layers(layers)
        c, out = self.config.in_channels, []
        for i, layer in enumerate(self.body[:layers[-1] + 1]):
            c = getattr(layer, "out_channels", c)  # convs change it; norms, pads, blocks, blurs keep it
            if i in layers:
                out.append(c)
        return out
