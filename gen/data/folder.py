"""A folder of images, searched recursively (CIFAR-10's class subfolders, a photo album): the data of
unconditional diffusion and of colorization, which needs only photos.

Items are `{"image": (C, h, w) in [-1, 1], "name"}`, addressed by sample number g like the paired
datasets: the file is g mod len, and g seeds the crop and flip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from .image_io import load_image
from .listing import count_text, relative_name, scan_images
from .transforms import Geometry, apply_image, plan, sample_generator


class ImageFolder(Dataset):
    def __init__(self, folder: Path, geometry: Geometry, subset: slice = slice(None), pattern: str = "**/*",
                 channels: int = 3, train: bool = True, seed: int = 0, max_16bit: Optional[float] = None):
        self.listing, self.root = scan_images(Path(folder), pattern=pattern), Path(folder)
        self.files = self.listing.files[subset]
        if not self.files:
            raise ValueError(f"the slice {subset} of {folder} selects no images")
        self.listing.found = count_text(len(self.files), "images", len(self.listing.files), subset)
        self.geometry, self.channels, self.train, self.seed = geometry, channels, train, seed
        self.max_16bit = max_16bit

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, g: int) -> dict:
        path = self.files[g % len(self.files)]
        img = load_image(path, self.channels, self.max_16bit)
        gen = sample_generator(self.seed, g) if self.train else None
        return {
            "image": apply_image(
                img, plan(self.geometry, *img.size, train=self.train, gen=gen, name=str(path))
            ),
            "name": relative_name(path, self.root),
        }
