"""The one U-Net of gen: every method (pix2pix, CycleGAN, colorization, DDPM, segmentation) is a
configuration of this class, never a subclass.

Level i of the encoder maps `channels[i-1] -> channels[i]` with a stride-2 step; the decoder mirrors
it and concatenates the encoder's activation of the same level (the skip). With block style
`pix2pix` a level is exactly the reference `UnetSkipConnectionBlock` (Isola et al. 2017, App. 6.1.1):
4x4 stride-2 conv down, LeakyReLU(0.2), ReLU + 4x4 transposed conv up, no norm on the outermost
down conv nor on the innermost one, dropout after the up norm of the chosen levels.

With block style `ddpm` (Ho et al. 2020) a level is `layers_per_level` residual blocks with
GroupNorm, each fed the sinusoidal time embedding, optional self-attention (`attention_levels`),
and a stride-2 conv down / nearest + conv up between levels; every block output is a skip, and the
bottom is ResBlock-attention-ResBlock (see diffusion_blocks.py). `forward(x, timesteps)`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .diffusion_blocks import DiffusionLevel, MiddleBlock, TimeEmbedding
from .layers import AnySize, conv_bias, max_unpool2x2, norm_layer

BLOCK_STYLES = ("pix2pix", "ddpm")
UPSAMPLERS = ("transposed", "bilinear", "unpool")
OUT_ACTIVATIONS = ("tanh", "none")


class BilinearUpsample(nn.Module):
    """Fixed x2 upsampling, no parameters: zero insertion, then the separable [1/4, 1/2, 1/4] filter
    with gain 2 per axis (the inserted zeros halve the density), i.e. linear interpolation between
    neighbours. (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = 2 * torch.tensor([0.25, 0.5, 0.25])
        self.register_buffer(
            "kernel", torch.outer(taps, taps).expand(channels, 1, 3, 3).clone(), persistent=False
        )

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


class UNet(AnySize, ModelMixin, ConfigMixin):
    """Encoder-decoder with skips. x: (B, in_channels, H, W) -> (B, out_channels, H/s, W/s), where
    s = `output_stride` (1 unless a coarse head is asked for, pix2pix style only).

    H and W must be multiples of `self.multiple` (2 ** stride-2 steps) in training;
    `forward_any_size` pads and crops back for inference on any size. The `ddpm` style also takes
    `timesteps`: (B,) or a scalar, integer or float.
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
        layers_per_level: int = 2,
        attention_levels: Sequence[int] = (),
        attention_head_dim: Optional[int] = None,
        norm_groups: int = 32,
        norm_eps: float = 1e-6,
        time_flip_sin_to_cos: bool = False,
        time_freq_shift: float = 1,
        downsample_padding: int = 1,
        output_stride: int = 1,
    ):
        super().__init__()
        if block_style not in BLOCK_STYLES:
            raise ValueError(f"unknown block_style {block_style!r}; choose one of {list(BLOCK_STYLES)}")
        if upsample not in UPSAMPLERS:
            raise ValueError(f"unknown upsample {upsample!r}; choose one of {list(UPSAMPLERS)}")
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(
                f"unknown out_activation {out_activation!r}; choose one of {list(OUT_ACTIVATIONS)}"
            )
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got channels={list(channels)}")
        levels = len(channels)
        per_level = {
            "pix2pix": ("dropout_levels", dropout_levels),
            "ddpm": ("attention_levels", attention_levels),
        }
        for name, chosen in (per_level[block_style],):
            bad = [i for i in chosen if not 0 <= i < levels]
            if bad:
                raise ValueError(f"{name} {bad} are outside 0..{levels - 1}")
        self.levels = levels
        self.block_style = block_style
        layout = (("norm_eps", norm_eps, 1e-6), ("time_flip_sin_to_cos", time_flip_sin_to_cos, False),
                  ("time_freq_shift", time_freq_shift, 1), ("downsample_padding", downsample_padding, 1))
        ddpm_only = {k: v for k, v, default in layout if v != default}
        if block_style != "ddpm" and ddpm_only:
            raise ValueError(f"{sorted(ddpm_only)} apply to block_style='ddpm' only (got {ddpm_only})")
        if downsample_padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 1 (symmetric) or 0 (bottom/right, TensorFlow "
                             f"'SAME'), got {downsample_padding}")
        if output_stride != 1 and (block_style != "pix2pix" or output_stride not in
                                   [2 ** k for k in range(1, levels)]):
            raise ValueError(f"output_stride={output_stride}: a pix2pix-style U-Net of {levels} levels "
                             f"predicts at stride 1, 2, ..., {2 ** (levels - 1)}; the ddpm style at 1 only")
        if block_style == "ddpm":
            # The ddpm levels have GroupNorm, nearest + conv upsampling and dropout in every block.
            # (the class defaults, or the ddpm presets' explicit "group" and (): exports hold either)
            unused = {k: v for k, v, ok in (("norm", norm, ("batch", "group")),
                                             ("upsample", upsample, ("transposed",)),
                                             ("dropout_levels", tuple(dropout_levels), ((4, 5, 6), ())))
                      if v not in ok}
            if unused:
                raise ValueError(f"{sorted(unused)} apply to block_style='pix2pix' only; the ddpm style has "
                                 "GroupNorm, nearest + conv upsampling and dropout in every block (got "
                                 f"{unused})")
            self._build_ddpm(in_channels, out_channels, list(channels), dropout, layers_per_level,
                             set(attention_levels), attention_head_dim, norm_groups, norm_eps)
            self.out_act = nn.Tanh() if out_activation == "tanh" else nn.Identity()
            return
        self.multiple = 2 ** levels
        # output_stride 2^k stops the decoder k levels early: ups[0..k-1] are not built and a 1x1 conv
        # head reads the last decoded level with its skip (Zhang et al. 2016 predict at 1/4 resolution).
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
        self.out_act = nn.Tanh() if out_activation == "tanh" else nn.Identity()

    def _build_ddpm(self, in_channels: int, out_channels: int, channels: list[int], dropout: float,
                    layers: int, attention: set[int], head_dim: Optional[int], groups: int,
                    eps: float) -> None:
        bad = [c for c in channels if c % groups]
        if bad:
            raise ValueError(f"the level widths {list(channels)} must be multiples of norm_groups={groups} "
                             f"(GroupNorm's groups); {bad} are not")
        self.multiple = 2 ** (self.levels - 1)
        emb = 4 * channels[0]
        cfg = self.config
        self.time_embedding = TimeEmbedding(channels[0], cfg.time_flip_sin_to_cos, cfg.time_freq_shift)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        skip_channels, c_prev = [channels[0]], channels[0]
        for i, c in enumerate(channels):
            last = i == self.levels - 1
            self.downs.append(DiffusionLevel([c_prev] + [c] * (layers - 1), c, emb, dropout, i in attention,
                                             None if last else "down", head_dim, groups, eps,
                                             cfg.downsample_padding))
            skip_channels += [c] * (layers if last else layers + 1)
            c_prev = c
        self.middle = MiddleBlock(c_prev, emb, dropout, head_dim, groups, eps)
        for i in reversed(range(self.levels)):
            c = channels[i]
            c_ins = []
            for _ in range(layers + 1):
                c_ins.append(c_prev + skip_channels.pop())
                c_prev = c
            self.ups.append(DiffusionLevel(c_ins, c, emb, dropout, i in attention, "up" if i else None,
                                           head_dim, groups, eps))
        self.norm_out = nn.GroupNorm(groups, channels[0], eps=eps)
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: Optional[torch.Tensor | float] = None) -> torch.Tensor:
        self.check_input_size(x)
        if self.block_style == "ddpm":
            return self._forward_ddpm(x, timesteps)
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

    def _forward_ddpm(self, x: torch.Tensor, timesteps) -> torch.Tensor:
        if timesteps is None:
            raise ValueError("a ddpm-style U-Net needs timesteps: net(x_t, t)")
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
