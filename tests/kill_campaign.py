"""Kill campaign: SIGKILL a training run again and again at random moments, restart it each time,
and check the final weights equal an uninterrupted run's bit for bit.

Two kinds of kill, drawn at random: an injected one (GEN_FAULT at a random point -- during a
step, after a step, in the middle of writing a checkpoint, after one, during the export -- of a
random step ahead of the newest checkpoint) and an external one (SIGKILL from outside after a random
delay, wherever the process happens to be). `pix2pix-sync_batch` runs 2 processes (torchrun, gloo)
with synchronized batch norm: an injected fault kills every rank at that point, an external kill
SIGKILLs the launcher and its workers (torchrun starts them in sessions of their own, so killing the
launcher alone would leave them training). Used by tests/test_kill_campaign.py; also a script:

    python tests/kill_campaign.py --method ddpm --kills 20
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from trainers import checkpoint  # noqa: E402
from trainers.faults import POINTS  # noqa: E402


def method_setup(method: str, data: Path, run_dir: Path) -> list[str]:
    """Data for `method` written under `data`, and the tiny config overrides of its run."""
    common = {"train.max_steps": 8, "train.ckpt_every": 2, "train.validate_every": 4, "train.log_every": 2,
              "train.keep_checkpoints": 2}
    if method in ("pix2pix", "pix2pix-sync_batch", "pix2pix-augment-ema"):
        from conftest import tiny_overrides, write_aligned
        write_aligned(data / "train", 8, seed=0)
        write_aligned(data / "val", 2, seed=1)
        if method == "pix2pix-sync_batch":
            common.update({"model.norm": "sync_batch", "model.d_norm": "sync_batch"})
        if method == "pix2pix-augment-ema":  # DiffAugment's draws (checkpointed RNG) and the generator EMA
            common.update({"train.diffaugment": "color,translation,cutout", "train.ema_decay": 0.9})
        return tiny_overrides(run_dir, data, **common)
    if method == "cyclegan":
        from test_cyclegan import cyclegan_overrides, write_unpaired
        write_unpaired(data)
        return cyclegan_overrides(run_dir, data, **common)
    if method in ("cut", "fastcut"):  # fastcut: the flip draws; cut: the identity term beside the main one
        from test_cut import cut_overrides
        from test_cyclegan import write_unpaired
        write_unpaired(data)
        return cut_overrides(run_dir, data, **common, **{"cut.mode": method})
    if method == "ddpm-snr":  # v-prediction with zero terminal SNR and the min-SNR-gamma weighting
        common.update({"ddpm.snr_gamma": 5.0, "ddpm.prediction_type": "v_prediction",
                       "ddpm.zero_terminal_snr": True})
        method = "ddpm"
    if method == "ddpm-edm":  # EDM's log-normal sigma and noise draws (checkpointed RNG), in bf16
        common.update({"ddpm.formulation": "edm", "ddpm.sample_scheduler": "heun",
                       "train.mixed_precision": "bf16"})
        method = "ddpm"
    if method == "ddpm":
        from test_ddpm import ddpm_overrides, write_toy
        write_toy(data / "train", n=16)
        return ddpm_overrides(run_dir, data, **common)
    if method in ("colorization", "colorization-gan"):
        from test_colorization import colorization_overrides, write_banded
        write_banded(data / "train", 8)
        write_banded(data / "val", 2, seed=1)
        if method == "colorization-gan":  # the shared GAN step with colorization's own mode and weight
            common.update({"colorization.loss": "gan", "colorization.gan_mode": "lsgan",
                           "colorization.lambda_gan": 0.5, "colorization.prior": "imagenet"})
        return colorization_overrides(run_dir, data, **common)
    raise ValueError(f"no kill campaign for method {method!r}")


METHODS = ("pix2pix", "pix2pix-augment-ema", "cyclegan", "cut", "fastcut", "ddpm", "ddpm-snr", "ddpm-edm",
           "colorization",
           "colorization-gan", "pix2pix-sync_batch")
PROCESSES = {"pix2pix-sync_batch": 2}  # campaigns run under torchrun with this many processes


def launch(args: list[str], fault: str | None = None, processes: int = 1) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), WANDB_SILENT="true")
    env.pop("GEN_FAULT", None)
    if fault:
        env["GEN_FAULT"] = fault
    launcher = [sys.executable]
    if processes > 1:
        env["OMP_NUM_THREADS"] = "1"
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.Popen([*launcher, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL the launched process and every process it started; its exit code (-9)."""
    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return proc.wait()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs[1:], timeout=30)
    return proc.wait()


def finish(proc: subprocess.Popen, timeout: float | None = None) -> tuple[int, str]:
    """Wait for a launch (reading its stderr meanwhile: a full pipe would stall it); (exit code, stderr).
    Past `timeout` seconds, SIGKILL it and its workers."""
    try:
        err = proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        err = proc.communicate()[1]
    return proc.returncode, err


def was_killed(code: int, stderr: str, processes: int) -> bool:
    """SIGKILLed: exit -9 itself, or (torchrun) a launcher that reports a worker killed by SIGKILL."""
    return code == -9 or (processes > 1 and code != 0 and "Signal 9 (SIGKILL)" in stderr)


def final_weights(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The newest checkpoint's networks, and the export's (EMA weights where a method averages)."""
    newest = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    weights = {p.stem: load_file(str(p)) for p in sorted((newest / "models").glob("*.safetensors"))}
    export = run_dir / "export"
    for p in sorted(export.rglob("*.safetensors")):
        weights[f"export/{p.relative_to(export).as_posix()}"] = load_file(str(p))
    return weights


def newest_step(run_dir: Path) -> int:
    dirs = checkpoint.checkpoint_dirs(run_dir / "checkpoints")
    return int(dirs[0].name.split("_")[1]) if dirs else 0


def run_campaign(method: str, kills: int, workdir: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    processes = PROCESSES.get(method, 1)
    ref_args = method_setup(method, workdir / "data", workdir / "ref")
    t0 = time.monotonic()
    code, err = finish(launch(ref_args, processes=processes))
    if code != 0:
        raise RuntimeError(f"reference run failed:\n{err[-3000:]}")
    ref_seconds = time.monotonic() - t0
    args = [a.replace(str(workdir / "ref"), str(workdir / "run")) for a in ref_args]
    max_steps = 8
    log, survived = [], 0
    while survived < kills:
        start = newest_step(workdir / "run")
        if rng.random() < 0.5:
            point = rng.choice(POINTS)
            step = max_steps if point == "during_export" else min(max_steps, start + rng.randint(1, 3))
            if point in ("during_checkpoint", "after_checkpoint") and step % 2 and step != max_steps:
                step += 1  # checkpoints are written at even steps and at the last one
            how = f"{point}:{step}"
            code, stderr = finish(launch(args, how, processes))
        else:
            delay = rng.uniform(0.3, 1.2) * ref_seconds
            how = f"external after {delay:.1f}s"
            code, stderr = finish(launch(args, processes=processes), timeout=delay)
        killed = was_killed(code, stderr, processes)
        if code != 0 and not killed:
            raise RuntimeError(f"run failed after kill {how} (exit {code}):\n{stderr[-3000:]}")
        if killed:
            survived += 1
            log.append({"kill": survived, "how": how, "resumed_from": start})
        if code == 0:
            # The run got to the end before this kill; wipe it and go on killing a new one (same data).
            log.append({"completed_without_kill": how})
            final = final_weights(workdir / "run")
            _compare(final, final_weights(workdir / "ref"), method)
            import shutil
            shutil.rmtree(workdir / "run")
    code, err = finish(launch(args, processes=processes))
    if code != 0:
        raise RuntimeError(f"final resume failed:\n{err[-3000:]}")
    _compare(final_weights(workdir / "run"), final_weights(workdir / "ref"), method)
    # The checkpoint written before the end by a run killed again and again exports (sample.py
    # evaluate --checkpoint) what the uninterrupted run's does.
    from gen.pipelines.base import export_differences
    from trainers.snapshot import export_checkpoint
    step = max_steps - 2
    snapshots = [export_checkpoint(workdir / r, step, workdir / f"snapshot_{r}" / "export")
                 for r in ("run", "ref")]
    differences = export_differences(*snapshots)
    if differences:
        raise AssertionError(f"{method} (export of checkpoint {step}): {differences}")
    export = workdir / "run" / "export"
    return {
        "method": method,
        "kills": survived,
        "identical": True,
        "export_whole": (export / "pipeline.json").is_file(),
        "checkpoint_export_identical": True,
        "log": log,
    }


def _compare(got: dict, ref: dict, method: str) -> None:
    assert got.keys() == ref.keys(), (method, got.keys(), ref.keys())
    for net in ref:
        for k in ref[net]:
            if not torch.equal(ref[net][k], got[net][k]):
                raise AssertionError(f"{method}: {net}.{k} differs from the uninterrupted run")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="pix2pix", choices=METHODS)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_campaign(args.method, args.kills, Path(tmp), args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
