"""The embedded datasets: crops of the colour photographs that ship inside scikit-image (no download).

- gray2photo (the quickstart): A is the photo in grayscale (Rec. 601 luma, as 3 channels), B the
  photo: pix2pix's "BW -> colour" (Isola et al. 2017, §4). Every photo contributes: training crops
  come from the left 70% of each, validation/test crops from the right 30%, so held-out inputs
  follow the training distribution (the same scenes' colours and textures) but no held-out pixel
  is ever trained on.
- edges2photo: A is a Canny edge map (black edges on white), B the photo; training crops come from
  six photos and validation crops from two others (generalisation to unseen images: a much harder
  task, since edges carry no colour).
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
TASKS = ("gray2photo", "edges2photo")
TRAIN_FRACTION = 0.7  # gray2photo: share of each photo's width that training crops come from


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


def gray_of(photo: Image.Image) -> Image.Image:
    """RGB -> its Rec. 601 luma, repeated to 3 channels (what a black-and-white photo would show)."""
    return photo.convert("L").convert("RGB")


def gray2photos(split: str, size: int = 64, count: int = 256, seed: int = 0):
    """`count` (grayscale, photo) crops of size x size; training crops from the left 70% of every
    photo, val/test crops from the right 30% (never overlapping a training crop)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"built-in dataset has splits train/val/test, not {split!r}")
    gen = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[split])
    # 4x the crop side: the held-out 30% of the narrowest photo still fits a crop
    photos = [_photo(n, short_side=4 * size) for n in TRAIN_IMAGES + VAL_IMAGES]
    pairs, labels = [], []
    for k in range(count):
        j = k % len(photos)
        photo = photos[j]
        cut = int(TRAIN_FRACTION * photo.size[0])
        lo, hi = (0, cut - size) if split == "train" else (cut, photo.size[0] - size)
        left = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        top = int(torch.randint(0, photo.size[1] - size + 1, (1,), generator=gen))
        crop = photo.crop((left, top, left + size, top + size))
        pairs.append((gray_of(crop), crop))
        labels.append(f"{Path((TRAIN_IMAGES + VAL_IMAGES)[j]).stem}_{k:04d}")
    return pairs, labels


def builtin_pairs(task: str, split: str, size: int = 64, count: int = 256, seed: int = 0):
    """(A, B) PIL pairs and names of built-in task `task` (gray2photo | edges2photo)."""
    if task not in TASKS:
        raise ValueError(f"unknown built-in task {task!r}; choose one of {list(TASKS)}")
    return (gray2photos if task == "gray2photo" else edges2photos)(split, size, count, seed)
