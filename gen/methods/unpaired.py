"""A one-direction unpaired translator (CUT, FastCUT; Park et al. 2020 §4): FID / KID of the translated
A test images against the real B test images, the share of them a domain classifier (trained on
the real training images only) assigns to B, its accuracy on the real test images of both domains,
and identity PSNR: G(B) against B, how much the translator leaves images already in B alone (CUT's
identity PatchNCE term asks for it; no paired target exists for G(A))."""
from __future__ import annotations

from typing import Any

import torch

from ..data.transforms import to_pil
from ..metrics import psnr
from ..metrics.domain import predict_domain
from .base import Scoring


class UnpairedScoring(Scoring):
    """An UnpairedTranslationPipeline (A -> B) on domain items {"image", "domain", "name"}
    (gen.methods.cyclegan.DomainImages: every A file, then every B file)."""

    columns = ["A", "G(A)"]

    def __init__(self, pipe, ctx=None):
        super().__init__(pipe, ctx)
        self.judge = self.ctx.distances.fresh() if self.ctx.distances is not None else None
        self.counts = {"A": 0, "B": 0}
        self.real_right = {"A": 0, "B": 0}
        self.fake_judged_b = 0
        self.identity_psnr: list[float] = []
        self.identity_skipped = ""  # why identity_PSNR_B is unavailable, if it is

    def add(self, items: list[dict]) -> list[torch.Tensor]:
        outs = []
        for item in items:
            dom, real = item["domain"], item["image"][None]
            if dom == "B" and real.shape[1] != self.pipe.in_channels:
                # G reads A's channels only (a GAN-only run between unequal domains): no identity check
                self.identity_skipped = (f"unavailable: B images have {real.shape[1]} channel(s), the "
                                         f"generator reads {self.pipe.in_channels}")
                out = real
            else:
                out = self.pipe(real).cpu()  # G(A): the translation; G(B): the identity check
            if dom == "A":
                self.ctx.saved.save(to_pil(out[0]), item["name"], sub="AtoB")
                self.keep_row([real[0], out[0]])
                if self.judge is not None:
                    self.judge.add_fake("run", out)
                if self.ctx.classifier is not None:
                    self.fake_judged_b += int(predict_domain(self.ctx.classifier, out)[0] == 1)
            else:
                if not self.identity_skipped:
                    self.identity_psnr += psnr(out, real)
                if self.judge is not None:
                    self.judge.add_real(real)
            if self.ctx.classifier is not None:
                self.real_right[dom] += int(predict_domain(self.ctx.classifier, real)[0] == "AB".index(dom))
            self.counts[dom] += 1
            self.count += 1
            outs.append(out)
        return outs

    def result(self) -> dict[str, Any]:
        n_a, n_b = self.counts["A"], self.counts["B"]
        if not n_a or not n_b:
            raise ValueError(f"unpaired scoring needs images of both domains (got {n_a} A, {n_b} B)")
        identity = self.identity_skipped or sum(self.identity_psnr) / n_b
        out = {"identity_PSNR_B": identity, "images_A": n_a, "images_B": n_b,
               "inference": self.pipe.inference}
        if self.judge is not None:
            out.update({f"{k}_to_B": v for k, v in self.judge.report("run").items()})
        elif self.ctx.fid_missing:
            out["FID_to_B"] = out["KID_to_B"] = self.ctx.fid_missing
        if self.ctx.classifier is not None:
            out["classifier_acc_real_A"] = self.real_right["A"] / n_a
            out["classifier_acc_real_B"] = self.real_right["B"] / n_b
            out["translated_A_judged_B"] = self.fake_judged_b / n_a
        return out
