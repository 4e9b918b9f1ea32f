"""Where a DDPM training step spends its time on this CPU, and the fastest it could be at fp32.

Profiles one forward+backward of gen's ddpm_cifar10 U-Net (channels_last, as gen runs it on the CPU)
at batch 16, 32x32, groups the operators (convolutions and matmuls, GroupNorm, attention, SiLU,
elementwise and copies), and bounds the step from below: its FLOPs at the peak GFLOP/s a large
compute-bound 3x3 convolution reaches here, with everything else free. If that bound is not 1.25x
below diffusers' step, no kernel fusion or layout change can make the step 1.25x faster than diffusers'
at equal precision. Optionally also times torch.compile (inductor) of the same step after warm-up.

    python bench/ddpm_profile.py [--batch 16] [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GROUPS = {  # aten op name fragments -> group (first match wins)
    "convolution / matmul": ("conv", "mm", "linear", "addmm", "bmm", "matmul"),
    "attention (SDPA)": ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax"),
    "GroupNorm": ("group_norm",),
    "SiLU": ("silu",),
    "copies, cat, layout": ("copy", "cat", "clone", "contiguous", "to_copy", "empty", "stack", "pad",
                            "upsample", "permute", "transpose"),
    "elementwise (add, mul, ...)": ("add", "mul", "sub", "div", "pow", "mean", "sum", "fill", "zero", "exp",
                                    "sin", "cos", "neg", "where", "dropout"),
}


def group_of(name: str) -> str:
    n = name.lower()
    for group, keys in GROUPS.items():
        if any(k in n for k in keys):
            return group
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from ddpm import diffusers_twin
    from gen.models import create_model
    from run import conv_peak

    torch.manual_seed(0)
    ours = create_model("ddpm_cifar10").train().to(memory_format=torch.channels_last)
    theirs = diffusers_twin(ours).train()
    x = torch.randn(args.batch, 3, 32, 32)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (args.batch,))
    target = torch.randn(args.batch, 3, 32, 32)

    def step(net, inp, out=lambda o: o):
        net.zero_grad(set_to_none=True)
        (out(net(inp, t)) - target).pow(2).mean().backward()

    ours_step = lambda: step(ours, x_cl)  # noqa: E731
    theirs_step = lambda: step(theirs, x, lambda o: o.sample)  # noqa: E731
    for _ in range(2):
        ours_step()
        theirs_step()
    with FlopCounterMode(display=False) as counter:
        ours_step()
    flops = counter.get_total_flops()
    peak = conv_peak("fp32", "cpu") * 1e9
    times = {"ours": [], "diffusers": []}
    for r in range(args.repeats):
        for name in (["ours", "diffusers"] if r % 2 == 0 else ["diffusers", "ours"]):
            s = time.perf_counter()
            (ours_step if name == "ours" else theirs_step)()
            times[name].append(time.perf_counter() - s)
    sec = {k: statistics.median(v) for k, v in times.items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ours_step()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    groups: dict[str, float] = {}
    for e in prof.key_averages():
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    print(f"ddpm_cifar10 train step, batch {args.batch}, 32x32, fp32, {torch.get_num_threads()} threads")
    print(f"  ours (channels_last) {sec['ours']:.3f} s, diffusers {sec['diffusers']:.3f} s: "
          f"{sec['diffusers'] / sec['ours']:.2f}x")
    print(f"  {flops / 1e9:.1f} GFLOP per step = {flops / sec['ours'] / 1e9:.0f} GFLOP/s; a compute-bound "
          f"3x3 conv reaches {peak / 1e9:.0f} GFLOP/s here")
    print("  self time by operator group (profiled step):")
    for g, us in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"    {g:<28} {100 * us / total:5.1f}%")
    bound = flops / peak
    print(f"  lower bound (every FLOP at the conv peak, everything else free): {bound:.3f} s = at most "
          f"{sec['diffusers'] / bound:.2f}x faster than diffusers' step")
    if args.compile:
        compiled = torch.compile(ours)
        s = time.perf_counter()
        step(compiled, x_cl)
        warm = time.perf_counter() - s
        step(compiled, x_cl)
        ct = {"compiled": [], "diffusers": []}
        for r in range(args.repeats):
            for name in (["compiled", "diffusers"] if r % 2 == 0 else ["diffusers", "compiled"]):
                s = time.perf_counter()
                step(compiled, x_cl) if name == "compiled" else theirs_step()
                ct[name].append(time.perf_counter() - s)
        c = {k: statistics.median(v) for k, v in ct.items()}
        print(f"  torch.compile (inductor): first step {warm:.0f} s, then {c['compiled']:.3f} s vs diffusers "
              f"{c['diffusers']:.3f} s: {c['diffusers'] / c['compiled']:.2f}x")


if __name__ == "__main__":
    main()
