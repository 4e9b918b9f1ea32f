"""DDPM (Ho et al. 2020) scored by its samples. Image-conditioned (Palette-style): k samples per
condition, each scored like a translation (L1 / PSNR / SSIM / LPIPS, FID / KID, FCN-score) against the
target, plus the diversity between one condition's samples (mean pairwise L1 and LPIPS) when k > 1.
Unconditional: as many samples as real images, FID / KID against them, and FD_cifarnet / KID_cifarnet
(gen.metrics.offline_score: the same distances in a CIFAR-10 classifier's features, where Inception's
weights are not cached) for 32x32 RGB samples.

Sample j of the input named `name` is seeded by (seed, name, j), unconditional sample i by
(seed, i) (gen.seeding): the same image in training's grid, sample.py, evaluate and compare."""
from __future__ import annotations

import itertools
from typing import Any

import torch

from ..data.transforms import to_pil
from ..metrics import l1
from ..metrics.offline_score import unavailable_for
from .base import Scoring
from .translation import ImageOutputs


class ConditionalScoring(Scoring):
    """An image-conditioned DDPM export on paired items {"input" (condition), "target", "name"}."""

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        s = self.ctx.sampling
        samples = [f"sample ({s.scheduler_of(self.pipe)} {s.steps})"]
        samples += [f"sample {j + 1}" for j in range(1, s.samples_per_input)]
        self.columns = ["condition"] + samples + ["target"]
        self.images = ImageOutputs(self.ctx)
        self.diversity: dict[str, list[float]] = {"L1": [], "LPIPS": []}

    @property
    def outputs_per_item(self) -> int:
        return self.ctx.sampling.samples_per_input

    def refuse(self, data_kind: str, name: str) -> str:
        return ""  # any condition images: a pair's input, an image folder's gray input

    def notes(self, name: str, data_kind: str, size: tuple[int, int]) -> list[str]:
        s, side = self.ctx.sampling, self.pipe.sample_size
        how = "" if tuple(size) == (side, side) else (
            f", at its training size {side}x{side} and resized to {size[0]}x{size[1]}")
        sampler = s.scheduler_of(self.pipe)
        return [f"{name}: {s.samples_per_input} sample(s) per input, {sampler} {s.steps} steps, seed "
                f"{s.seed_of(self.pipe)}, each input's noise named by its file name{how}"]

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        s, outs = self.ctx.sampling, []
        for item in items:
            x = item["input"][None]
            out = self.pipe.sample_for(x, s.samples_per_input, s.steps, s.scheduler_of(self.pipe),
                                       s.seed_of(self.pipe), item["name"])
            for j, img in enumerate(out):
                self.ctx.saved.save(to_pil(img), item["name"], f"_{j}" if len(out) > 1 else "")
            self.images.add(out, item)
            for a, b in itertools.combinations(out.split(1), 2):
                self.diversity["L1"].append(l1(a, b))
                if self.ctx.lpips is not None and a.shape[1] == 3:
                    self.diversity["LPIPS"] += self.ctx.lpips(a, b)
            self.keep_row([x[0], *out, item["target"]])
            outs.append(out)
            self.count += 1
        return outs

    def result(self) -> dict[str, Any]:
        s = self.ctx.sampling
        out = {**self.images.result(), **self.ctx.unavailable(),
               "sampler": f"{s.scheduler_of(self.pipe)} {s.steps} steps, seed {s.seed_of(self.pipe)}"}
        if self.diversity["L1"]:
            out["diversity_L1"] = sum(self.diversity["L1"]) / len(self.diversity["L1"])
            if self.diversity["LPIPS"]:
                out["diversity_LPIPS"] = sum(self.diversity["LPIPS"]) / len(self.diversity["LPIPS"])
        return out


class UnconditionalScoring(Scoring):
    """An unconditional DDPM export against real items ({"image"} of an image folder, or a pair's
    "target"): one sample per real image, sample i for the i-th item added. In a comparison the input
    is unused: the run is scored by its samples' distances to the split's real images."""

    batch_size = 16

    def refuse(self, data_kind: str, name: str) -> str:
        return ""  # any split with real images (an image folder's, a pair's target)

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        s = self.ctx.sampling
        self.columns = ["real", f"sample ({s.scheduler_of(self.pipe)} {s.steps})"]
        self.distances = self.ctx.distances.fresh() if self.ctx.distances is not None else None
        self.cifar = self.ctx.cifar.fresh() if self.ctx.cifar is not None else None
        self.cifar_missing = self.ctx.cifar_missing

    def notes(self, name: str, data_kind: str, size: tuple[int, int]) -> list[str]:
        s = self.ctx.sampling
        sampler = s.scheduler_of(self.pipe)
        out = [f"{name}: unconditional, sample i (seed {s.seed_of(self.pipe)}, {sampler} {s.steps} "
               "steps) scored beside the i-th real image, its input unused"]
        return out + ([f"{name}: {self.cifar.describe()}"] if self.cifar is not None else [])

    def _add_cifar(self, samples: torch.Tensor, real: torch.Tensor) -> None:
        """Both sets into the CIFAR-classifier distances, or the reason they cannot go (size, channels)."""
        real_reason = unavailable_for(real.shape[1], tuple(real.shape[-2:]))
        reason = (unavailable_for(samples.shape[1], tuple(samples.shape[-2:]))
                  or real_reason.replace("these are", "the real images are"))
        if reason:
            self.cifar, self.cifar_missing = None, reason
            return
        self.cifar.add_fake("run", samples)
        self.cifar.add_real(real)

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        s = self.ctx.sampling
        numbers = range(self.count, self.count + len(items))
        samples = self.pipe.sample_numbers(numbers, s.steps, s.scheduler_of(self.pipe), s.seed_of(self.pipe))
        real = [it["image"] if "image" in it else it["target"] for it in items]
        for i, img in zip(numbers, samples):
            self.ctx.saved.save(to_pil(img), f"sample_{i:05d}")
        if self.distances is not None:
            self.distances.add_fake("run", samples)
            self.distances.add_real(torch.stack(real))
        if self.cifar is not None:
            self._add_cifar(samples, torch.stack(real))
        for r, img in zip(real, samples):
            self.keep_row([r, img])
        self.count += len(items)
        return [img[None] for img in samples]

    def result(self) -> dict[str, Any]:
        s = self.ctx.sampling
        out = {"sampler": f"{s.scheduler_of(self.pipe)} {s.steps} steps, seed {s.seed_of(self.pipe)}",
               **self.ctx.unavailable()}
        if self.distances is not None:
            out.update(self.distances.report("run"))
        if self.cifar is not None:
            out.update(self.cifar.report("run"))
        elif self.cifar_missing:
            out["FD_cifarnet"] = out["KID_cifarnet"] = self.cifar_missing
        return out
