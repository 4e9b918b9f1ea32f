"""Colorization at the paper's scale: step time and peak memory of the Zhang et al. classification
head at 256x256, batch 32, for the four combinations of
- targets: dense soft-encoded (B, Q, H, W) tensors (the textbook form, gen's loss before) vs the
  sparse 5 nearest bins per pixel (indices + weights, gen's loss now; the same values, tested);
- head: logits at full resolution vs at 1/4 resolution (`colorization.output_stride=4`, as Zhang et al.).
Each variant runs in a fresh process (its peak RSS is its own) on the real ColorizationTrainer step
(U-Net with pix2pix_channels widths, Adam, the rebalancing weights of the paper's ImageNet prior) on
a synthetic batch. A variant that would exceed --max-gb of RAM is reported as not fitting (the
process is stopped by an address-space limit instead of the machine's OOM killer); then the
largest batch that fits is searched by halving. JSON in bench/results/colorization.json.

    python bench/colorization.py [--size 256] [--batch 32] [--num-downs 8] [--ngf 32] [--steps 2]
                                 [--max-gb 20]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> (targets, output stride)
    "dense, full": ("dense", 1),
    "sparse, full": ("sparse", 1),
    "dense, 1/4": ("dense", 4),
    "sparse, 1/4": ("sparse", 4),
}


def dense_loss(logits, ab, centres, class_weights, neighbours: int, sigma: float):
    """The textbook form: a dense (B, Q, H, W) soft-encoded target, cross-entropy against log-softmax
    of logits nearest-upsampled to the target's resolution."""
    import torch
    import torch.nn.functional as F

    from gen.color import soft_encode

    z = soft_encode(ab, centres, neighbours, sigma)  # (B, Q, H, W)
    if logits.shape[-1] != z.shape[-1]:
        logits = F.interpolate(logits, size=z.shape[-2:], mode="nearest")
    ce = -(z * torch.log_softmax(logits.float(), 1)).sum(1)
    return (ce * class_weights[z.argmax(1)]).mean()


def one(variant: str, size: int, batch: int, num_downs: int, ngf: int, steps: int) -> dict:
    import torch

    from gen import config
    from gen.color import split_lab
    from trainers import TRAINERS

    targets, stride = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(ROOT / "configs/colorization/cifar10.yaml", [
            f"run.dir={tmp}", "log.wandb=disabled", f"train.batch_size={batch}", "train.device=cpu",
            "train.mixed_precision=fp32", "colorization.prior=imagenet", f"data.load_size={size}",
            f"data.crop_size={size}", f"model.num_downs={num_downs}", f"model.ngf={ngf}",
            f"colorization.output_stride={stride}"])
        trainer = TRAINERS["colorization"](cfg)
        trainer.build()
        trainer.prepare()
        if targets == "dense":
            c = cfg.colorization

            def train_step(batch):
                with torch.no_grad():
                    l_norm, ab = split_lab(batch["image"])
                loss = dense_loss(trainer.forward("generator", l_norm), ab, trainer.centres, trainer.weights,
                                  c.neighbours, c.sigma)
                trainer.backward(loss, "generator")
                trainer.step_optimizer("generator")
                return {"CE": loss}
            trainer.train_step = train_step
        g = torch.Generator().manual_seed(0)
        data = {"image": torch.rand(batch, 3, size, size, generator=g) * 2 - 1}
        params = sum(p.numel() for p in trainer.models["generator"].parameters())
        times = []
        for i in range(steps + 1):  # the first step warms up allocator and oneDNN
            t = time.perf_counter()
            float(trainer.train_step(data)["CE"])
            if i:
                times.append(time.perf_counter() - t)
    return {"variant": variant, "batch": batch, "size": size, "params": params,
            "sec_per_step": statistics.median(times), "images_per_sec": batch / statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def measure(variant: str, batch: int, args) -> dict | None:
    """One variant in a fresh process under an address-space limit; None if it does not fit."""
    limit = int(args.max_gb * 2 ** 30)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cmd = [sys.executable, __file__, "--one", variant, "--size", str(args.size), "--batch", str(batch),
           "--num-downs", str(args.num_downs), "--ngf", str(args.ngf), "--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["killed"])[-1]
        if "can't allocate memory" in last or "MemoryError" in last or "out of memory" in last.lower():
            return None
        raise RuntimeError(f"{variant} at batch {batch} failed (exit {out.returncode}): {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-downs", type=int, default=8)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-gb", type=float, default=20.0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.size, args.batch, args.num_downs, args.ngf, args.steps)))
        return
    print(f"colorization step, {args.size}x{args.size}, U-Net {args.num_downs} levels ngf {args.ngf}, fp32, "
          f"RAM limit {args.max_gb:g} GB")
    print(f"{'variant':>14} {'batch':>6} {'s/step':>8} {'img/s':>7} {'peak MB':>8}")
    rows = []
    for variant in args.variants:
        batch, got = args.batch, None
        while batch >= 1 and got is None:
            got = measure(variant, batch, args)
            if got is None:
                print(f"{variant:>14} {batch:>6} does not fit in {args.max_gb:g} GB", flush=True)
                batch //= 2
        if got:
            rows.append(got)
            print(f"{variant:>14} {got['batch']:>6} {got['sec_per_step']:>8.2f} "
                  f"{got['images_per_sec']:>7.2f} {got['peak_rss_mb']:>8.0f}", flush=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "colorization.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
