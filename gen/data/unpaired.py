"""Unpaired data in the CycleGAN layout: ROOT/trainA, ROOT/trainB, ROOT/testA, ROOT/testB.

An epoch has max(|A|, |B|) items. Item g takes A[g mod |A|] and a B that is random per sample
(seeded by the sample number g, so resume reproduces it) or, with `serial_b`, B[g mod |B|].
A and B get independent crops and flips: they are not aligned.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from .image_io import load_image
from .listing import Listing, scan_images
from .transforms import Geometry, apply_image, plan, sample_generator


def scan_unpaired(root: Path, split: str) -> tuple[list[Path], list[Path], Listing]:
    """The A and B files of a split (ROOT/<split>A, ROOT/<split>B, subfolders included) and one
    listing of both for the start-up report ('8 A + 6 B images in ROOT (trainA, trainB)')."""
    a = scan_images(root / f"{split}A", f"domain A images ({split}A)")
    b = scan_images(root / f"{split}B", f"domain B images ({split}B)")
    listing = Listing(root, a.files + b.files, found=f"{len(a.files)} A + {len(b.files)} B images")
    listing.found += f" ({split}A, {split}B)"
    listing.absorb(a)
    listing.absorb(b)
    return a.files, b.files, listing


class UnpairedImages(Dataset):
    def __init__(
        self,
        root: Path,
        split: str,
        geometry: Geometry,
        channels_a: int = 3,
        channels_b: int = 3,
        train: bool = True,
        seed: int = 0,
        serial_b: bool = False,
        max_16bit: Optional[float] = None,
    ):
        root = Path(root)
        self.a_files, self.b_files, self.listing = scan_unpaired(root, split)
        self.roots = {dom: root / f"{split}{dom}" for dom in "AB"}  # what item names are relative to
        self.geometry, self.train, self.seed, self.serial_b = geometry, train, seed, serial_b
        self.channels_a, self.channels_b, self.max_16bit = channels_a, channels_b, max_16bit

    def __len__(self) -> int:
        return max(len(self.a_files), len(self.b_files))

    def _load(self, path: Path, channels: int, gen, g: int) -> torch.Tensor:
        img = load_image(path, channels, self.max_16bit)
        return apply_image(img, plan(self.geometry, *img.size, train=self.train, gen=gen, name=str(path)))

    def __getitem__(self, g: int) -> dict:
        gen = sample_generator(self.seed, g) if self.train else None
        a_path = self.a_files[g % len(self.a_files)]
        if self.serial_b or not self.train:
            b_path = self.b_files[g % len(self.b_files)]
        else:
            b_path = self.b_files[int(torch.randint(0, len(self.b_files), (1,), generator=gen))]
        return {
            "A": self._load(a_path, self.channels_a, gen, g),
            "B": self._load(b_path, self.channels_b, gen, g),
            "name": f"{a_path.name}|{b_path.name}",
        }
