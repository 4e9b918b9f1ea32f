"""Seconds per training step of the unpaired translators at one setting, interleaved in one process,
and their ratio to CycleGAN's: the step counts that give each method the same CPU-minutes.

    python bench/unpaired_step_time.py [--rounds 3] [--steps 5] [key=value ...]

Rows: CycleGAN, CUT, FastCUT, each without and with DiffAugment, built from their horse2zebra configs
(configs/cyclegan/horse2zebra.yaml, configs/cut/horse2zebra*.yaml) plus the overrides given (default:
bench/horse2zebra_recipes.sh's 128 px, unet_128, ngf 32, fp32) on the real data; the median over
`rounds` of the median of `steps` steps (gen's whole train_one_step), round 0 a warm-up. Interleaved,
so a machine shared with other work slows every row alike and the ratios stay fair. Prints one JSON
line per row and the steps per method equal to CYCLEGAN_STEPS CycleGAN steps (--cyclegan-steps).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen import config  # noqa: E402
from trainers import TRAINERS  # noqa: E402

DEFAULT = ["model.generator=unet_128", "model.ngf=32", "data.load_size=143", "data.crop_size=128",
           "train.mixed_precision=fp32", "log.wandb=disabled", "data.val=null", "data.num_workers=0"]
CONFIGS = {"cyclegan": "configs/cyclegan/horse2zebra.yaml", "cut": "configs/cut/horse2zebra.yaml",
           "fastcut": "configs/cut/horse2zebra_fastcut.yaml"}
AUG = "train.diffaugment=color,translation,cutout"


def trainer_for(path: str, overrides: list[str], run_dir: Path):
    cfg = config.load(ROOT / path, overrides + [f"run.dir={run_dir}"])
    t = TRAINERS[cfg.method](cfg)
    t.setup()
    return t


def timed(trainer, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_one_step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cyclegan-steps", type=int, default=1500)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    overrides = DEFAULT + args.overrides
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for name, path in CONFIGS.items():
            for aug in (False, True):
                row = name + ("+diffaugment" if aug else "")
                trainers[row] = trainer_for(path, overrides + ([AUG] if aug else []), Path(tmp) / row)
        times = {row: [] for row in trainers}
        for r in range(args.rounds + 1):
            order = list(trainers) if r % 2 else list(reversed(trainers))
            for row in order:
                t = timed(trainers[row], args.steps)
                if r:
                    times[row].append(t)
        med = {row: statistics.median(v) for row, v in times.items()}
        base = med["cyclegan"]
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "?")
        for row, sec in med.items():
            print(json.dumps({"method": row, "sec_per_step": round(sec, 4),
                              "vs_cyclegan": round(sec / base, 3),
                              "equal_compute_steps": round(args.cyclegan_steps * base / sec),
                              "threads": torch.get_num_threads(), "cpu": cpu}))


if __name__ == "__main__":
    main()
