"""The diffusion U-Net (Ho et al. 2020): the DDPM denoiser, unconditional or conditioned by
concatenating the condition image to x_t (in_channels = out_channels + condition channels).

A level is `layers_per_level` residual blocks with GroupNorm, each fed the sinusoidal time
embedding, optional self-attention (`attention_levels`), and a stride-2 conv down / nearest + conv up
between levels; every block output is a skip, and the bottom is ResBlock-attention-ResBlock
(diffusion_blocks.py). The layout is diffusers' UNet2DModel's: same configuration, same parameters
and outputs (gen.convert.diffusers_unet converts between them).
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

from .diffusion_blocks import DiffusionLevel, MiddleBlock, TimeEmbedding
from .unet import UNet


class DiffusionUNet(UNet, block_style="ddpm"):
    """x: (B, in_channels, H, W), timesteps: (B,) or a scalar, integer or float -> (B, out_channels,
    H, W), the predicted noise (or v); H, W multiples of 2 ** (len(channels) - 1) (`forward_any_size`
    for any size). Defaults: Ho et al.'s CIFAR-10 model (35,746,307 parameters).

    attention_head_dim: None for one head. norm_groups, norm_eps: GroupNorm's. time_flip_sin_to_cos,
    time_freq_shift: the sinusoid's layout (TimeEmbedding); downsample_padding 1 symmetric, 0
    TensorFlow's 'SAME' (Downsample): the last three match converted weights."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: Sequence[int] = (128, 256, 256, 256),
        dropout: float = 0.1,
        layers_per_level: int = 2,
        attention_levels: Sequence[int] = (1,),
        attention_head_dim: Optional[int] = None,
        norm_groups: int = 32,
        norm_eps: float = 1e-6,
        time_flip_sin_to_cos: bool = False,
        time_freq_shift: float = 1,
        downsample_padding: int = 1,
        out_activation: str = "none",
    ):
        super().__init__(channels, out_activation)
        self.check_levels("attention_levels", attention_levels)
        if downsample_padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 1 (symmetric) or 0 (bottom/right, TensorFlow "
                             f"'SAME'), got {downsample_padding}")
        channels, groups, eps, attention = list(channels), norm_groups, norm_eps, set(attention_levels)
        bad = [c for c in channels if c % groups]
        if bad:
            raise ValueError(f"the level widths {channels} must be multiples of norm_groups={groups} "
                             f"(GroupNorm's groups); {bad} are not")
        self.multiple = 2 ** (self.levels - 1)
        emb = 4 * channels[0]
        self.time_embedding = TimeEmbedding(channels[0], time_flip_sin_to_cos, time_freq_shift)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        skip_channels, c_prev = [channels[0]], channels[0]
        for i, c in enumerate(channels):
            last = i == self.levels - 1
            self.downs.append(DiffusionLevel([c_prev] + [c] * (layers_per_level - 1), c, emb, dropout,
                                             i in attention, None if last else "down", attention_head_dim,
                                             groups, eps, downsample_padding))
            skip_channels += [c] * (layers_per_level if last else layers_per_level + 1)
            c_prev = c
        self.middle = MiddleBlock(c_prev, emb, dropout, attention_head_dim, groups, eps)
        for i in reversed(range(self.levels)):
            c = channels[i]
            c_ins = []
            for _ in range(layers_per_level + 1):
                c_ins.append(c_prev + skip_channels.pop())
                c_prev = c
            self.ups.append(DiffusionLevel(c_ins, c, emb, dropout, i in attention, "up" if i else None,
                                           attention_head_dim, groups, eps))
        self.norm_out = nn.GroupNorm(groups, channels[0], eps=eps)
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)
        self.out_act = self.activation(out_activation)

    def forward(self, x: torch.Tensor, timesteps: Optional[torch.Tensor | float] = None) -> torch.Tensor:
        self.check_input_size(x)
        if timesteps is None:
            raise ValueError("a diffusion U-Net needs timesteps: net(x_t, t)")
        t = torch.as_tensor(timesteps, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb = self.time_embedding(t)
        x = self.conv_in(x)
        skips = [x]
        for level in self.downs:
            x = level.down(x, emb, skips)
        x = self.middle(x, emb)
        for level in self.ups:
            x = level.up(x, emb, skips)
        return self.out_act(self.conv_out(F.silu(self.norm_out(x))))
