"""Small building blocks shared by the U-Nets, the FCN and the discriminators."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .sync_batchnorm import SyncBatchNorm2d

# sync_batch: batch norm with statistics over the global batch of every process (sync_batchnorm.py);
# with one process it is batch norm exactly.
NORMS = ("batch", "sync_batch", "instance", "group", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation by name; instance norm is non-affine as in the pix2pix/CycleGAN reference."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "sync_batch":
        return SyncBatchNorm2d(channels)
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


def init_weights(net: nn.Module, gain: float = 0.02, kind: str = "normal") -> nn.Module:
    """Isola et al.: conv weights ~ N(0, gain) (kind normal) or Glorot's normal init scaled by gain
    (kind xavier: CUT's reference default), norm scales ~ N(1, gain), biases 0. Layers marked with
    `keep_init = True` (FCN's bilinear upsampling, its zero skip scores) keep their own init."""
    if kind not in ("normal", "xavier"):
        raise ValueError(f"init kind must be normal or xavier, got {kind!r}")
    for m in net.modules():
        if getattr(m, "keep_init", False):
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            else:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


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


# The padding and pooling below are written with cat / flip / expand / where: same values as
# nn.ReflectionPad2d, F.pad(mode="replicate"), nn.MaxUnpool2d and nn.AdaptiveAvgPool2d(1), but their
# backward passes have deterministic CUDA kernels, so train.deterministic=true works on a GPU
# (tests/test_device_audit.py lists the aten ops a training step may not use).


class ReflectionPad2d(nn.Module):
    """Reflection padding by `p` on every side. (B, C, H, W) -> (B, C, H + 2p, W + 2p); p < H, W."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if not torch.are_deterministic_algorithms_enabled():
            return F.pad(x, (p, p, p, p), mode="reflect")  # one kernel; its CUDA backward uses atomics
        x = torch.cat([x[..., 1:p + 1].flip(-1), x, x[..., -p - 1:-1].flip(-1)], dim=-1)
        return torch.cat([x[..., 1:p + 1, :].flip(-2), x, x[..., -p - 1:-1, :].flip(-2)], dim=-2)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate the last row / column until H and W are multiples of `multiple`.
    (B, C, H, W) -> ((B, C, H', W'), (H, W)): crop the network's output back with [..., :H, :W]."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph:
        x = torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], ph, x.shape[-1])], dim=-2)
    if pw:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], pw)], dim=-1)
    return x, (h, w)


def max_unpool2x2(x: torch.Tensor, switches: torch.Tensor) -> torch.Tensor:
    """nn.MaxUnpool2d(2): each value goes back to the position its 2x2 max pooling took it from,
    zeros elsewhere. x, switches (flat indices into 2H x 2W): (B, C, H, W) -> (B, C, 2H, 2W)."""
    b, c, h, w = x.shape

    def up(t: torch.Tensor) -> torch.Tensor:  # nearest x2: (B, C, H, W) -> (B, C, 2H, 2W)
        return t[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
    positions = torch.arange(4 * h * w, device=x.device).view(2 * h, 2 * w)
    return torch.where(up(switches) == positions, up(x), 0)


class GlobalAvgPool(nn.Module):
    """nn.AdaptiveAvgPool2d(1): (B, C, H, W) -> (B, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class AnySize:
    """Mixin for networks whose input must be a multiple of `self.multiple` in each spatial dim."""

    multiple: int
    out_stride: int = 1  # output pixels are input pixels / out_stride (a coarse prediction head)

    def check_input_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"input size {h}x{w} is not a multiple of {self.multiple} (the network's "
                             "stride-2 levels); crop or pad it, or use forward_any_size")

    def forward_any_size(self, x: torch.Tensor, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Replicate-pad H, W up to the next multiple, run, crop back to (H, W) (to ceil(H / s),
        ceil(W / s) for a head at output stride s)."""
        x, (h, w) = pad_to_multiple(x, self.multiple)
        s = self.out_stride
        out = self.forward(x) if timesteps is None else self.forward(x, timesteps)
        return out[..., : -(-h // s), : -(-w // s)]
