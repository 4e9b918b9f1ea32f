"""The prepared GPU check: the CUDA benchmark, then every method on one GPU in fp32, bf16 and fp16.

First DDPM CIFAR-10 (Ho et al.'s 35.7M U-Net, `ddpm_cifar10`) at batch 128: seconds per training and
sampling step, images per second, achieved TFLOP/s (FLOPs counted by torch.utils.flop_counter) and
MFU against the GPU's dense bf16 peak, and peak memory, for fp32 / bf16 / fp16. Then, per method
(pix2pix, pix2pix with model.norm=sync_batch, CycleGAN, colorization, colorization's GAN loss, DDPM
unconditional and conditional, segmentation) and precision:
a run of `--steps` training steps with a checkpoint half-way and at the end
(train.deterministic=true), its export, training's validation against `sample.py evaluate` on the
same items (they must be equal: one inference path), `sample.py` on a folder with the export in
fp32 and with `--precision bf16` (the mean 8-bit difference between the two), then the last
checkpoint removed and the run resumed from the half-way one: the resumed weights must equal the
uninterrupted ones within `--tolerance` (deterministic kernels: 0 is expected) and it must have
started at the half-way step. Before that, the last checkpoint's export (what `sample.py evaluate
--checkpoint` scores, rebuilt on the CPU) must equal the run's export bit for bit. Everything goes
to one JSON file, rewritten after every row.

    python bench/gpu_check.py [--out DIR] [--steps 20] [--budget-minutes 7]
    python bench/gpu_check.py --allow-cpu --tiny      # the same code path on the CPU (a dry run)

Without CUDA (and without --allow-cpu) it prints why and exits 0, writing a JSON that says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen import config  # noqa: E402
from trainers import TRAINERS, checkpoint  # noqa: E402
from gen.pipelines.base import export_differences  # noqa: E402
from trainers.snapshot import export_checkpoint  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0,
                    "RTX 4090": 165.0, "B200": 2250.0}


def write_data(root: Path, size: int) -> None:
    """Small synthetic datasets for every method: paired A|B files, A/B folders, unpaired
    trainA/trainB, photos + label maps, photos; smooth random colour fields."""
    rng = np.random.default_rng(0)

    def field():
        coarse = rng.uniform(0, 255, (4, 4, 3))
        return np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR))

    for split, n in (("train", 16), ("val", 4)):
        (root / "aligned" / split).mkdir(parents=True)
        for sub in ("A", "B"):
            (root / "folders" / split / sub).mkdir(parents=True)
        (root / "seg" / split).mkdir(parents=True)
        (root / "photos" / split).mkdir(parents=True)
        for dom in "AB":
            (root / "unpaired" / f"{split}{dom}").mkdir(parents=True)
        for i in range(n):
            a = field()
            Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(root / "aligned" / split / f"{i}.png")
            Image.fromarray(a).save(root / "folders" / split / "A" / f"{i}.png")
            Image.fromarray(255 - a).save(root / "folders" / split / "B" / f"{i}.png")
            Image.fromarray(a).save(root / "unpaired" / f"{split}A" / f"{i}.png")
            Image.fromarray(a[..., ::-1].copy()).save(root / "unpaired" / f"{split}B" / f"{i}.png")
            Image.fromarray(a).save(root / "photos" / split / f"{i}.png")
            classes = np.kron(rng.integers(0, 3, (4, 4)), np.ones((size // 4, size // 4), int))
            Image.fromarray((np.eye(3)[classes] * 200 + 30).astype(np.uint8)).save(
                root / "seg" / split / f"{i}.jpg", quality=95
            )
            Image.fromarray((classes + 1).astype(np.uint8), "L").save(root / "seg" / split / f"{i}.png")


def cases(data: Path, size: int, width: int) -> dict[str, list[str]]:
    common = [f"data.load_size={size}", f"data.crop_size={size}", "data.preprocess=crop", "data.val=val",
              "data.test=null", "model.generator=unet", "model.num_downs=5", f"model.ngf={width}",
              "train.batch_size=4", "log.wandb=disabled", "train.eval_batches=2"]
    gan = [f"model.ndf={width}"]  # only methods with a discriminator read it (others refuse the key)
    ddpm = [f"data.load_size={size}", f"data.crop_size={size}", "data.preprocess=crop", "data.val=val",
            "data.test=null", "model.generator=ddpm_tiny", "train.batch_size=8", "log.wandb=disabled",
            "ddpm.sample_steps=5", "ddpm.num_samples=4", "train.eval_batches=2"]
    return {
        "pix2pix": common + gan + ["method=pix2pix", f"data.root={data / 'aligned'}"],
        # One GPU: the trainer swaps in torch's SyncBatchNorm (batch statistics of the one process).
        "pix2pix-sync_batch": common + gan + ["method=pix2pix", f"data.root={data / 'aligned'}",
                                              "model.norm=sync_batch", "model.d_norm=sync_batch"],
        # DiffAugment of every discriminator input and the generator EMA (train.diffaugment, ema_decay)
        "pix2pix-augment-ema": common + gan + ["method=pix2pix", f"data.root={data / 'aligned'}",
                                               "train.diffaugment=color,translation,cutout",
                                               "train.ema_decay=0.999"],
        "cyclegan": common + gan + ["method=cyclegan", "data.kind=unpaired", f"data.root={data / 'unpaired'}",
                                    "model.norm=instance", "model.d_norm=instance"],
        # CUT (identity PatchNCE term) and FastCUT (flip equivariance) on the anti-aliased ResNet
        "cut": common + gan + ["method=cut", "data.kind=unpaired", f"data.root={data / 'unpaired'}",
                               "model.norm=instance", "model.d_norm=instance", "train.ema_decay=0.999"],
        "fastcut": common + gan + ["method=cut", "cut.mode=fastcut", "data.kind=unpaired",
                                   f"data.root={data / 'unpaired'}", "model.norm=instance",
                                   "model.d_norm=instance",
                                   "model.generator=resnet_6blocks_antialias", "model.num_downs=null",
                                   "train.diffaugment=color,translation,cutout"],
        "colorization": common + gan + ["method=colorization", "data.kind=images",
                                        f"data.root={data / 'photos'}", "colorization.prior=imagenet"],
        # the shared GAN step (trainers/gan_step.py) with colorization's own GAN mode and weight
        "colorization-gan": common + gan + ["method=colorization", "data.kind=images",
                                            f"data.root={data / 'photos'}", "colorization.prior=imagenet",
                                            "colorization.loss=gan", "colorization.gan_mode=lsgan",
                                            "colorization.lambda_gan=0.5"],
        "ddpm": ddpm + ["method=ddpm", "data.kind=images", f"data.root={data / 'photos'}"],
        # v-prediction with zero terminal SNR and the min-SNR-gamma loss weighting
        "ddpm-snr": ddpm + ["method=ddpm", "data.kind=images", f"data.root={data / 'photos'}",
                            "ddpm.snr_gamma=5", "ddpm.prediction_type=v_prediction",
                            "ddpm.zero_terminal_snr=true"],
        "ddpm-conditional": ddpm + ["method=ddpm", "data.kind=paired", "data.layout=folders",
                                    f"data.root={data / 'folders'}"],
        # EDM (Karras et al. 2022): log-normal sigmas, the preconditioned U-Net, Heun on Karras sigmas
        "ddpm-edm": ddpm + ["method=ddpm", "data.kind=images", f"data.root={data / 'photos'}",
                            "ddpm.formulation=edm", "ddpm.sample_scheduler=heun"],
        "segmentation": common + ["method=segmentation", "data.kind=segmentation",
                                  f"data.root={data / 'seg'}", "data.num_classes=3", "data.first_label=1",
                                  "data.direction=BtoA"],
    }


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return {
        f"{p.stem}.{k}": v
        for p in (ckpt / "models").glob("*.safetensors")
        for k, v in load_file(str(p)).items()
    }


def sample_cli(run_dir: Path, case: str, inputs: Path, out: Path, device: str,
               precision: str = "fp32") -> dict:
    args = [sys.executable, str(ROOT / "sample.py"), str(run_dir), "--output", str(out), "--device", device,
            "--precision", precision]
    unconditional = case in ("ddpm", "ddpm-snr", "ddpm-edm")
    args += ["--num", "4", "--steps", "5"] if unconditional else ["--input", str(inputs)]
    if case == "ddpm-conditional":
        args += ["--steps", "5"]
    t = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    written = len(list(out.glob("*.png"))) if out.is_dir() else 0
    return {"rc": proc.returncode, "seconds": time.perf_counter() - t, "pngs": written,
            "stderr_tail": proc.stderr[-400:] if proc.returncode else ""}


def one_inference_path(trainer, cfg, steps: int, device: str) -> dict:
    """Training's validation against `sample.py evaluate` on the same items and weights, on the device:
    the metrics must be equal (the same pipeline, in fp32, whatever the training precision)."""
    from gen.data.build import eval_data
    from gen.evaluate import evaluate
    from gen.methods import Sampling
    if cfg.method == "ddpm" and cfg.data.kind == "images":
        return {}  # unconditional: its validation is a sample grid (tests/test_one_inference_path.py)
    logged = {k: v for k, v in trainer.validate(steps).items() if isinstance(v, float)}
    per_batch = 4 if cfg.method == "colorization" else 1
    n = len(trainer.validation_items(per_batch=per_batch))
    sampling = Sampling(1, cfg.ddpm.sample_steps, cfg.ddpm.sampler, cfg.run.seed)
    scored, _ = evaluate(trainer.run_dir, eval_data(cfg, "val"), max_images=n, sampling=sampling,
                         device="cuda" if device == "cuda" else "cpu")
    diffs = {k: abs(v - scored[k]) for k, v in logged.items() if isinstance(scored.get(k), float)}
    return {"validation_equals_evaluate": bool(diffs) and max(diffs.values()) == 0.0,
            "validation_vs_evaluate_max_diff": max(diffs.values(), default=None)}


def mean_png_difference(a: Path, b: Path) -> float | None:
    """Mean absolute 8-bit difference between same-named PNGs of two folders (None: nothing to compare)."""
    diffs = [np.abs(np.asarray(Image.open(p), np.int16) - np.asarray(Image.open(b / p.name), np.int16)).mean()
             for p in sorted(a.glob("*.png")) if (b / p.name).is_file() and p.name != "grid.png"]
    return float(np.mean(diffs)) if diffs else None


def check_one(case: str, overrides: list[str], precision: str, steps: int, work: Path, device: str,
              inputs: Path) -> dict:
    run_dir = work / f"{case}-{precision}"
    cfg = config.load(None, overrides + [f"run.dir={run_dir}", f"train.mixed_precision={precision}",
                                         f"train.device={device}", f"train.max_steps={steps}",
                                         f"train.ckpt_every={steps // 2}", f"train.validate_every={steps}",
                                         f"train.log_every={max(1, steps // 4)}", "train.deterministic=true"])
    row = {"case": case, "precision": precision}
    t = time.perf_counter()
    trainer = TRAINERS[cfg.method](cfg)
    row["device"] = str(trainer.device)
    trainer.fit()
    row["train_seconds"] = time.perf_counter() - t
    row["export"] = (run_dir / "export").is_dir()
    uninterrupted = final_weights(run_dir)
    row.update(one_inference_path(trainer, cfg, steps, device))
    on = "cuda" if device == "cuda" else "cpu"
    fp32_out = work / f"samples-{case}-{precision}"
    row["sample_cli"] = sample_cli(run_dir, case, inputs / "photos" / "val", fp32_out, on)
    # the pipelines' bf16 option (sample.py --precision bf16) beside their fp32 default
    bf16_out = work / f"samples-{case}-{precision}-bf16"
    row["sample_cli_bf16"] = sample_cli(run_dir, case, inputs / "photos" / "val", bf16_out, on, "bf16")
    row["sample_cli_bf16"]["mean_abs_diff_8bit"] = mean_png_difference(fp32_out, bf16_out)
    # the last checkpoint's export (sample.py evaluate --checkpoint, rebuilt on the CPU) is the export
    snapshot = export_checkpoint(run_dir, steps, work / f"snapshot-{case}-{precision}" / "export")
    row["checkpoint_export_equal"] = not export_differences(snapshot, run_dir / "export")
    shutil.rmtree(checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0])  # back to the half-way checkpoint
    t = time.perf_counter()
    again = TRAINERS[cfg.method](cfg)
    again.fit()
    row["resume_seconds"] = time.perf_counter() - t
    row["resumed_from_step"] = again.start_step  # a silent restart from 0 would reach the same weights
    resumed = final_weights(run_dir)
    row["resume_max_abs_diff"] = max(float((uninterrupted[k].float() - resumed[k].float()).abs().max())
                                     for k in uninterrupted)
    return row


def budget_fit(overrides: list[str], work: Path, device: str, minutes: float = 0.1) -> dict:
    """train.time_budget_minutes with budget_schedule=fit on the device: a run whose max_steps the
    budget cannot reach ends within the budget with its LR decayed (trainers/budget.py)."""
    run_dir = work / "budget-fit"
    cfg = config.load(None, overrides + [f"run.dir={run_dir}", f"train.device={device}",
                                         "train.max_steps=1000000", "train.ckpt_every=1000000",
                                         "train.validate_every=1000000", "train.log_every=5",
                                         f"train.time_budget_minutes={minutes}"])
    t = time.perf_counter()
    trainer = TRAINERS[cfg.method](cfg)
    trainer.fit()
    seconds = time.perf_counter() - t
    last_factor = trainer.lr_plan.factor(trainer.step - 1)  # the LR the last step ran with, / train.lr
    return {"case": "budget-fit", "steps": trainer.step, "planned_steps": trainer.lr_plan.horizon,
            "knots": trainer.lr_plan.knots, "last_lr_factor": last_factor, "seconds": seconds,
            "ok": trainer.lr_plan.replanned and last_factor < 0.1}


def bench_row(label: str, fn, steps: int, device: str, batch: int, precision: str, name: str,
              peak: float | None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(3):
        fn()  # warm-up: cuDNN autotuning, allocator
    with FlopCounterMode(display=False) as counter:
        fn()
    flops = counter.get_total_flops()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()  # ends with a host read of the result: the step is complete
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"bench": f"ddpm_cifar10 {label} step", "precision": precision, "batch": batch, "device": name,
            "sec_per_step": sec, "images_per_sec": batch / sec, "tflop_per_step": flops / 1e12,
            "tflops": flops / sec / 1e12, "mfu_vs_bf16_peak": (flops / sec / 1e12 / peak) if peak else None,
            "bf16_peak_tflops": peak,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None}


def ddpm_cifar10_bench(device: str, batch: int, precisions: list[str], steps: int, model: str) -> list[dict]:
    """Training and sampling step of Ho et al.'s CIFAR-10 U-Net at `batch`, 32x32, per precision,
    with the defaults a user gets (cuDNN autotuning on, not deterministic)."""
    rows = []
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    for precision in precisions:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config.load(ROOT / "configs/ddpm/cifar10_paper.yaml", [
                f"run.dir={tmp}", "log.wandb=disabled", f"train.batch_size={batch}", f"train.device={device}",
                f"train.mixed_precision={precision}", "data.root=/nonexistent", f"model.generator={model}",
                "train.deterministic=false"])
            trainer = TRAINERS["ddpm"](cfg)
            trainer.build()
            trainer.prepare()
            trainer.on_device()
            g = torch.Generator().manual_seed(0)
            data = trainer.to_device({"image": torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1})
            net, t = trainer.models["unet"], torch.full((batch,), 500, device=trainer.device)

            def train_step():
                float(trainer.train_step(data)["MSE"].detach())

            def sample_step():
                with torch.no_grad():
                    float(net(data["image"], t).float().mean())

            rows.append(bench_row("train", train_step, steps, device, batch, precision, name, peak))
            net.eval()  # sampling runs the network without dropout
            rows.append(bench_row("sample", sample_step, steps, device, batch, precision, name, peak))
            trainer = net = None  # free before the next precision
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "bench" / "results")))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--budget-minutes", type=float, default=7.0, help="start no new check after this")
    p.add_argument("--tolerance", type=float, default=1e-6, help="resumed vs uninterrupted max |difference|")
    p.add_argument("--allow-cpu", action="store_true", help="run the same path on the CPU (a dry run)")
    p.add_argument("--tiny", action="store_true", help="4 steps, 32 px, width 8, a small benchmark batch")
    p.add_argument("--cases", nargs="*", help="subset of the cases (default: all)")
    p.add_argument("--precisions", nargs="*", default=["fp32", "bf16", "fp16"])
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if not torch.cuda.is_available() and not args.allow_cpu:
        from trainers.devices import why_no_gpu
        report["skipped"] = f"no CUDA GPU: {why_no_gpu()}"
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        print(f"gpu_check skipped: {report['skipped']}")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    steps, size, width = (4, 32, 8) if args.tiny else (args.steps, 64, 32)
    json_path = out / "gpu_check.json"

    def save() -> None:  # after every row: a run stopped by a time limit still leaves its figures
        report["seconds"] = time.monotonic() - start
        json_path.write_text(json.dumps(report, indent=1))

    start, rows, failures = time.monotonic(), [], []
    report["checks"], report["failures"], report["benchmark"] = rows, failures, []
    batch, bench_steps, model = (8, 2, "ddpm_small") if args.tiny else (128, 10, "ddpm_cifar10")
    try:  # first: the figures, before the checks spend the time budget
        precisions = args.precisions if device == "cuda" else [q for q in args.precisions if q != "fp16"]
        for r in ddpm_cifar10_bench(device, batch, precisions, bench_steps, model):
            report["benchmark"].append(r)
            print(json.dumps(r), flush=True)
            save()
    except Exception as err:
        report["benchmark_error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc()[-2000:]}"
        save()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work / "data", size)
        all_cases = cases(work / "data", size, width)
        for case in args.cases or list(all_cases):
            for precision in args.precisions:
                if time.monotonic() - start > 60 * args.budget_minutes:
                    rows.append({"case": case, "precision": precision, "skipped": "time budget spent"})
                    continue
                if precision == "fp16" and device == "cpu":
                    rows.append(
                        {"case": case, "precision": precision, "skipped": "fp16 needs a GPU (refused)"}
                    )
                    continue
                try:
                    row = check_one(
                        case, all_cases[case], precision, steps, work / "runs", device, work / "data"
                    )
                    row["ok"] = (
                        row["export"]
                        and row["sample_cli"]["rc"] == 0
                        and row["sample_cli"]["pngs"] > 0
                        and row["sample_cli_bf16"]["rc"] == 0
                        and row.get("validation_equals_evaluate", True)
                        and row["resume_max_abs_diff"] <= args.tolerance
                        and row["resumed_from_step"] == steps // 2
                        and row["checkpoint_export_equal"]
                    )
                except Exception as err:  # record and go on: one failing case must not hide the others
                    row = {
                        "case": case,
                        "precision": precision,
                        "ok": False,
                        "error": f"{type(err).__name__}: {err}",
                        "traceback": traceback.format_exc()[-2000:],
                    }
                rows.append(row)
                if not row.get("ok", True):
                    failures.append(f"{case}/{precision}")
                print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
                save()
        try:
            row = budget_fit(all_cases["pix2pix"], work / "runs", device)
        except Exception as err:
            row = {"case": "budget-fit", "ok": False, "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()[-2000:]}
        rows.append(row)
        if not row["ok"]:
            failures.append("budget-fit")
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    save()
    print(f"{len(rows) - len(failures)} of {len(rows)} checks ok; failures: {failures or 'none'}; "
          f"{json_path} ({report['seconds']:.0f} s)")
    return 1 if failures or "benchmark_error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
