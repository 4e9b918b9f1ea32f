"""Validate FD_cifarnet / KID_cifarnet (gen/metrics/offline_score.py) before trusting it: the classifier's
test accuracy and training time, then the distances to the real CIFAR-10 training images of real test
images (low), of uniform and Gaussian noise (high), and of the test images along a Gaussian-blur ladder
and an additive-noise ladder (each should rise monotonically).

    OMP_NUM_THREADS=1 python bench/offline_score.py [--cifar10 DIR] [--cache DIR] [--n 1000]

Trains the classifier once (minutes on a CPU) and caches it where sample.py evaluate looks for it
($GEN_CACHE, else ~/.cache/gen), or reuses it. Noise std is in pixel units of 0..1 (0.1 = 25.5 levels).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import gaussian_blur

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gen.metrics import offline_score as osc  # noqa: E402

BLUR = (0.0, 0.5, 1.0, 1.5, 2.0)
NOISE = (0.0, 0.05, 0.1, 0.2, 0.4)
GAUSS = "Gaussian noise (0.5 + 0.25 N(0, 1))"  # on the 0..1 scale, clamped


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x: (N, 3, 32, 32) in [-1, 1] blurred by a Gaussian of `sigma` px (kernel 2 ceil(3 sigma) + 1)."""
    if sigma == 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(x, [k, k], [sigma, sigma])


def noisy(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """x plus Gaussian noise of `std` on the 0..1 scale (2 std on [-1, 1]), clamped to [-1, 1]."""
    return (x + 2 * std * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar10", type=Path, default=osc.DEFAULT_CIFAR10, help="CIFAR-10 folder")
    p.add_argument("--cache", type=Path, help="classifier cache folder (default $GEN_CACHE or ~/.cache/gen)")
    p.add_argument("--n", type=int, default=1000, help="test images per condition (at most the test split)")
    args = p.parse_args()

    start = time.perf_counter()
    distances, reason = osc.try_cifar_distances(args.cifar10, folder=args.cache)
    if distances is None:
        raise SystemExit(reason)
    r = distances.record
    print(f"classifier: {osc.CifarNetSettings()}")
    print(f"  test accuracy {100 * r['test_accuracy']:.1f}% on {r['test_images']} test images; trained on "
          f"{r['train_images']} images in {r['train_seconds']:.0f} s on {r['cpu']} ({r['threads']} "
          f"thread(s), {r['device']}); this call {time.perf_counter() - start:.0f} s (none when reused)")
    classes = r["classes"]
    train = osc.to_unit(osc.load_split(args.cifar10 / "train", classes).images)
    test = osc.to_unit(osc.load_split(args.cifar10 / "test", classes).images)
    gen = torch.Generator().manual_seed(0)
    test = test[torch.randperm(len(test), generator=gen)[:args.n]]
    n = len(test)
    distances.add_real(train)
    conditions = {"real test images": test,
                  "uniform noise": torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1,
                  GAUSS: (0.5 * torch.randn(n, 3, 32, 32, generator=gen)).clamp(-1, 1)}
    conditions.update({f"blur sigma {s}": blurred(test, s) for s in BLUR})
    conditions.update({f"noise std {s}": noisy(test, s, gen) for s in NOISE})
    for name, x in conditions.items():
        distances.add_fake(name, x)
    print(f"\nreference: the {len(train)} CIFAR-10 training images; each row {n} images ("
          f"{distances.net.num_features} features; KID x 1e3, mean +- sd over 50 subsets of "
          f"{min(1000, n // 2)})")
    print(f"{'condition':40s} {'FD_cifarnet':>12s} {'KID_cifarnet':>16s}")
    scores = {}
    for name in conditions:
        s = distances.report(name)
        scores[name] = s["FD_cifarnet"]
        kid = f"{1e3 * s['KID_cifarnet']:.2f} +- {1e3 * s['KID_cifarnet_std']:.2f}"
        print(f"{name:40s} {s['FD_cifarnet']:12.3f} {kid:>16s}")
    for ladder, values in (("blur sigma", BLUR), ("noise std", NOISE)):
        fd = [scores[f"{ladder} {v}"] for v in values]
        rising = all(a < b for a, b in zip(fd, fd[1:]))
        print(f"{ladder} ladder {values}: FD rises monotonically: {'yes' if rising else 'NO'}")
    real, noise = scores["real test images"], min(scores["uniform noise"], scores[GAUSS])
    print(f"noise / real test FD ratio: {noise / real:.1f}")


if __name__ == "__main__":
    main()
