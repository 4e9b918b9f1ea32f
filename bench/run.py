"""One benchmark table: a training step of pix2pix, CycleGAN, colorization and DDPM at the sizes
users train at, under each speed option, plus data loading, all measured in this run.

Per row: seconds per step (median; for DDPM also a sampling step, `ddpm-sample`), images per second,
achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter over one real step of the method's
trainer) and its fraction of the peak measured in the same run (a compute-bound 3x3 convolution in
the same precision), and the peak memory (RSS of a fresh process per row on CPU, max allocated on
GPU). Data rows: images per second the DataLoader delivers (decode + augment) against images per
second the fp32 step consumes.
Then Ho et al.'s CIFAR-10 U-Net against diffusers' UNet2DModel of the same configuration (from
`bench/ddpm.py`, which also times DDPM-1000 vs DDIM-50), and the Adam kernels alone, interleaved.
Rows run one after another, so a drifting machine moves them: `--rounds R` measures every option R
times in alternating order and reports medians. JSON in bench/results/run.json.

    python bench/run.py [--methods pix2pix cyclegan colorization ddpm] [--options default fp32 auto bf16
                        channels_last for_loop foreach fused compile channels_last+fused batch_x4] [--steps 3]
                        [--rounds 1] [--device cpu|cuda]

The "vs fp32" column divides plain fp32's step time by each row's: the "default" row (the shipped
config, whatever precision it resolves to) against fp32 is what a user gets without asking.
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

# method -> (config, overrides giving the size users train at, batch)
METHODS = {
    "pix2pix": ("configs/pix2pix/facades.yaml", ["model.generator=unet_256", "data.crop_size=256"], 1),
    "cyclegan": ("configs/cyclegan/horse2zebra.yaml", [], 1),
    "colorization": ("configs/colorization/cifar10.yaml", [], 32),
    "ddpm": ("configs/ddpm/cifar10.yaml", [], 32),
}
OPTIONS = {
    "default": [],  # the config as shipped: what a user gets without asking
    "fp32": ["train.mixed_precision=fp32"],  # plain fp32 (contiguous, fused Adam): every row's reference
    "auto": ["train.mixed_precision=auto"],  # bf16 where the hardware runs it natively, else fp32
    "for_loop": ["train.optimizer_impl=for_loop"],  # torch's CPU default Adam, gen's default before
    "bf16": ["train.mixed_precision=bf16"],
    "channels_last": ["train.channels_last=true"],
    "nchw": ["train.mixed_precision=fp32", "train.channels_last=false"],  # fp32 without the auto layout
    "bf16_nchw": ["train.mixed_precision=bf16", "train.channels_last=false"],
    "foreach": ["train.optimizer_impl=foreach"],
    "fused": ["train.optimizer_impl=fused"],
    "compile": ["train.compile=true"],
    "channels_last+fused": ["train.channels_last=true", "train.optimizer_impl=fused"],
    "batch_x4": [],  # 4x the method's batch: fewer, larger steps (img/s is the figure to compare)
}


def conv_peak(precision: str, device: str, repeats: int = 5) -> float:
    """GFLOP/s of a compute-bound 3x3 conv (256 -> 256 channels, 64x64, batch 4)."""
    import torch
    x = torch.randn(4, 256, 64, 64, device=device)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device)
    flops = 2 * 4 * 256 * 256 * 9 * 64 * 64
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=precision == "bf16"):
        for _ in range(2):
            conv(x)
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            conv(x)
            sync(device)
            best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def synthetic_batch(method: str, cfg, batch: int, device: str):
    import torch
    size = cfg.data.crop_size
    g = torch.Generator().manual_seed(0)
    img = lambda c: (torch.rand(batch, c, size, size, generator=g) * 2 - 1).to(device)  # noqa: E731
    if method == "cyclegan":
        return {"A": img(3), "B": img(3)}
    if method == "colorization" or (method == "ddpm" and cfg.data.kind == "images"):
        return {"image": img(3)}
    return {"input": img(3), "target": img(3)}


def one(method: str, option: str, steps: int, device: str) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gen import config
    from trainers import TRAINERS

    cfg_file, size_overrides, batch = METHODS[method]
    batch *= 4 if option == "batch_x4" else 1
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(
            ROOT / cfg_file,
            [
                f"run.dir={tmp}",
                "log.wandb=disabled",
                f"train.batch_size={batch}",
                f"train.device={device}",  # the whole trainer, not only the batch
                *(["colorization.prior=imagenet"] if method == "colorization" else []),
                *size_overrides,
                *OPTIONS[option],
            ],
        )
        trainer = TRAINERS[method](cfg)
        trainer.build()
        trainer.prepare()
        trainer.on_device()  # EMA and other method state follow the networks
        data = trainer.to_device(synthetic_batch(method, cfg, batch, device))
        torch.manual_seed(0)

        def step():
            losses = trainer.train_step(data)
            float(next(iter(losses.values())))  # the step is complete when a loss is on the host

        for _ in range(2):
            step()
        flops = 0.0
        if option != "compile":  # the counter cannot see inside compiled graphs: main() uses the eager count
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
        times = timed(step, steps, device)
        sampling = ddpm_sampling_step(trainer, data, steps, device) if method == "ddpm" else None
    # the peak in the row's own precision ("auto" is resolved in trainer.cfg)
    precision = "bf16" if trainer.cfg.train.mixed_precision == "bf16" else "fp32"
    peak = conv_peak(precision, device)
    mem = (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    common = {"option": option, "precision": trainer.cfg.train.mixed_precision, "size": cfg.data.crop_size,
              "batch": batch, "device": device, "peak_gflops": peak, "peak_memory_mb": mem,
              "threads": torch.get_num_threads()}
    rows = [row(method, statistics.median(times), flops, batch, common)]
    if sampling is not None:
        rows.append(row("ddpm-sample", *sampling, batch, common))
    return rows


def row(name: str, sec: float, flops: float, batch: int, common: dict) -> dict:
    return {"method": name, **common, "sec_per_step": sec, "images_per_sec": batch / sec,
            "gflop_per_step": flops / 1e9, "gflops": flops / sec / 1e9,
            "fraction_of_peak": flops / sec / 1e9 / common["peak_gflops"]}


def timed(fn, steps: int, device: str) -> list[float]:
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def ddpm_sampling_step(trainer, data: dict, steps: int, device: str) -> tuple[float, float]:
    """(median seconds, FLOPs) of one reverse step: the prepared network's forward without grad,
    in the row's precision and memory format, on a noisy batch at a mid timestep."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = trainer.models["unet"]
    x = data["target"] if trainer.conditional else data["image"]
    model_in = torch.cat([x, data["input"]], dim=1) if trainer.conditional else x
    t = torch.full((x.shape[0],), 500, device=x.device)
    net.eval()

    def step():
        with torch.no_grad():
            float(net(model_in, t).float().mean())

    step()
    flops = 0.0
    if not trainer.cfg.train.compile:
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    times = timed(step, steps, device)
    net.train()
    return statistics.median(times), flops


def adam_kernels(rounds: int = 6) -> dict:
    """Seconds per Adam step over the pix2pix 256 generator + PatchGAN parameters (57.2M) for each
    kernel, interleaved (order alternating each round) so machine noise favours none; medians
    after the first round."""
    import torch

    from gen.models import create_model
    params = [p for net in (create_model("unet_256"), create_model("patchgan")) for p in net.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    kinds = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {k: torch.optim.Adam(params, lr=2e-4, **kw) for k, kw in kinds.items()}
    times: dict[str, list[float]] = {k: [] for k in opts}
    for r in range(rounds):
        for k in (list(opts) if r % 2 == 0 else list(reversed(opts))):
            t = time.perf_counter()
            opts[k].step()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v[1:]) for k, v in times.items()}


def data_rate(method: str, workers: int, batches: int = 10) -> dict:
    """Images per second the method's training DataLoader delivers from the real files."""
    from gen import config
    from trainers import TRAINERS

    cfg_file, size_overrides, batch = METHODS[method]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(
            ROOT / cfg_file,
            [
                f"run.dir={tmp}",
                "log.wandb=disabled",
                f"train.batch_size={batch}",
                f"data.num_workers={workers}",
                *size_overrides,
            ],
        )
        trainer = TRAINERS[method](cfg)
        trainer.build_data()
        loader = iter(trainer.train_loader(trainer.train_set, 0))
        next(loader)  # workers started
        t = time.perf_counter()
        for _ in range(batches):
            next(loader)
        sec = time.perf_counter() - t
    return {"method": method, "workers": workers, "images_per_sec": batches * batch / sec}


def measure(method: str, option: str, args) -> list[dict] | None:
    """One row (two for DDPM) in a fresh process, so its peak memory belongs to that row alone."""
    out = subprocess.run([sys.executable, __file__, "--one", method, option, "--steps", str(args.steps),
                          "--device", args.device], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{method:>12} {option:>13} failed: {out.stderr.strip().splitlines()[-1][:100]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """Rows of the same option over rounds -> median seconds and peak, largest memory."""
    merged = []
    for same in zip(*rounds):
        first = same[0]
        common = {k: v for k, v in first.items()
                  if k in ("option", "precision", "size", "batch", "device", "threads")}
        common.update(peak_gflops=statistics.median(r["peak_gflops"] for r in same),
                      peak_memory_mb=max(r["peak_memory_mb"] for r in same), rounds=len(same))
        merged.append(row(first["method"], statistics.median(r["sec_per_step"] for r in same),
                          first["gflop_per_step"] * 1e9, first["batch"], common))
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    # bf16 and compile are opt-in: bf16 autocast is emulated (minutes per row) on CPUs without
    # AVX-512 BF16, and compiling takes minutes on 2 cores.
    p.add_argument(
        "--options",
        nargs="+",
        choices=list(OPTIONS),
        default=["default", "fp32", "for_loop", "channels_last", "foreach", "channels_last+fused",
                 "batch_x4"],
    )
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every option this many times, alternating the order; medians per row")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--diffusers-repeats", type=int, default=3,
                   help="ddpm_cifar10 vs diffusers' UNet2DModel, train and sampling step (0 skips it)")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.steps, args.device)))
        return
    rows, data_rows = [], []
    print(
        f"{'method':>12} {'option':>13} {'prec':>5} {'s/step':>8} {'img/s':>8} {'GFLOP/s':>8} "
        f"{'of peak':>8} {'mem MB':>8}  vs fp32"
    )
    for method in args.methods:
        samples: dict[str, list[list[dict]]] = {o: [] for o in args.options}
        for r in range(args.rounds):  # the order alternates each round so drift favours no option
            for option in (args.options if r % 2 == 0 else list(reversed(args.options))):
                got = measure(method, option, args)
                if got is not None:
                    samples[option].append(got)
        merged = [r for option in args.options if samples[option] for r in merge_rounds(samples[option])]
        rows += merged
        for r in merged:  # printed once every option is in, so the default row finds its fp32 row
            option = r["option"]
            fp32 = next((b for b in merged if b["method"] == r["method"] and b["option"] == "fp32"), None)
            if r["gflop_per_step"] == 0 and fp32:  # compiled: the same work as the eager step
                r.update(row(r["method"], r["sec_per_step"], fp32["gflop_per_step"] * 1e9, r["batch"], r))
            speedup = f"{fp32['sec_per_step'] / r['sec_per_step']:.2f}x" if fp32 else ""
            print(
                f"{r['method']:>12} {option:>13} {r.get('precision', ''):>5} {r['sec_per_step']:>8.3f} "
                f"{r['images_per_sec']:>8.2f} {r['gflops']:>8.1f} {100 * r['fraction_of_peak']:>7.0f}% "
                f"{r['peak_memory_mb']:>8.0f}  {speedup}",
                flush=True,
            )
        for w in args.workers:
            d = data_rate(method, w)
            consumed = next(
                (r["images_per_sec"] for r in rows if r["method"] == method and r["option"] == "fp32"), None
            )
            d["step_images_per_sec"] = consumed
            data_rows.append(d)
            ratio = (
                f" = {d['images_per_sec'] / consumed:.1f}x what the fp32 step consumes" if consumed else ""
            )
            print(f"{method:>12} data, {w} workers: {d['images_per_sec']:.0f} img/s{ratio}", flush=True)
    versus = None
    if "ddpm" in args.methods and args.diffusers_repeats > 0:
        from ddpm import compare_networks  # bench/ddpm.py: same-config UNet2DModel, interleaved repeats
        versus = compare_networks("ddpm_cifar10", 16, 32, args.diffusers_repeats)
        for kind in ("train_fwd_bwd", "sample_fwd"):
            print(
                f"ddpm_cifar10 {kind} (batch 16, 32x32, fp32): ours {versus[f'{kind}_sec_ours']:.3f} s, "
                f"UNet2DModel {versus[f'{kind}_sec_diffusers']:.3f} s: diffusers' time / ours "
                f"{versus[f'{kind}_speedup_ours_vs_diffusers']:.2f}x (ours in NCHW "
                f"{versus[f'{kind}_speedup_ours_nchw_vs_diffusers']:.2f}x)",
                flush=True,
            )
    adam = adam_kernels()
    print("Adam step, pix2pix 256 G + D (57.2M params): " + ", ".join(
        f"{k} {v:.3f} s ({adam['for_loop'] / v:.1f}x)" for k, v in adam.items()), flush=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").write_text(
        json.dumps(
            {"steps": rows, "data": data_rows, "ddpm_vs_diffusers": versus, "adam_step_sec": adam}, indent=1
        )
    )


if __name__ == "__main__":
    main()
