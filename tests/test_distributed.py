"""A 2-process data-parallel run on CPU (gloo, launched by torchrun as `accelerate launch` does)."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gen import config
from trainers import Pix2PixTrainer, checkpoint
from conftest import ROOT, tiny_overrides
from wandb_records import read_history

# L1-only with no norm layers and no dropout: per-sample gradients with no cross-sample statistics,
# so averaging 2 ranks x batch 2 must equal one process with batch 4 on the same 4 samples.
EXACT = {"pix2pix.gan_mode": "none", "model.norm": "none", "model.dropout": 0.0, "train.max_steps": 4,
         "train.ckpt_every": 2, "train.validate_every": 4, "train.lr": 1e-3}


def torchrun(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def generator_weights(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return load_file(str(ckpt / "models" / "generator.safetensors"))


@pytest.mark.parametrize("variant", ["crop", "any_size"])
def test_two_process_run_equals_single_process_big_batch(tmp_path, aligned_root, variant):
    """Gradients are all-reduced (also through the any-size forward, data.preprocess=none) and the
    logged losses are means over both processes, not rank 0's alone."""
    per_rank = 2 if variant == "crop" else 1
    extra = dict(EXACT, **{"train.batch_size": per_rank, "log.wandb": "offline"})
    if variant == "any_size":
        extra.update({"data.preprocess": "none", "data.flip": "false"})  # 40x40 files, padded to 64
    proc = torchrun(tiny_overrides(tmp_path / "ddp", aligned_root, **extra), {"WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = checkpoint.checkpoint_dirs(tmp_path / "ddp" / "checkpoints")[0]
    assert {p.name for p in ckpt.iterdir()} >= {"rng_rank0.pt", "rng_rank1.pt", "state.pt", "meta.json"}
    assert (tmp_path / "ddp" / "export" / "generator" / "config.json").is_file()

    single = dict(extra, **{"train.batch_size": 2 * per_rank})
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "one", aligned_root, **single))).fit()
    ddp, one = generator_weights(tmp_path / "ddp"), generator_weights(tmp_path / "one")
    # Adam turns float noise in a near-zero gradient into a step of up to lr, so a few weights may differ by
    # a fraction of lr; weights trained on one rank's data alone differ everywhere, by several lr.
    diff = torch.cat([(ddp[k] - one[k]).abs().flatten() for k in one])
    assert diff.mean() < 1e-5 and diff.max() < 1e-3  # one rank alone: mean 7e-4, max 7e-3 here
    # Adam at lr 1e-3 moves weights by ~1e-3 a step, so agreement to 1e-5 is not agreement by standing still.
    older = load_file(
        str(
            checkpoint.checkpoint_dirs(tmp_path / "ddp" / "checkpoints")[1]
            / "models"
            / "generator.safetensors"
        )
    )
    assert max((older[k] - ddp[k]).abs().max().item() for k in ddp) > 1e-4
    logged = [
        [row["train/G_L1"] for row in read_history(tmp_path / run) if "train/G_L1" in row]
        for run in ("ddp", "one")
    ]
    assert len(logged[0]) == 2 and logged[0] == pytest.approx(logged[1], rel=1e-5)


@pytest.mark.slow
def test_two_process_run_resumes_after_kill(tmp_path, aligned_root):
    args = tiny_overrides(tmp_path / "ref", aligned_root, **EXACT)
    assert torchrun(args).returncode == 0
    killed_args = tiny_overrides(tmp_path / "run", aligned_root, **EXACT)
    assert torchrun(killed_args, {"GEN_FAULT": "after_checkpoint:2"}).returncode != 0
    assert torchrun(killed_args).returncode == 0
    ref, got = generator_weights(tmp_path / "ref"), generator_weights(tmp_path / "run")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_two_process_cyclegan_keeps_a_pool_per_rank(tmp_path):
    """G_A runs three times per step under DDP (fake, reconstruction, identity); each rank's pool is saved."""
    from test_cyclegan import cyclegan_overrides, write_unpaired
    root = write_unpaired(tmp_path / "data")
    proc = torchrun(cyclegan_overrides(tmp_path / "run", root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")[0]
    pools = [
        torch.load(ckpt / f"rng_rank{r}.pt", weights_only=True)["rank_state"]["fake_B"]["images"]
        for r in (0, 1)
    ]
    assert pools[0].shape == pools[1].shape == (8, 3, 32, 32)  # 4 steps x batch 2 per rank
    assert not torch.equal(pools[0], pools[1])  # each rank pooled its own fakes


def test_two_processes_fit_one_lr_plan_to_a_time_budget(tmp_path, aligned_root):
    """train.time_budget_minutes on 2 processes: the ranks agree (by gather) on one fitted horizon and
    one stopping step, the plan in the checkpoint decays to 0 there, and the run says it is complete.
    A disagreement would leave one rank in a collective the other never joins (a timeout here)."""
    run = tmp_path / "ddp"
    proc = torchrun(tiny_overrides(run, aligned_root, **{
        "train.max_steps": 100000, "train.ckpt_every": 100000, "train.validate_every": 100000,
        "train.log_every": 2, "train.time_budget_minutes": 0.15}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the run is complete" in proc.stdout, proc.stdout[-2000:]
    ckpt = checkpoint.checkpoint_dirs(run / "checkpoints")[0]
    plan = torch.load(ckpt / "state.pt", weights_only=True)["extra"]["lr_plan"]["knots"]
    step = int(ckpt.name.split("_")[-1])
    assert len(plan) >= 2 and plan[-1][1] == step < 100000
