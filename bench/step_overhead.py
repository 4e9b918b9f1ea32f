"""What gen's training loop adds to a pix2pix step: gen's `train_one_step` against the same step
written as bare PyTorch (the reference pix2pix step order: G forward, D step on (A, G(A)) and
(A, B) with the loss halved, G step on GAN + 100 L1; torch.optim.Adam with its default
implementation), on the same networks, data and precision, interleaved in one run.

    python bench/step_overhead.py [--size 256] [--generator unet_256] [--rounds 5] [--steps 5]
                                  [--profile]

Rows: bare fp32, gen fp32, bare bf16 (autocast around both forwards), gen bf16; seconds per step
(median of `rounds` medians of `steps` steps), and gen / bare. `--profile` adds torch.profiler's
table of gen's fp32 step (self CPU time by op), to see what the loop's own work costs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_pairs(root: Path, n: int, size: int) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((size, size)))
        Image.fromarray(np.concatenate([a, 255 - a], 1)).save(root / f"{i:03d}.png")


class Bare:
    """The pix2pix step in plain PyTorch on gen's networks (no Accelerate, no guards)."""

    def __init__(self, trainer, precision: str):
        self.g = trainer.unwrap("generator")
        self.d = trainer.unwrap("discriminator")
        lr, betas = trainer.cfg.train.lr, (trainer.cfg.train.beta1, trainer.cfg.train.beta2)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=betas)
        self.bf16 = precision == "bf16"

    def step(self, a: torch.Tensor, b: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            fake = self.g(a)
        for p in self.d.parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pred_fake = self.d(torch.cat([a, fake.detach()], 1)).float()
            pred_real = self.d(torch.cat([a, b], 1)).float()
        loss_d = 0.5 * (F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
                        + F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real)))
        loss_d.backward()
        self.opt_d.step()
        for p in self.d.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.d(torch.cat([a, fake], 1)).float()
        loss_g = (F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
                  + 100 * F.l1_loss(fake.float(), b))
        loss_g.backward()
        self.opt_g.step()


def make(precision: str, args, data: Path, work: Path):
    from gen import config
    from trainers import Pix2PixTrainer
    cfg = config.load(ROOT / "configs" / "pix2pix" / "facades.yaml", [
        f"data.root={data}", "data.kind=paired", "data.train=train", "data.layout=aligned", "data.val=null",
        "data.test=null",
        f"data.load_size={args.size}", f"data.crop_size={args.size}", "data.flip=false",
        f"model.generator={args.generator}", "train.batch_size=1", f"train.mixed_precision={precision}",
        "train.max_steps=100000", "train.log_every=100000", "train.validate_every=100000",
        "train.ckpt_every=100000", "log.wandb=disabled", f"run.dir={work / precision}"])
    trainer = Pix2PixTrainer(cfg)
    trainer.setup()
    batch = trainer.to_device(next(trainer.loader))
    return trainer, Bare(trainer, precision), batch["input"], batch["target"]


def timed(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--generator", default="unet_256")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_pairs(data / "train", 8, args.size)
        setups = {p: make(p, args, data, Path(tmp)) for p in ("fp32", "bf16")}
        rows = {f"{kind} {p}": [] for p in ("fp32", "bf16") for kind in ("bare", "gen")}
        for r in range(args.rounds + 1):  # round 0 warms every row up
            order = list(rows) if r % 2 else list(reversed(rows))
            for row in order:
                kind, precision = row.split()
                trainer, bare, a, b = setups[precision]
                fn = trainer.train_one_step if kind == "gen" else (lambda: bare.step(a, b))
                t = timed(fn, args.steps)
                if r:
                    rows[row].append(t)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"pix2pix step, {args.generator} at {args.size}px, batch 1, {torch.get_num_threads()} threads")
        for p in ("fp32", "bf16"):
            print(f"  {p}: bare {med[f'bare {p}']:.3f} s  gen {med[f'gen {p}']:.3f} s  "
                  f"gen/bare {med[f'gen {p}'] / med[f'bare {p}']:.3f}")
        print(f"  bf16 speedup: bare x{med['bare fp32'] / med['bare bf16']:.2f}, "
              f"gen x{med['gen fp32'] / med['gen bf16']:.2f}")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile
            trainer = setups["fp32"][0]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    trainer.train_one_step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
