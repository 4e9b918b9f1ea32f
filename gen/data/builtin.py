"""The embedded default dataset: edges -> photo crops built from the colour photographs that ship
inside scikit-image (no download). A is a Canny edge map (black edges on white), B the photo.

Training crops come from six photos, validation crops from two others, so the quickstart's
validation numbers measure generalisation to unseen images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from skimage.color import rgb2gray
from skimage.feature import canny

TRAIN_IMAGES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
VAL_IMAGES = ("rocket.jpg", "motorcycle_left.png")


def _photo(name: str, short_side: int) -> Image.Image:
    # Read the files inside the installed package directly: skimage.data's loaders may fetch.
    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"built-in dataset needs {path}, which ships with scikit-image")
    img = Image.open(path).convert("RGB")
    scale = short_side / min(img.size)
    return img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BICUBIC)


def edges_of(photo: Image.Image, sigma: float = 1.5) -> Image.Image:
    edges = canny(rgb2gray(np.asarray(photo)), sigma=sigma)
    return Image.fromarray(np.where(edges, 0, 255).astype(np.uint8)).convert("RGB")


def edges2photos(split: str, size: int = 64, count: int = 256, seed: int = 0):
    """`count` (edges, photo) crops of size x size and their names; deterministic in `seed`."""
    names = TRAIN_IMAGES if split == "train" else VAL_IMAGES
    if split not in ("train", "val", "test"):
        raise ValueError(f"built-in dataset has splits train/val/test, not {split!r}")
    gen = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[split])
    photos = [_photo(n, short_side=3 * size) for n in names]
    pairs, labels = [], []
    for k in range(count):
        j = k % len(photos)
        photo = photos[j]
        top = int(torch.randint(0, photo.size[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, photo.size[0] - size + 1, (1,), generator=gen))
        crop = photo.crop((left, top, left + size, top + size))
        pairs.append((edges_of(crop), crop))
        labels.append(f"{Path(names[j]).stem}_{k:04d}")
    return pairs, labels
