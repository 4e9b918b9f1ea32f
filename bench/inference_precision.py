"""Inference in fp32 against bf16 autocast, per method's export pipeline, interleaved in one run:
seconds per call (median over rounds), the speed ratio, and how far bf16 moves the outputs (max and
mean absolute difference in [-1, 1] units, and the share of 8-bit pixels that change). The figures
behind the pipelines' fp32 default (gen/pipelines/base.py, docs/evaluation.md).

    python bench/inference_precision.py [--rounds 5] [--device cpu|cuda]

Networks are freshly initialised (the speed and rounding do not depend on training); sizes are the
ones users run: pix2pix unet_256 at 256x256 batch 1, CycleGAN's resnet_9blocks at 256x256, the
colorization U-Net on 32 CIFAR images, the DDPM CIFAR-10 U-Net (35.7M) at 32x32 for 10 DDIM steps
on 16 samples.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pipelines_under_test(device: str):
    from diffusers import DDPMScheduler

    from gen.color import load_bins
    from gen.models import create_model
    from gen.pipelines import ColorizationPipeline, DiffusionSamplingPipeline, TranslationPipeline

    torch.manual_seed(0)
    x256 = torch.rand(1, 3, 256, 256, device=device) * 2 - 1
    p2p = TranslationPipeline(create_model("unet_256"), "pix2pix", "paper")
    yield "pix2pix unet_256 (paper inference)", p2p, lambda p: p(x256)
    yield "cyclegan resnet_9blocks", TranslationPipeline(create_model("resnet_9blocks", norm="instance"),
                                                         "cyclegan", "eval"), lambda p: p(x256)
    bins = load_bins("zhang313")
    col = ColorizationPipeline(create_model("unet", in_channels=1, out_channels=len(bins), num_downs=5,
                                            out_activation="none"), "classification", bins)
    l32 = torch.rand(32, 1, 32, 32, device=device) * 2 - 1
    yield "colorization unet (32 x 32px)", col, lambda p: p(l32)
    ddpm = DiffusionSamplingPipeline(create_model("ddpm_cifar10").eval(), DDPMScheduler())
    ddpm.sample_size = 32
    yield "ddpm_cifar10 (16 samples, DDIM 10)", ddpm, lambda p: p.sample_numbers(range(16), 10, "ddim", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = []
    for name, pipe, call in pipelines_under_test(args.device):
        pipe.to(args.device)
        times = {"fp32": [], "bf16": []}
        outs = {}
        for r in range(args.rounds + 1):  # round 0 warms up both
            for precision in ("fp32", "bf16") if r % 2 else ("bf16", "fp32"):
                pipe.with_precision(precision)
                start = time.perf_counter()
                out = call(pipe).float().cpu()
                if r:
                    times[precision].append(time.perf_counter() - start)
                outs[precision] = out
        diff = (outs["bf16"] - outs["fp32"]).abs()
        levels = lambda t: ((t.clamp(-1, 1) + 1) * 127.5 + 0.5).floor()  # noqa: E731  (to_pil's rounding)
        changed = float((levels(outs["bf16"]) != levels(outs["fp32"])).float().mean())
        if outs["fp32"].dtype.is_floating_point and name.startswith("colorization"):
            changed = float("nan")  # ab in Lab units, not 8-bit levels
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        rows.append({"pipeline": name, "fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16,
                     "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "share_8bit_changed": changed})
        print(f"{name:40s} fp32 {fp32:.3f} s  bf16 {bf16:.3f} s  bf16 x{fp32 / bf16:.2f}  "
              f"max|d| {diff.max():.4f}  mean|d| {diff.mean():.5f}  8-bit changed {changed:.1%}", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference_precision.json").write_text(json.dumps({"device": args.device, "rounds": args.rounds,
                                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
