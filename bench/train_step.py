"""Time one training step of pix2pix (U-Net G + 70x70 PatchGAN) and CycleGAN (2 G + 2 D, paper
recipe on the U-Net backbone) at batch 1, 256 and 128, fp32 and bf16 autocast.

Prints seconds per step, images per second, achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter over one real step of the method's trainer), that as a fraction of the
peak measured in the same run (a large 3x3 convolution in the same precision), and the peak RSS
of a fresh process per configuration. Results also go to bench/results/train_step.json.

    python bench/train_step.py [--methods pix2pix cyclegan] [--steps 5] [--sizes 256 128] [--precisions fp32 bf16]
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def conv_peak(precision: str, repeats: int = 5) -> float:
    """GFLOP/s of a compute-bound 3x3 conv (256 -> 256 channels, 64x64, batch 4)."""
    import torch
    x = torch.randn(4, 256, 64, 64)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False)
    flops = 2 * 4 * 256 * 256 * 9 * 64 * 64
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(2):
            conv(x)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


CONFIGS = {"pix2pix": "configs/pix2pix/facades.yaml", "cyclegan": "configs/cyclegan/horse2zebra.yaml"}


def one(method: str, size: int, precision: str, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gen import config
    from trainers import TRAINERS

    generator = {256: "unet_256", 128: "unet_128"}[size]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(ROOT / CONFIGS[method], [
            f"run.dir={tmp}", "log.wandb=disabled", f"model.generator={generator}", f"data.crop_size={size}",
            f"data.load_size={size}", f"train.mixed_precision={precision}"])
        trainer = TRAINERS[method](cfg)
        trainer.build()
        trainer.prepare()
        torch.manual_seed(0)
        x, y = torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1
        batch = {"input": x, "target": y} if method == "pix2pix" else {"A": x, "B": y}
        for _ in range(2):
            trainer.train_step(batch)
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(batch)
        flops = counter.get_total_flops()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            losses = trainer.train_step(batch)
            float(losses["G"])  # the step is complete when its loss is on the host
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]  # median: robust to a noisy neighbour
    peak = conv_peak(precision)
    return {"method": method, "generator": generator, "size": size, "precision": precision, "batch": 1, "sec_per_step": sec, "images_per_sec": 1 / sec,
            "gflop_per_step": flops / 1e9, "gflops": flops / sec / 1e9, "peak_gflops": peak,
            "fraction_of_peak": flops / sec / 1e9 / peak, "threads": torch.get_num_threads(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["pix2pix", "cyclegan"], choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.steps)))
        return
    rows = []
    for method, size, precision in itertools.product(args.methods, args.sizes, args.precisions):
        # A fresh process per configuration so peak RSS belongs to that configuration alone.
        out = subprocess.run([sys.executable, __file__, "--one", method, str(size), precision, "--steps",
                              str(args.steps)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{method:>8} {r['size']:>3} {r['precision']:>4}: {r['sec_per_step']:.3f} s/step  "
              f"{r['images_per_sec']:.2f} img/s  {r['gflop_per_step']:.1f} GFLOP/step  {r['gflops']:.1f} GFLOP/s  "
              f"= {100 * r['fraction_of_peak']:.0f}% of measured {r['precision']} conv peak {r['peak_gflops']:.1f}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    by = {(r["method"], r["size"], r["precision"]): r for r in rows}
    for method, size in itertools.product(args.methods, args.sizes):
        if (method, size, "fp32") in by and (method, size, "bf16") in by:
            ratio = by[(method, size, "fp32")]["sec_per_step"] / by[(method, size, "bf16")]["sec_per_step"]
            print(f"{method} bf16 autocast speed-up over fp32 at {size}: {ratio:.2f}x")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_step.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
