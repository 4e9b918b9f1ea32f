"""bench/gpu_check.py, the prepared GPU check: it skips cleanly without CUDA, and its whole path
(train, export, sample.py, resume, benchmark, JSON) runs on the CPU in a tiny dry run."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def run_check(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_skips_cleanly_without_cuda(tmp_path):
    proc = run_check("--out", tmp_path, env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["skipped"].startswith("no CUDA GPU: ")  # and why (hidden devices, a CPU-only build, ...)


def test_dry_run_on_the_cpu(tmp_path):
    proc = run_check(
        "--allow-cpu",
        "--tiny",
        "--cases",
        "pix2pix",
        "ddpm-conditional",
        "--precisions",
        "fp32",
        "fp16",
        "--out",
        tmp_path,
        env_extra={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    done = [r for r in report["checks"] if "skipped" not in r and r["case"] != "budget-fit"]
    assert [(r["case"], r["ok"]) for r in done] == [("pix2pix", True), ("ddpm-conditional", True)]
    fit = [r for r in report["checks"] if r["case"] == "budget-fit"]
    assert len(fit) == 1 and fit[0]["ok"], fit  # the time budget fitted the LR schedule and it decayed
    assert fit[0]["steps"] <= fit[0]["planned_steps"] < 1000000
    assert all(r["validation_equals_evaluate"] and r["sample_cli_bf16"]["rc"] == 0 for r in done)
    assert all(r["resume_max_abs_diff"] == 0.0 and r["sample_cli"]["pngs"] > 0 and r["resumed_from_step"] == 2
               for r in done)
    assert all(r["checkpoint_export_equal"] for r in done)
    assert {r["skipped"] for r in report["checks"] if "skipped" in r} == {"fp16 needs a GPU (refused)"}
    assert [r["bench"] for r in report["benchmark"]] == [
        "ddpm_cifar10 train step",
        "ddpm_cifar10 sample step",
    ]
    assert all(r["tflop_per_step"] > 0 and r["sec_per_step"] > 0 for r in report["benchmark"])


def test_every_case_config_loads(tmp_path):
    """A case whose config no longer loads would only show on the GPU, where time is scarce."""
    import importlib.util

    from gen import config
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    all_cases = gpu_check.cases(tmp_path, 64, 32)
    expected = {"pix2pix", "pix2pix-sync_batch", "pix2pix-augment-ema", "cyclegan", "cut", "fastcut",
                "colorization", "colorization-gan", "ddpm",
                "ddpm-snr", "ddpm-conditional", "ddpm-edm", "segmentation"}
    assert set(all_cases) == expected
    for name, overrides in all_cases.items():
        for precision in ("fp32", "bf16", "fp16"):
            config.load(None, overrides + [f"run.dir={tmp_path / name}", f"train.mixed_precision={precision}",
                                           "train.max_steps=20", "train.ckpt_every=10"])


def test_bench_run_configs_load():
    """bench/run.py's rows: every method x option config loads (a key refused at start, not mid-bench)."""
    import importlib.util

    from gen import config
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    for method, (cfg_file, size, batch) in run.METHODS.items():
        for extra in run.OPTIONS.values():
            colour = ["colorization.prior=imagenet"] if method == "colorization" else []
            config.load(ROOT / cfg_file, ["run.dir=/tmp/unused", "log.wandb=disabled",
                                          f"train.batch_size={batch}", *colour, *size, *extra])
