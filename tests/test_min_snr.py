"""Min-SNR-gamma loss weighting (Hang et al. 2023): weights against hand-computed values and
diffusers' compute_snr, and the DDPM trainer using them (ddpm.snr_gamma)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from gen import config
from gen.losses.diffusion import min_snr_weights, snr_table
from test_ddpm import ddpm_overrides, write_toy


def test_snr_is_diffusers_and_the_weights_are_the_papers():
    sched = DDPMScheduler()  # Ho et al.'s linear betas 1e-4 .. 0.02 over 1000 steps
    t = torch.tensor([0, 10, 100, 500, 999])
    snr = snr_table(sched.alphas_cumprod)[t]
    torch.testing.assert_close(snr, compute_snr(sched, t), rtol=1e-5, atol=0)
    betas = np.linspace(1e-4, 0.02, 1000)  # by hand: alpha_bar_t = prod(1 - beta), SNR = a / (1 - a)
    a = np.cumprod(1 - betas)[t.numpy()]
    hand = a / (1 - a)
    # rtol 1e-3: diffusers keeps alpha_bar in float32, so 1 - alpha_bar at t = 0 (1e-4) has 4 digits
    np.testing.assert_allclose(snr.numpy(), hand, rtol=1e-3)
    gamma = 5.0
    np.testing.assert_allclose(min_snr_weights(snr, gamma, "epsilon").numpy(), np.minimum(hand, gamma) / hand,
                               rtol=1e-3)
    np.testing.assert_allclose(min_snr_weights(snr, gamma, "v_prediction").numpy(),
                               np.minimum(hand, gamma) / (hand + 1), rtol=1e-3)
    np.testing.assert_allclose(min_snr_weights(snr, gamma, "sample").numpy(), np.minimum(hand, gamma),
                               rtol=1e-3)
    # low noise (SNR > gamma) is down-weighted, high noise keeps weight 1 (epsilon)
    w = min_snr_weights(snr, gamma, "epsilon")
    assert w[0] < 1e-3 and w[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown prediction type"):
        min_snr_weights(snr, gamma, "x0")


def one_step_losses(run_dir, data, **extra) -> dict:
    from trainers import DDPMTrainer
    cfg = config.load(None, ddpm_overrides(run_dir, data, **{"train.max_steps": 1, **extra}))
    trainer = DDPMTrainer(cfg)
    trainer.setup()
    batch = trainer.to_device(next(trainer.loader))
    torch.manual_seed(0)  # the same timesteps and noise for every call
    return {k: v.item() for k, v in trainer.train_step(batch).items()}


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_trainer_weights_its_loss_by_min_snr(tmp_path, prediction):
    data = tmp_path / "d"
    write_toy(data / "train", 16)
    weighted = {"ddpm.snr_gamma": 5.0, "ddpm.prediction_type": prediction}
    losses = one_step_losses(tmp_path / "w", data, **weighted)
    assert set(losses) == {"MSE", "loss"}
    assert losses["loss"] < losses["MSE"]  # weights <= 1, and < 1 at low noise
    uniform = one_step_losses(tmp_path / "u", data, **{"ddpm.prediction_type": prediction})
    assert set(uniform) == {"MSE"} and uniform["MSE"] == pytest.approx(losses["MSE"], rel=1e-6)
    if prediction == "epsilon":  # gamma above every SNR: all weights 1, the paper's uniform loss
        huge = one_step_losses(tmp_path / "h", data, **{"ddpm.snr_gamma": 1e9})
        assert huge["loss"] == pytest.approx(huge["MSE"], rel=1e-6)
    with pytest.raises(ValueError, match="ddpm.snr_gamma"):
        config.load(None, ddpm_overrides(tmp_path / "r2", data, **{"ddpm.snr_gamma": 0}))
