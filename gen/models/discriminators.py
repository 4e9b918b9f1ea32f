"""PatchGAN discriminators (Isola et al. 2017, App. 6.1.2; reference NLayerDiscriminator). Saved like
the generators (save_pretrained: config.json + safetensors), so exports carry them for fine-tuning."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import conv_bias, norm_layer


class PatchGAN(ModelMixin, ConfigMixin):
    """x: (B, in_channels, H, W) -> logits (B, 1, H', W'); one logit per receptive-field patch.

    n_layers 1..5 give receptive fields 16/34/70/142/286; at 256x256 with n_layers 3 the map is 30x30.
    """

    @register_to_config
    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGAN n_layers must be >= 1, got {n_layers}")
        bias = conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1  # the last two convs keep the resolution
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PixelGAN(ModelMixin, ConfigMixin):
    """1x1 PatchGAN: x (B, in_channels, H, W) -> logits (B, 1, H, W), one per pixel."""

    @register_to_config
    def __init__(self, in_channels: int = 6, ndf: int = 64, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=conv_bias(norm)), norm_layer(norm, ndf * 2),
            nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
