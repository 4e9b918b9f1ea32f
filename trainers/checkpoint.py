"""Atomic checkpoints of everything a run needs to continue; weights in safetensors, the rest in
torch files read back with weights_only=True (tensors and plain values, no arbitrary objects).

Layout of `run_dir/checkpoints/step_00000500/`:
  models/<name>.safetensors   weights and buffers (safetensors)
  state.pt                    optimizers, LR schedules, fp16 loss scales, step and method extras
                              (tensors and plain Python values)
  rng_rank<r>.pt              each process's RNG states (torch, its own GPU's, numpy, python) and its
                              process-local method state (image pools)
  meta.json                   written last: its presence marks the checkpoint complete

A checkpoint is written into a hidden temporary folder and renamed into place, so a crash
mid-save leaves the previous checkpoints untouched and no half-written `step_*` folder.
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
from safetensors.torch import load_file, save_file

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
