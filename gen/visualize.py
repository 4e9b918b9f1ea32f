"""Image grids for logs, samples and reports."""
from __future__ import annotations

import torch
from PIL import Image

from .data.transforms import to_pil


def image_grid(rows: list[list[torch.Tensor]]) -> Image.Image:
    """rows of (C, H, W) tensors in [-1, 1] -> one RGB PIL grid (one row per example)."""
    tiles = [[to_pil(t).convert("RGB") for t in row] for row in rows]
    h = max(t.size[1] for row in tiles for t in row)
    w = max(t.size[0] for row in tiles for t in row)
    grid = Image.new("RGB", (w * max(len(r) for r in tiles), h * len(tiles)), "white")
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            grid.paste(tile, (j * w, i * h))
    return grid
