"""Image grids for logs, samples and reports."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw

from .data.transforms import to_pil

MIN_TILE = 96  # smaller tiles (32x32 CIFAR, 64x64 crops) are enlarged by an integer factor to be seen
HEADER = 16  # pixels of the column-label band


def image_grid(rows: list[list[torch.Tensor]], labels: Optional[Sequence[str]] = None) -> Image.Image:
    """rows of (C, H, W) tensors in [-1, 1] -> one RGB PIL grid (one row per example), with a band of
    column labels on top when `labels` are given; tiles under MIN_TILE pixels are enlarged (nearest)."""
    tiles = [[to_pil(t).convert("RGB") for t in row] for row in rows]
    h = max(t.size[1] for row in tiles for t in row)
    w = max(t.size[0] for row in tiles for t in row)
    scale = max(1, math.ceil(MIN_TILE / max(h, w)))
    h, w, top = h * scale, w * scale, HEADER if labels else 0
    grid = Image.new("RGB", (w * max(len(r) for r in tiles), h * len(tiles) + top), "white")
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            if scale > 1:
                tile = tile.resize((tile.size[0] * scale, tile.size[1] * scale), Image.NEAREST)
            grid.paste(tile, (j * w, top + i * h))
    if labels:
        draw = ImageDraw.Draw(grid)
        for j, label in enumerate(labels):
            draw.text((j * w + 3, 2), _fit(draw, str(label), w - 6), fill="black")
    return grid


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """The label, shortened with '...' until it fits in `width` pixels."""
    while len(text) > 1 and draw.textlength(text) > width:
        text = text[:-4] + "..." if len(text) > 4 else text[:-1]
    return text
