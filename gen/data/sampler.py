"""An endless, resumable, rank-aware sampler over *sample numbers*.

The global stream is k = 0, 1, 2, ...: epoch e = k // N visits a permutation of 0..N-1 seeded by
(seed, e), and yields sample number g = e*N + index (datasets read index = g mod N and seed the
sample's augmentation with g). `start` is the number of samples of the global stream already drawn
(by all processes together); rank r of W then takes k = start+r, start+r+W, ... The skipped samples are
never loaded, so resume is exact and instant, and it stays exact when the batch size, accumulation or
number of processes changes between the segments of a run.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world_size, start

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def __iter__(self) -> Iterator[int]:
        k = self.start + self.rank
        epoch, perm = -1, None
        while True:
            e, pos = divmod(k, self.size)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield e * self.size + int(perm[pos])
            k += self.world
