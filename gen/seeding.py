"""A seed names a sample: the noise of one output depends on the run's seed, the item's identity and
the sample number k, never on the other items of the folder, the batch size or the process count.

Identity is a string: an input's path relative to its folder (or split) without extension,
`"street/0001"` for `street/0001.jpg`, so the same file gives the same sample wherever it is read
(sample.py on a folder, sample.py evaluate, compare, training's validation grid, the server); an
unconditional sample's identity is its number, `sample_00007.png` being sample 7.
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath
from typing import Sequence

import torch


def item_key(name: str | int) -> str:
    """An item's identity: a sample number as is, a file name as its POSIX path without extension
    ('a\\\\b.png' and 'a/b.jpg' are both 'a/b')."""
    if isinstance(name, int):
        return str(name)
    return PurePosixPath(str(name).replace("\\", "/")).with_suffix("").as_posix()


def sample_seed(seed: int, name: str | int, k: int = 0) -> int:
    """The seed of the k-th sample of item `name` in a run sampled with `seed`: 63 bits of
    SHA-256("seed/key/k"), stable across machines, Python versions and processes."""
    digest = hashlib.sha256(f"{int(seed)}/{item_key(name)}/{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generators(seed: int, names: Sequence[str | int], k: int = 1, device: str | torch.device = "cpu"
               ) -> list[torch.Generator]:
    """One generator per sample, item-major: names[0] samples 0..k-1, names[1] samples 0..k-1, ...
    (diffusers' samplers draw each batch element's noise from its own generator when given a list)."""
    return [torch.Generator(device).manual_seed(sample_seed(seed, n, j)) for n in names for j in range(k)]
