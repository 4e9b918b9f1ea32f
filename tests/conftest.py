"""Shared fixtures: tiny synthetic datasets and tiny configs (base width 8, 32x32, CPU)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config):
    """The default suite runs on the CPU even on a GPU box (bit-exact resume tests assume CPU kernels);
    `-m gpu` keeps the GPUs visible. Set before any CUDA call, and inherited by the subprocesses."""
    if "gpu" not in (config.option.markexpr or "").replace("not gpu", ""):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # train.mixed_precision=auto must not make the suite's figures depend on the CPU it runs on
    # (bf16 on CPUs with AVX-512 BF16, fp32 elsewhere): the suite trains in fp32 unless a test asks.
    os.environ.setdefault("GEN_CPU_BF16", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


def synthetic_pair(rng: np.random.Generator, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A: smooth random colour field; B = 255 - A (a known per-pixel mapping to learn)."""
    coarse = rng.uniform(0, 255, (4, 4, 3))
    a = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR))
    return a, 255 - a


def write_aligned(folder: Path, n: int, size: int = 40, seed: int = 0) -> Path:
    """n pix2pix-style A|B files of size (size, 2*size)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a, b = synthetic_pair(rng, size)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture
def aligned_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_aligned(root / "train", 8, seed=0)
    write_aligned(root / "val", 2, seed=1)
    return root


def tiny_overrides(run_dir: Path, data_root: Path, **extra) -> list[str]:
    """A 5-level U-Net with ngf 8 on 32x32 crops: a pix2pix step in milliseconds."""
    items = {
        "run.dir": run_dir, "data.root": data_root, "data.layout": "aligned", "data.test": "null",
        "data.load_size": 36, "data.crop_size": 32, "model.generator": "unet", "model.num_downs": 5,
        "model.ngf": 8, "model.ndf": 8, "train.batch_size": 2, "train.max_steps": 6, "train.log_every": 2,
        "train.validate_every": 3, "train.ckpt_every": 3, "log.wandb": "disabled",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def grid_size(columns: int, rows: int, tile: int, labelled: bool = True) -> tuple[int, int]:
    """(width, height) of gen.visualize.image_grid's output for square tiles of side `tile`."""
    from gen.visualize import HEADER, MIN_TILE

    side = tile * max(1, math.ceil(MIN_TILE / tile))
    return columns * side, rows * side + (HEADER if labelled else 0)


def run_main(script: str, main, args) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` run in this process through its `main(argv)` (a subprocess spends
    seconds importing torch), as a CompletedProcess: argparse's exits and uncaught errors become
    return codes as they would (2, 1 with the traceback on stderr); stdout and stderr captured."""
    import contextlib
    import io
    import traceback

    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess([script, *argv], code, out.getvalue(), err.getvalue())


def run_sample(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python sample.py ARGS`, in this process (run_main)."""
    import sample
    return run_main("sample.py", sample.main, args)


def run_train(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`python train.py ARGS`, in this process (run_main); check: a non-zero exit fails the test."""
    import train
    proc = run_main("train.py", train.main, args)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_sample_process(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python sample.py ARGS` from the project root in a fresh process, output captured."""
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (only in the project's CI/dev machines)")
    return SHARED_DATA
