"""Our DDPM U-Net against diffusers' UNet2DModel of the same configuration, measured in the same run,
and the wall time of DDPM-1000 vs DDIM-50 sampling through the exported pipeline.

Per network, in fp32: forward+backward of a training step (MSE to a random target) and the forward
of a sampling step (no grad), at batch 16, 32x32 by default, for ours as gen runs it on the CPU
(channels_last: what the DDPM trainer and the sampling pipeline use there), ours in plain NCHW (the
same network without channels_last, to show what channels_last adds) and UNet2DModel as diffusers
ships it; medians over interleaved repeats
in alternating order (A B C, C B A, ...) so a noisy neighbour and warm caches favour none; achieved
GFLOP/s from torch.utils.flop_counter. Results also go to bench/results/ddpm.json.

    python bench/ddpm.py [--preset ddpm_cifar10] [--batch 16] [--size 32] [--repeats 5]
                         [--sample-preset ddpm_small] [--sample-batch 16] [--skip-sampling]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def diffusers_twin(ours):
    """UNet2DModel with the same widths, blocks per level, attention levels, groups and dropout."""
    from diffusers import UNet2DModel

    c = ours.config
    attention = set(c.attention_levels)
    n = len(c.channels)
    return UNet2DModel(
        sample_size=32,
        in_channels=c.in_channels,
        out_channels=c.out_channels,
        block_out_channels=tuple(c.channels),
        layers_per_block=c.layers_per_level,
        norm_num_groups=c.norm_groups,
        dropout=c.dropout,
        attention_head_dim=c.attention_head_dim,
        flip_sin_to_cos=False,
        freq_shift=1,
        down_block_types=tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(n)),
        up_block_types=tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(n))),
    )


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def compare_networks(preset: str, batch: int, size: int, repeats: int) -> dict:
    """ours (gen's default on this device: channels_last on the CPU), ours in plain NCHW, and diffusers'
    UNet2DModel (as shipped: NCHW), same weights' shapes, fp32, interleaved in alternating order."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gen.models import create_model

    torch.manual_seed(0)
    nchw = create_model(preset).train()
    theirs = diffusers_twin(nchw).train()
    ours = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x = torch.randn(batch, nchw.config.in_channels, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,))
    target = torch.randn(batch, nchw.config.out_channels, size, size)
    calls = {
        "ours": lambda: ours(x_cl, t),
        "ours_nchw": lambda: nchw(x, t),
        "diffusers": lambda: theirs(x, t).sample,
    }
    nets = {"ours": ours, "ours_nchw": nchw, "diffusers": theirs}

    def train_step(name):
        nets[name].zero_grad(set_to_none=True)
        (calls[name]() - target).pow(2).mean().backward()

    def sample_step(name):
        with torch.no_grad():
            calls[name]()

    result = {"preset": preset, "batch": batch, "size": size, "threads": torch.get_num_threads(),
              "params": {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()}}
    for kind, fn in (("train_fwd_bwd", train_step), ("sample_fwd", sample_step)):
        for name in nets:
            fn(name)  # warm-up
            with FlopCounterMode(display=False) as counter:
                fn(name)
            result[f"{kind}_gflop_{name}"] = counter.get_total_flops() / 1e9
        times = {name: [] for name in nets}
        for r in range(repeats):  # interleaved, the order alternating (ABBA) so neither always goes first
            for name in (list(nets) if r % 2 == 0 else list(reversed(nets))):
                times[name] += timed(lambda: fn(name), 1)
        for name in nets:
            sec = statistics.median(times[name])
            result[f"{kind}_sec_{name}"] = sec
            result[f"{kind}_gflops_{name}"] = result[f"{kind}_gflop_{name}"] / sec
        for name in ("ours", "ours_nchw"):
            result[f"{kind}_speedup_{name}_vs_diffusers"] = (
                result[f"{kind}_sec_diffusers"] / result[f"{kind}_sec_{name}"]
            )
    return result


def sampling_wall_time(preset: str, batch: int, size: int) -> dict:
    import torch
    from diffusers import DDPMScheduler

    from gen.models import create_model
    from gen.pipelines.diffusion import DiffusionSamplingPipeline

    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model(preset).eval(), DDPMScheduler())
    pipe.sample_size = size
    out = {"sample_preset": preset, "sample_batch": batch}
    for name, steps in (("ddim", 50), ("ddpm", 1000)):
        t = time.perf_counter()
        pipe(batch, steps, name, torch.Generator().manual_seed(0), progress=False)
        out[f"{name}{steps}_sec"] = time.perf_counter() - t
    out["ddpm1000_over_ddim50"] = out["ddpm1000_sec"] / out["ddim50_sec"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="ddpm_cifar10")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sample-preset", default="ddpm_small")
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--skip-sampling", action="store_true")
    args = p.parse_args()
    r = compare_networks(args.preset, args.batch, args.size, args.repeats)
    print(f"{args.preset} ({r['params']['ours']:,} params ours, {r['params']['diffusers']:,} diffusers), "
          f"batch {args.batch}, {args.size}x{args.size}, {r['threads']} threads")
    for kind, label in (("train_fwd_bwd", "train step fwd+bwd"), ("sample_fwd", "sampling step fwd")):
        print(f"  {label}: diffusers {r[f'{kind}_sec_diffusers']:.3f} s "
              f"({r[f'{kind}_gflops_diffusers']:.1f} GFLOP/s); ours NCHW {r[f'{kind}_sec_ours_nchw']:.3f} s "
              f"({r[f'{kind}_speedup_ours_nchw_vs_diffusers']:.2f}x); ours as shipped (channels_last) "
              f"{r[f'{kind}_sec_ours']:.3f} s ({r[f'{kind}_speedup_ours_vs_diffusers']:.2f}x = diffusers' "
              "time / ours)")
    if not args.skip_sampling:
        r.update(sampling_wall_time(args.sample_preset, args.sample_batch, args.size))
        print(
            f"  sampling {args.sample_batch} images with {args.sample_preset}: "
            f"DDIM-50 {r['ddim50_sec']:.1f} s, "
            f"DDPM-1000 {r['ddpm1000_sec']:.1f} s ({r['ddpm1000_over_ddim50']:.1f}x)"
        )
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ddpm.json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
