"""Atomic checkpoints of everything a run needs to continue; weights in safetensors, the rest in
torch files read back with weights_only=True (tensors and plain values, no arbitrary objects).

Layout of `run_dir/checkpoints/step_00000500/`:
  models/<name>.safetensors   weights and buffers (safetensors)
  state.pt                    optimizers, fp16 loss scales, step, samples drawn and method extras
                              (tensors and plain Python values); the LR schedules are functions of
                              the step and the config, rebuilt on resume (`schedules_at`)
  rng_rank<r>.pt              each process's RNG states (torch, its own GPU's, numpy, python) and its
                              process-local method state (image pools)
  meta.json                   written last: its presence marks the checkpoint complete

A checkpoint is written into a hidden temporary folder and renamed into place, so a crash
mid-save leaves the previous checkpoints untouched and no half-written `step_*` folder. `save` and
`restore` are what the training loop calls; `check_resume_config` refuses a config the checkpoint
cannot continue.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from gen import config as config_lib
from gen.config import ExperimentConfig

from . import faults

FORMAT = 1


@dataclass
class Loaded:
    step: int
    path: Path
    models: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    rng: Optional[dict[str, Any]]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain values (torch.load weights_only safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        # This process's own GPU only: every rank saves its file, and a resume may see fewer GPUs.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # older checkpoints: every visible GPU's state
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete-looking checkpoints (meta.json present), newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]), reverse=True)


def write_models_and_state(
    tmp: Path, models: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]
) -> list[str]:
    """Main process: weights and training state into the temporary folder; returns file names."""
    (tmp / "models").mkdir(parents=True, exist_ok=True)
    files = []
    for name, sd in models.items():
        path = tmp / "models" / f"{name}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(path))
        files.append(f"models/{name}.safetensors")
    torch.save(state, tmp / "state.pt")
    files.append("state.pt")
    return files


def write_rng(tmp: Path, rank: int, rank_state: Optional[dict[str, Any]] = None) -> None:
    """This process's RNG states plus its own method state (e.g. its image pools)."""
    torch.save(dict(rng_state(), rank_state=rank_state or {}), tmp / f"rng_rank{rank}.pt")


def tmp_dir(root: Path, step: int) -> Path:
    return root / f".tmp_step_{step:08d}"


def finalize(root: Path, step: int, files: list[str], world_size: int, keep: int) -> Path:
    """Main process, after every rank has written: fsync, mark complete, rename, prune old."""
    tmp = tmp_dir(root, step)
    files = files + [f"rng_rank{r}.pt" for r in range(world_size)]
    for f in files:
        _fsync_file(tmp / f)
    meta = {"format": FORMAT, "step": step, "files": files, "world_size": world_size}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _fsync_file(tmp / "meta.json")
    final = root / f"step_{step:08d}"
    if final.exists():  # a re-save of the same step (e.g. resumed exactly at the end)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in checkpoint_dirs(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_one(path: Path, rank: int) -> Loaded:
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"unknown checkpoint format {meta.get('format')!r}")
    missing = [f for f in meta["files"] if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"missing files {missing}")
    models = {p.stem: load_file(str(p)) for p in sorted((path / "models").glob("*.safetensors"))}
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    rng_file = path / f"rng_rank{rank}.pt"
    rng = torch.load(rng_file, map_location="cpu", weights_only=True) if rng_file.is_file() else None
    return Loaded(int(meta["step"]), path, models, state, rng)


def load_latest(root: Path, rank: int = 0) -> Optional[Loaded]:
    """Newest checkpoint that loads completely; damaged ones are skipped with a warning naming them."""
    damaged = []
    for path in checkpoint_dirs(root):
        try:
            loaded = _load_one(path, rank)
        except Exception as err:  # any damage: truncated file, bad JSON, bad safetensors header
            damaged.append(path)
            warnings.warn(f"checkpoint {path} is damaged ({type(err).__name__}: {err}); trying an older one")
            continue
        if damaged:
            warnings.warn(f"resuming from {path} instead of damaged {[str(d) for d in damaged]}")
        return loaded
    if damaged:
        raise RuntimeError(f"every checkpoint in {root} is damaged: {[str(d) for d in damaged]}; "
                           "move them away to start from scratch")
    return None


# ---- what the training loop calls ----------------------------------------------------------------
def scalers(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Each optimizer's fp16 GradScaler (empty without fp16)."""
    return {k: o.scaler for k, o in optimizers.items() if getattr(o, "scaler", None) is not None}


def save(acc: Accelerator, root: Path, step: int, models: dict[str, nn.Module],
         optimizers: dict[str, torch.optim.Optimizer], *, samples: int, extra: dict[str, Any],
         rank_state: dict[str, Any], keep: int) -> None:
    """Write checkpoint `step` under `root`, keeping the newest `keep`; every process calls it (each
    writes its own RNG file). `samples`: training samples drawn so far; `extra`: state shared by all
    processes (rank 0's is saved); `rank_state`: this process's own. A failed write (disk full,
    permissions) removes the partial copy and raises an OSError that names the checkpoint and the
    whole one it leaves in place."""
    tmp = tmp_dir(root, step)
    try:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        files: list[str] = []
        if acc.is_main_process:
            state = {"step": step, "samples": samples,
                     "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                     "scalers": {k: s.state_dict() for k, s in scalers(optimizers).items()},
                     "extra": extra}
            weights = {k: acc.get_state_dict(m) for k, m in models.items()}
            files = write_models_and_state(tmp, weights, state)
        faults.maybe_kill("during_checkpoint", step)
        write_rng(tmp, acc.process_index, rank_state)
        acc.wait_for_everyone()
        if acc.is_main_process:
            finalize(root, step, files, acc.num_processes, keep)
        acc.wait_for_everyone()
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        last = checkpoint_dirs(root)
        raise OSError(
            f"could not write checkpoint step {step} in {root} ({err.strerror or err}); "
            f"the newest whole checkpoint is {last[0] if last else 'none'} and training can resume "
            "from it once there is space"
        ) from None
    faults.maybe_kill("after_checkpoint", step)


def check_resume_config(cfg: ExperimentConfig, run_dir: Path, loaded: Loaded,
                        say=print) -> dict[str, tuple[Any, Any]]:
    """Before loading checkpoint `loaded` of `run_dir`: refuse (ValueError) a config whose networks
    differ from those of the run's saved config.yaml, naming the keys, and a train.max_steps below the
    checkpoint's step; `say` what else changed. Returns {key: (old, new)} of the changes."""
    saved, changes = run_dir / "config.yaml", {}
    if saved.is_file():
        try:
            old = config_lib.load(saved)
        except (ValueError, FileNotFoundError) as err:
            warnings.warn(f"cannot compare with the run's saved config ({err}); resuming without the check")
            old = None
        if old is not None:
            changes = {k: v for k, v in config_lib.differences(old, cfg).items() if k != "run.dir"}
            # batch <-> sync_batch is the same network trained over more processes (1 GPU -> 8)
            same_net = {k for k, v in changes.items() if k in ("model.norm", "model.d_norm")
                        and set(v) == {"batch", "sync_batch"}}
            arch = {k: v for k, v in changes.items()
                    if config_lib.is_architecture_key(k) and k not in same_net}
            objective = {k: v for k, v in changes.items() if k in config_lib.OBJECTIVE_KEYS}
            for found, what, why in (
                    (arch, "whose networks were built differently",
                     f"its checkpoint {loaded.path} cannot be loaded into them"),
                    (objective, "trained toward another target",
                     "continuing it would mix two objectives in one network")):
                if found:
                    described = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in found.items())
                    keep = " ".join(f"{k}={config_lib.override_value(a)}" for k, (a, b) in found.items())
                    raise ValueError(f"run.dir {run_dir} holds a run {what} ({described}); {why}. Use a new "
                                     f"run.dir, or continue this run with {keep}")
    if cfg.train.max_steps < loaded.step:
        raise ValueError(
            f"config key train.max_steps={cfg.train.max_steps} is below the step of the checkpoint in "
            f"run.dir ({loaded.path}, step {loaded.step}); raise train.max_steps to continue, or use a "
            "new run.dir"
        )
    for k, (a, b) in changes.items():
        note = (" (the LR schedule follows the new value from this step on)"
                if k in config_lib.SCHEDULE_KEYS else "")
        say(f"resume: {k} changed {a!r} -> {b!r}{note}")
    return changes


def load_weights(net: nn.Module, name: str, sd: dict[str, torch.Tensor], source: Path) -> None:
    """Load `sd` into `net` (model `name`, unwrapped); a shape or key mismatch becomes one ValueError
    naming the layers and `source`."""
    target = net.state_dict()
    missing, unexpected = sorted(set(target) - set(sd)), sorted(set(sd) - set(target))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd
              if k in target and sd[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: the weights of {name!r} do not fit the network this config builds "
            f"(shapes differ: {shapes[:3]}, missing: {missing[:3]}, unexpected: {unexpected[:3]}); "
            "use the run's original model settings or a new run.dir"
        )
    net.load_state_dict(sd)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory format. A
    checkpoint written in NCHW resumed with channels_last (or the reverse: train.channels_last's auto
    choice differs between CPU and GPU) would otherwise feed fused Adam mismatched strides, which it
    does not check: the update would be silently wrong."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def restore(loaded: Loaded, nets: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
            rank: int) -> None:
    """Load checkpoint `loaded` into the run: weights into `nets` (unwrapped), optimizer states, fp16
    loss scales, and process `rank`'s RNG states. A model the run does not build is a ValueError; a
    checkpoint without loss scales or without this rank's RNG file warns and starts them afresh."""
    for name, sd in loaded.models.items():
        if name not in nets:
            raise ValueError(f"checkpoint {loaded.path} has model {name!r} that this run does not build "
                             f"({sorted(nets)}); was run.dir used for another config?")
        load_weights(nets[name], name, sd, loaded.path)
    for name, sd in loaded.state["optimizers"].items():
        optimizers[name].load_state_dict(sd)
        match_state_layout(optimizers[name])
    run_scalers, saved = scalers(optimizers), loaded.state.get("scalers", {})
    if run_scalers and not saved:
        warnings.warn(
            f"{loaded.path} holds no fp16 loss scale (saved without fp16); starting the scale afresh"
        )
    for name, sd in saved.items():
        if name in run_scalers:
            run_scalers[name].load_state_dict(sd)
    if loaded.rng is not None:
        set_rng_state(loaded.rng)
    else:
        warnings.warn(f"{loaded.path} has no RNG state for rank {rank} (different number of processes?); "
                      "continuing with fresh RNG")


def schedules_at(schedules: dict[str, torch.optim.lr_scheduler.LambdaLR], lr: float,
                 step: int) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    """The LambdaLR `schedules` rebuilt as after `step` steps from base LR `lr` (the config's
    train.lr): each optimizer's LR becomes lr * factor(step), as in a run that never stopped, and a
    changed train.lr or schedule length applies from this step on. Needs nothing from the checkpoint
    but the step (called after the optimizers' states are loaded, which would overwrite the LRs)."""
    rebuilt = {}
    for name, sched in schedules.items():
        for group in sched.optimizer.param_groups:
            group["initial_lr"] = lr  # the base LR of a scheduler built with last_epoch >= 0
        # Built as having taken step - 1 steps, its construction takes one more and sets the LRs.
        rebuilt[name] = torch.optim.lr_scheduler.LambdaLR(
            sched.optimizer, sched.lr_lambdas, last_epoch=step - 1
        )
    return rebuilt
