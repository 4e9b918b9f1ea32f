"""Differentiable augmentation of the discriminator's inputs (DiffAugment: Zhao et al., NeurIPS 2020).

Applied to real and fake images alike, before every discriminator call of both the D and the G
step, so D never sees an un-augmented image and G's gradient flows through the same transform:
- color: brightness (+ U(-0.5, 0.5)), saturation (x U(0, 2) around the per-pixel channel mean),
  contrast (x U(0.5, 1.5) around the image mean), per sample;
- translation: a shift of up to 1/8 of the size in each direction, zero-filled;
- cutout: a zeroed square of half the size at a random place.
A conditional discriminator's input (condition, image) concatenated on channels is one item: the
same shift and cutout for both parts, and the same colour factors, applied to each part by itself
(`groups`, the channel count of each part), so a label map is not mixed into a photo's mean.
Random draws come from torch's global RNG on the images' device (checkpointed: resumes are exact).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

def _color(x: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    b = x.shape[0]
    shape = (b, 1, 1, 1)
    brightness = torch.rand(shape, device=x.device, dtype=x.dtype) - 0.5
    saturation = torch.rand(shape, device=x.device, dtype=x.dtype) * 2
    contrast = torch.rand(shape, device=x.device, dtype=x.dtype) + 0.5
    parts = []
    for part in x.split(list(groups), dim=1):
        part = part + brightness
        part = (part - part.mean(dim=1, keepdim=True)) * saturation + part.mean(dim=1, keepdim=True)
        mean = part.mean(dim=(1, 2, 3), keepdim=True)
        parts.append((part - mean) * contrast + mean)
    return torch.cat(parts, dim=1)


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - dy + 1  # source row of each output row (+1: pad)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - dx + 1
    ys, xs = ys.clamp(0, h + 1).expand(b, h, w), xs.clamp(0, w + 1).expand(b, h, w)
    padded = F.pad(x, [1, 1, 1, 1])  # the zero border every out-of-image source reads
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, ys, xs].permute(0, 3, 1, 2).contiguous()


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    r, c = rows - cy + ch // 2, cols - cx + cw // 2  # position inside the square
    inside = (r >= 0) & (r < ch) & (c >= 0) & (c < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DiffAugment:
    """x (B, C, H, W) -> the same shape, augmented by the transforms `parts` in order (names of
    TRANSFORMS; the config key train.diffaugment lists them); groups: channel counts of the
    concatenated parts of a conditional pair (default: one part)."""

    def __init__(self, parts: Sequence[str] = ("color", "translation", "cutout"),
                 groups: Sequence[int] | None = None):
        bad = [p for p in parts if p not in TRANSFORMS]
        if bad or not parts:
            raise ValueError(f"DiffAugment: unknown transform(s) {bad}; choose from {list(TRANSFORMS)}")
        self.parts, self.groups = tuple(parts), tuple(groups) if groups else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.groups or (x.shape[1],)
        if sum(groups) != x.shape[1]:
            raise ValueError(f"DiffAugment: parts of {groups} channels, but the input has {x.shape[1]}")
        for part in self.parts:
            x = _color(x, groups) if part == "color" else TRANSFORMS[part](x)
        return x


TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}
