"""Whole runs through train.py: crash + resume equals an uninterrupted run, export round trip,
sample.py on odd sizes, and the offline wandb run read back from disk."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gen import config, pipelines
from gen.models import UNet
from trainers import Pix2PixTrainer, checkpoint
from conftest import ROOT, grid_size, run_sample, tiny_overrides
from wandb_records import read_history


def train_cli(args, env_extra=None, check=True):
    # Same thread count as the in-process reference run: CPU kernels reduce in a thread-dependent order.
    env = dict(
        os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), WANDB_SILENT="true", **(env_extra or {})
    )
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def final_weights(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return {
        name: load_file(str(ckpt / "models" / f"{name}.safetensors"))
        for name in ("generator", "discriminator")
    }


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 6-step run (dropout on, so the RNG matters)."""
    tmp = tmp_path_factory.mktemp("ref")
    from conftest import write_aligned
    write_aligned(tmp / "data" / "train", 8, seed=0)
    write_aligned(tmp / "data" / "val", 2, seed=1)
    torch.manual_seed(123)  # must not matter: the trainer seeds itself
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp / "run", tmp / "data"))).fit()
    return tmp


@pytest.mark.parametrize("fault", ["after_checkpoint:3", "during_checkpoint:6",
                                   pytest.param("after_step:4", marks=pytest.mark.slow),
                                   pytest.param("during_export:6", marks=pytest.mark.slow)])
def test_killed_run_resumes_to_identical_weights(reference_run, tmp_path, fault):
    args = tiny_overrides(tmp_path / "run", reference_run / "data")
    killed = train_cli(args, {"GEN_FAULT": fault}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "run" / "export").exists() or fault.startswith("during_export")
    resumed = train_cli(args)
    assert "resumed from" in resumed.stdout + resumed.stderr
    ref, got = final_weights(reference_run / "run"), final_weights(tmp_path / "run")
    for net in ref:
        assert ref[net].keys() == got[net].keys()
        for k in ref[net]:
            assert torch.equal(ref[net][k], got[net][k]), f"{net}.{k} differs after resume ({fault})"
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp_*"))  # leftovers cleaned by the re-save


def test_export_round_trip_and_sample_cli(reference_run, tmp_path):
    run_dir = reference_run / "run"
    pipe = pipelines.load(run_dir)
    weights = final_weights(run_dir)["generator"]
    g = UNet.from_config(UNet.load_config(run_dir / "export" / "generator"))
    g.load_state_dict(weights)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for mode in ("paper", "eval"):
        twin = pipelines.TranslationPipeline(g, inference=mode, seed=0)
        assert torch.equal(pipelines.load(run_dir, inference=mode)(x), twin(x)), mode
    assert torch.equal(pipe(x), pipe(x))  # seeded dropout noise: repeatable

    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {"odd": (37, 21), "tall": (16, 70), "gray": (33, 33)}
    for name, size in sizes.items():
        Image.new("L" if name == "gray" else "RGB", size, 90).save(inputs / f"{name}.png")
    (inputs / "notes.txt").write_text("skipped")
    proc = run_sample(run_dir, "--input", inputs, "--output", tmp_path / "out", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, size in sizes.items():
        out = Image.open(tmp_path / "out" / f"{name}.png")
        assert out.size == size and out.mode == "RGB"
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_sample_cli_errors_are_clear(tmp_path):
    proc = run_sample(tmp_path / "missing", "--input", ".", "--output", tmp_path / "o", timeout=60)
    assert proc.returncode == 2 and "run directory or export not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wandb_offline_run_holds_losses_and_images(tmp_path, aligned_root):
    run_dir = tmp_path / "run"
    Pix2PixTrainer(config.load(None, tiny_overrides(run_dir, aligned_root, **{"log.wandb": "offline"}))).fit()
    history = read_history(run_dir)
    logged = {k for row in history for k in row}
    assert {"train/G_L1", "train/D", "train/G_GAN", "val/L1", "samples/grid"} <= logged
    l1_rows = [row for row in history if "train/G_L1" in row]
    assert [row["_step"] for row in l1_rows] == [2, 4, 6]
    assert all(np.isfinite(row["train/G_L1"]) and row["train/G_L1"] > 0 for row in l1_rows)
    image = next(row["samples/grid"] for row in history if "samples/grid" in row)
    files = next(run_dir.glob("wandb/offline-run-*/files"))
    assert Image.open(files / image["path"]).size == grid_size(
        3, 2, 32
    )  # input | output | target, 2 val rows
    assert (run_dir / "samples" / "grid_00000006.png").is_file()
    saved = config.load(run_dir / "config.yaml")
    assert saved.run.dir == str(run_dir) and saved.train.max_steps == 6


def test_damaged_newest_checkpoint_falls_back(reference_run, tmp_path):
    import shutil
    root = tmp_path / "checkpoints"
    shutil.copytree(reference_run / "run" / "checkpoints", root)
    newest, older = checkpoint.checkpoint_dirs(root)[:2]
    victim = newest / "models" / "generator.safetensors"
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated by a crash or a full disk
    with pytest.warns(UserWarning) as record:
        loaded = checkpoint.load_latest(root)
    assert loaded.path == older
    text = " ".join(str(w.message) for w in record)
    assert str(newest) in text and str(older) in text
    shutil.rmtree(older)
    with pytest.raises(RuntimeError, match="every checkpoint"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint.load_latest(root)


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(reference_run, tmp_path):
    ref = final_weights(reference_run / "run")
    for name, extra in (
        ("same", {}),
        ("deterministic", {"train.deterministic": "true"}),
        ("other", {"run.seed": 1}),
    ):
        Pix2PixTrainer(
            config.load(None, tiny_overrides(tmp_path / name, reference_run / "data", **extra))
        ).fit()
        got = final_weights(tmp_path / name)
        same = all(torch.equal(ref[n][k], got[n][k]) for n in ref for k in ref[n])
        assert same == (name != "other"), name
    torch.use_deterministic_algorithms(False)


def test_failed_checkpoint_write_keeps_the_previous_one(reference_run, tmp_path, monkeypatch):
    """A full disk at the second checkpoint: a clear error, no partial folder, the first one whole."""
    import errno
    real = checkpoint.write_models_and_state

    def full_disk(tmp, models, state):
        if state["step"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tmp, models, state)

    monkeypatch.setattr(checkpoint, "write_models_and_state", full_disk)
    cfg = config.load(None, tiny_overrides(tmp_path / "run", reference_run / "data"))
    with pytest.raises(
        OSError, match=r"could not write checkpoint step 6 .*No space left on device.*step_00000003"
    ):
        Pix2PixTrainer(cfg).fit()
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000003"]
    assert checkpoint.load_latest(root, 0).step == 3
