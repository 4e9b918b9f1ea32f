"""A NaN loss: the run stops naming the step, the term and the last good checkpoint (and saves
nothing after it), or with train.nonfinite=skip the bad updates are skipped and counted."""
import pytest
import torch
from safetensors.torch import load_file

from gen import config
from trainers import Pix2PixTrainer, checkpoint
from trainers.nonfinite import LossMonitor
from conftest import tiny_overrides


class PoisonedPix2Pix(Pix2PixTrainer):
    """Step 3's input batch is NaN: every loss and gradient of that step is non-finite."""

    def to_device(self, batch):
        batch = super().to_device(batch)
        if self.step + 1 == 3:
            batch = dict(batch, input=torch.full_like(batch["input"], float("nan")))
        return batch


def test_nan_loss_stops_naming_step_term_and_checkpoint(aligned_root, tmp_path):
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{
        "train.log_every": 5, "train.ckpt_every": 2, "train.validate_every": 100}))
    with pytest.raises(FloatingPointError) as err:
        PoisonedPix2Pix(cfg).fit()
    msg = str(err.value)
    assert "at step 3" in msg and "G_L1" in msg and "step_00000002" in msg and "train.nonfinite=skip" in msg
    # Checked before the step-4 checkpoint: only the whole step-2 checkpoint is on disk, and it is finite.
    dirs = checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")
    assert [d.name for d in dirs] == ["step_00000002"]
    weights = load_file(str(dirs[0] / "models" / "generator.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_skip_mode_skips_and_counts_the_bad_updates(aligned_root, tmp_path):
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{"train.nonfinite": "skip"}))
    trainer = PoisonedPix2Pix(cfg)
    trainer.fit()
    assert trainer.skipped_updates == 2  # D's and G's update of step 3
    for net in ("generator", "discriminator"):
        assert all(torch.isfinite(p).all() for p in trainer.unwrap(net).parameters())
        assert all(torch.isfinite(b).all() for b in trainer.unwrap(net).buffers())  # BN running stats too


def test_loss_monitor_means_ignore_non_finite_values():
    m = LossMonitor(torch.device("cpu"))
    m.add({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step=1)
    m.add({"a": torch.tensor(float("nan")), "b": torch.tensor(4.0)}, step=2)
    m.add({"a": torch.tensor(3.0), "b": torch.tensor(float("inf"))}, step=3)
    assert m.first_bad() == (2, ["a", "b"])
    assert m.pop_means() == {"a": 2.0, "b": 3.0}
    assert m.pop_means() == {}


def test_skip_mode_stops_a_diverged_run_instead_of_exporting_it(tmp_path):
    """lr 1e6 on a DDPM: nearly every update is non-finite. Skip mode stops within its window, naming
    the last good checkpoint, and exports nothing."""
    from trainers import DDPMTrainer
    from test_ddpm import ddpm_overrides, write_toy
    root = write_toy(tmp_path / "data" / "train", n=16).parent
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", root, **{
        "train.lr": 1e6, "train.nonfinite": "skip", "train.max_steps": 30, "train.ckpt_every": 1,
        "train.batch_size": 4}))
    with pytest.raises(
        FloatingPointError, match=r"of the last 10 steps had non-finite gradients.*Last good checkpoint: "
    ):
        DDPMTrainer(cfg).fit()
    assert not (tmp_path / "run" / "export").exists()
    for ckpt in checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints"):
        weights = load_file(str(ckpt / "models" / "unet.safetensors"))
        assert all(torch.isfinite(w).all() for w in weights.values()), ckpt
