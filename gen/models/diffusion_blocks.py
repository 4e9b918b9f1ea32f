"""The blocks of DiffusionUNet (diffusion_unet.py; Ho et al. 2020, App. B): residual blocks with
GroupNorm and a per-block projection of the time embedding, single-head-or-more self-attention,
and stride-2 conv down / nearest x2 + conv up. Layer shapes follow diffusers' UNet2DModel so that
the same configuration has the same parameter count and the same outputs (tests/test_ddpm.py,
tests/test_convert_diffusers.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn


class TimeEmbedding(nn.Module):
    """Timesteps (B,) -> (B, 4 * channels): sinusoid of `channels` features, then a 2-layer MLP.

    Default: Ho et al.'s layout, sin then cos, frequencies 10000^(-i/(d/2 - 1)) (diffusers'
    flip_sin_to_cos=False, freq_shift=1); diffusers' own default is cos first and shift 0."""

    def __init__(self, channels: int, flip_sin_to_cos: bool = False, freq_shift: float = 1):
        super().__init__()
        self.channels, self.flip_sin_to_cos, self.freq_shift = channels, flip_sin_to_cos, freq_shift
        self.mlp = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, 4 * channels)
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        sinusoid = get_timestep_embedding(
            timesteps, self.channels, flip_sin_to_cos=self.flip_sin_to_cos,
            downscale_freq_shift=self.freq_shift,
        )
        return self.mlp(sinusoid.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """(B, c_in, H, W), emb (B, E) -> (B, c_out, H, W):
    GN-SiLU-conv, + Linear(SiLU(emb)), GN-SiLU-dropout-conv, + (1x1 conv of) the input."""

    def __init__(self, c_in: int, c_out: int, emb_channels: int, dropout: float, groups: int = 32,
                 eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class SelfAttention(nn.Module):
    """(B, C, H, W) -> same: x + attention over the H*W positions of GroupNorm(x)."""

    def __init__(self, channels: int, head_dim: Optional[int] = None, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.heads = channels // head_dim if head_dim else 1
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)  # same parameters as separate q, k, v projections
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        attended = attended.transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(attended).transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Conv2d):
    """3x3 stride-2 conv, (B, C, H, W) -> (B, C, H/2, W/2). padding 1: symmetric; padding 0: one zero
    row and column at the bottom/right first (TensorFlow's 'SAME', as the original DDPM checkpoints
    were trained; diffusers' downsample_padding=0)."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.padding[0] else F.pad(x, (0, 1, 0, 1)))


class DiffusionLevel(nn.Module):
    """One resolution of the encoder or decoder: residual blocks (each optionally followed by
    attention), then an optional resampler. Encoder levels push every block output (and the
    resampled one) onto the skip stack; decoder levels pop one skip before each block."""

    def __init__(self, c_ins: list[int], c_out: int, emb_channels: int, dropout: float, attention: bool,
                 resample: Optional[str], head_dim: Optional[int], groups: int, eps: float = 1e-6,
                 down_padding: int = 1):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, emb_channels, dropout, groups, eps) for c in c_ins)
        self.attentions = (
            nn.ModuleList(SelfAttention(c_out, head_dim, groups, eps) for _ in c_ins) if attention else None
        )
        if resample == "down":
            self.resample = Downsample(c_out, down_padding)
        elif resample == "up":
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                          nn.Conv2d(c_out, c_out, 3, padding=1))
        else:
            self.resample = None

    def _block(self, i: int, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.blocks[i](x, emb)
        return self.attentions[i](x) if self.attentions is not None else x

    def down(self, x: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i in range(len(self.blocks)):
            x = self._block(i, x, emb)
            skips.append(x)
        if self.resample is not None:
            x = self.resample(x)
            skips.append(x)
        return x

    def up(self, x: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i in range(len(self.blocks)):
            x = self._block(i, torch.cat([x, skips.pop()], dim=1), emb)
        return self.resample(x) if self.resample is not None else x


class MiddleBlock(nn.Module):
    """ResBlock - attention - ResBlock at the lowest resolution."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, head_dim: Optional[int], groups: int,
                 eps: float = 1e-6):
        super().__init__()
        self.res1 = ResBlock(channels, channels, emb_channels, dropout, groups, eps)
        self.attention = SelfAttention(channels, head_dim, groups, eps)
        self.res2 = ResBlock(channels, channels, emb_channels, dropout, groups, eps)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attention(self.res1(x, emb)), emb)
