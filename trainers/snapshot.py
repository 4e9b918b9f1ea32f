"""The export a kept checkpoint would have written: what `sample.py evaluate RUN --checkpoint STEP`
scores, so a run's best step (CUT reports its best epoch) and its final export are scored the same
way, through the one inference path (export -> gen.pipelines).

The run's trainer is rebuilt on the CPU in fp32 from RUN/config.yaml (plus the command's overrides,
e.g. data.root for moved data) in a scratch run.dir (the run itself is only read; its colorization
prior cache is reused), the checkpoint's weights and tracked state (generator EMA, LR plan) are
loaded, and the trainer's own `export` writes the folder, atomically. The process-wide settings a
trainer sets (RNG states, deterministic kernels) are restored afterwards, so the evaluation that
follows runs as a plain `evaluate` would.
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from gen import config as config_lib

from . import checkpoint

CACHES_REUSED = ("color_prior.json",)  # run-directory caches the rebuild would otherwise recompute


def steps(run_dir: Path) -> list[int]:
    """The steps of RUN's complete-looking checkpoints, oldest first."""
    found = checkpoint.checkpoint_dirs(Path(run_dir) / "checkpoints")
    return sorted(int(p.name.split("_")[1]) for p in found)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """RUN/checkpoints/step_<step>; FileNotFoundError listing the kept steps when it is not there."""
    run_dir = Path(run_dir)
    kept = steps(run_dir)
    if step not in kept:
        raise FileNotFoundError(
            f"{run_dir} has no complete checkpoint at step {step}; kept: {kept or 'none'} "
            "(train.keep_checkpoints sets how many a run keeps)")
    return run_dir / "checkpoints" / f"step_{step:08d}"


@contextlib.contextmanager
def process_settings_kept() -> Iterator[None]:
    """Restore what building a Trainer changes process-wide: the RNG states (python, numpy, torch and
    CUDA: set_seed), deterministic-kernel mode and the cuBLAS workspace variable."""
    py, npy = random.getstate(), np.random.get_state()
    det = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=gpus):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.use_deterministic_algorithms(det, warn_only=warn)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def rebuild_overrides(cfg_file: Path, scratch: str, overrides: Sequence[str],
                      say: Callable[[str], None]) -> list[str]:
    """The overrides that rebuild a run for its export: `overrides` (the command's), a scratch run.dir,
    the CPU in fp32, no tracker; model.init_from dropped when its source is gone (the checkpoint holds
    every weight), except for DDPM, whose U-Net layout it sets (a FileNotFoundError then)."""
    cfg = config_lib.load(cfg_file, list(overrides))
    items = [*overrides, f"run.dir={scratch}", "log.wandb=disabled", "train.device=cpu",
             "train.mixed_precision=fp32", "train.compile=false"]
    source = cfg.model.init_from
    if source and not Path(source).exists():
        if cfg.method == "ddpm":
            raise FileNotFoundError(f"model.init_from={source} (in {cfg_file}) is gone, and it sets this "
                                    "DDPM's U-Net layout: restore it, or pass model.init_from=NEW_PLACE")
        say(f"model.init_from={source} is gone: the checkpoint holds every weight, so the rebuild starts "
            "without it")
        items += ["model.init_from=null", "model.freeze=none"]
    return items


def export_checkpoint(run_dir: Path, step: int, output: Path, overrides: Sequence[str] = (),
                      say: Callable[[str], None] = print) -> Path:
    """Write the export of RUN's checkpoint at `step` to `output` (replaced atomically); returns it.
    `overrides`: config overrides on top of RUN/config.yaml (data.root=... for moved data)."""
    from . import TRAINERS  # the trainers import this module's package

    run_dir, output = Path(run_dir), Path(output)
    path = checkpoint_path(run_dir, step)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: a checkpoint is exported with the config of the run "
                                "that wrote it")
    loaded = checkpoint._load_one(path, 0)
    with tempfile.TemporaryDirectory(prefix="gen_snapshot_") as scratch, process_settings_kept():
        for name in CACHES_REUSED:
            for f in (run_dir / name, run_dir / (name + ".key.json")):
                if f.is_file():
                    shutil.copy2(f, Path(scratch) / f.name)
        cfg = config_lib.load(cfg_file, rebuild_overrides(cfg_file, scratch, overrides, say))
        trainer = TRAINERS[cfg.method](cfg)
        trainer.build_data()
        trainer.build()
        for name, sd in loaded.models.items():
            if name not in trainer.models:
                raise ValueError(f"checkpoint {path} has model {name!r} that {cfg_file} does not build "
                                 f"({sorted(trainer.models)})")
            checkpoint.load_weights(trainer.unwrap(name), name, sd, path)
        trainer.load_extra_state(loaded.state.get("extra", {}))
        trainer.step = loaded.step
        trainer.on_device()
        output.parent.mkdir(parents=True, exist_ok=True)
        trainer.write_export(output)
    return output
