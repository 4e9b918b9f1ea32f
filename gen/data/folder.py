"""A folder of images, searched recursively (CIFAR-10's class subfolders, a photo album): the data of
unconditional diffusion and of colorization, which needs only photos.

Items are `{"image": (C, h, w) in [-1, 1], "name"}`, addressed by sample number g like the paired
datasets: the file is g mod len, and g seeds the crop and flip.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from .image_io import IMG_EXTENSIONS, is_image_file, load_image
from .transforms import Geometry, apply_image, plan, sample_generator


def find_images(folder: Path, pattern: str = "**/*", what: str = "images") -> list[Path]:
    """Sorted image files under `folder` matching the glob `pattern` (recursive by default)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    skipped = [p.name for p in files if not is_image_file(p)]
    if skipped:
        warnings.warn(f"{folder}: skipping {len(skipped)} non-image file(s): {skipped[:5]}", stacklevel=2)
    if not images:
        raise ValueError(f"no {what} matching {pattern!r} in {folder} (looked for {', '.join(IMG_EXTENSIONS)})")
    return images


class ImageFolder(Dataset):
    def __init__(self, folder: Path, geometry: Geometry, subset: slice = slice(None), pattern: str = "**/*",
                 channels: int = 3, train: bool = True, seed: int = 0, max_16bit: Optional[float] = None):
        self.files = find_images(Path(folder), pattern)[subset]
        if not self.files:
            raise ValueError(f"the slice {subset} of {folder} selects no images")
        self.geometry, self.channels, self.train, self.seed = geometry, channels, train, seed
        self.max_16bit = max_16bit

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, g: int) -> dict:
        path = self.files[g % len(self.files)]
        img = load_image(path, self.channels, self.max_16bit)
        gen = sample_generator(self.seed, g) if self.train else None
        return {"image": apply_image(img, plan(self.geometry, *img.size, train=self.train, gen=gen, name=str(path))),
                "name": path.name}
