"""CycleGAN (Zhu et al. 2017): cycle-reconstruction PSNR both ways, FID / KID of each direction's
translations against the real images of the domain they translate into, and a domain classifier
trained on the real training images only: its accuracy on real test images, and the share of
translations it assigns to the target domain."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.listing import relative_name
from ..data.transforms import load_images, to_pil
from ..metrics import psnr
from ..metrics.domain import predict_domain
from .base import Scoring


class DomainImages:
    """Unpaired files as items {"image" (C, H, W), "domain", "name"}: every A file, then every B file,
    each read when it is scored (memory does not grow with the split); names relative to `roots`
    (the testA / testB folders), so subfolders are kept."""

    def __init__(self, files: dict[str, Sequence[Path]], geometry, channels: dict[str, int], max_16bit=None,
                 roots: dict[str, Path] | None = None):
        self.entries = [(dom, p) for dom in "AB" for p in files[dom]]
        self.geometry, self.channels, self.max_16bit = geometry, channels, max_16bit
        self.roots = roots or {}

    @classmethod
    def first(cls, dataset, n: int) -> "DomainImages":
        """The first n files of each domain of an UnpairedImages split (training's validation items:
        what `sample.py evaluate --max-images n` scores), read as evaluation reads them."""
        files = {"A": dataset.a_files[:n], "B": dataset.b_files[:n]}
        return cls(files, dataset.geometry, {"A": dataset.channels_a, "B": dataset.channels_b},
                   dataset.max_16bit, dataset.roots)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        dom, path = self.entries[i]
        image = load_images([path], self.geometry, self.channels[dom], self.max_16bit)[0]
        return {"image": image, "domain": dom, "name": relative_name(path, self.roots.get(dom))}


class _Direction:
    """Running scores of one direction (src -> the other domain -> src)."""

    def __init__(self):
        self.cycle_psnr: list[float] = []
        self.real_right = self.fake_judged_target = 0
        self.rows: list[list[torch.Tensor]] = []


class CycleGANScoring(Scoring):
    """A CycleGAN export (both directions, gen.pipelines.CycleGANPipeline) on domain items."""

    columns = ["A", "G_A(A)", "G_B(G_A(A))", "B", "G_B(B)", "G_A(G_B(B))"]

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        self.runs = {"A": _Direction(), "B": _Direction()}
        d = self.ctx.distances
        # G_A(A) is judged against real B, G_B(B) against real A: one accumulator per target domain
        self.judges = {t: d.fresh() for t in "AB"} if d is not None else {}

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        pipes, outs = self.pipe.directions, []
        for item in items:
            src = item["domain"]
            dst = "B" if src == "A" else "A"
            real = item["image"][None]
            fake = pipes[f"{src}to{dst}"](real).cpu()
            rec = pipes[f"{dst}to{src}"](fake).cpu()
            self.ctx.saved.save(to_pil(fake[0]), item["name"], sub=f"{src}to{dst}")
            run = self.runs[src]
            run.cycle_psnr += psnr(rec, real)
            if len(run.rows) < self.ctx.grid_rows:
                run.rows.append([real[0].clone(), fake[0], rec[0]])
            if self.judges:
                self.judges[src].add_real(real)
                self.judges[dst].add_fake("run", fake)
            if self.ctx.classifier is not None:
                run.real_right += int(predict_domain(self.ctx.classifier, real)[0] == "AB".index(src))
                run.fake_judged_target += int(predict_domain(self.ctx.classifier, fake)[0] == "AB".index(dst))
            outs.append(fake)
            self.count += 1
        return outs

    def grid(self):
        self.rows = [ra + rb for ra, rb in zip(self.runs["A"].rows, self.runs["B"].rows)]
        return super().grid()

    def result(self) -> dict[str, Any]:
        a, b = self.runs["A"], self.runs["B"]
        if not a.cycle_psnr or not b.cycle_psnr:
            raise ValueError(f"CycleGAN scoring needs images of both domains (got {len(a.cycle_psnr)} A, "
                             f"{len(b.cycle_psnr)} B)")
        out = {"cycle_PSNR_A": sum(a.cycle_psnr) / len(a.cycle_psnr),
               "cycle_PSNR_B": sum(b.cycle_psnr) / len(b.cycle_psnr),
               "images_A": len(a.cycle_psnr), "images_B": len(b.cycle_psnr),
               "inference": self.pipe.directions["AtoB"].inference}
        for target in "BA":
            if self.judges:
                out.update({f"{k}_to_{target}": v for k, v in self.judges[target].report("run").items()})
            elif self.ctx.fid_missing:
                out[f"FID_to_{target}"] = out[f"KID_to_{target}"] = self.ctx.fid_missing
        if self.ctx.classifier is not None:
            out["classifier_acc_real_A"] = a.real_right / len(a.cycle_psnr)
            out["classifier_acc_real_B"] = b.real_right / len(b.cycle_psnr)
            out["translated_A_judged_B"] = a.fake_judged_target / len(a.cycle_psnr)
            out["translated_B_judged_A"] = b.fake_judged_target / len(b.cycle_psnr)
        return out
