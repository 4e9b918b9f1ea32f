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


def test_zero_terminal_snr_needs_v_prediction_and_trailing_steps(tmp_path):
    for bad, key in (({"ddpm.prediction_type": "epsilon"}, "ddpm.prediction_type=v_prediction"),
                     ({"ddpm.prediction_type": "v_prediction", "ddpm.timestep_spacing": "leading"},
                      "ddpm.timestep_spacing=trailing")):
        with pytest.raises(ValueError, match=key):
            config.load(None, ddpm_overrides(tmp_path / "r", tmp_path / "d",
                                             **{"ddpm.zero_terminal_snr": True, **bad}))


def test_zero_terminal_snr_trains_exports_and_every_sampler_keeps_it(tmp_path):
    """Lin et al. 2024: the rescaled betas are diffusers' rescale_zero_terminal_snr of the linear ones,
    the last step has SNR 0; the export's scheduler carries it, so DDPM, DDIM and DPM-Solver++ built
    from the export start from pure noise, and their samples are finite."""
    import json

    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    from gen import pipelines
    from gen.pipelines.diffusion import make_scheduler
    from trainers import DDPMTrainer
    write_toy(tmp_path / "d" / "train", 16)
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", tmp_path / "d", **{
        "ddpm.zero_terminal_snr": True, "ddpm.prediction_type": "v_prediction", "ddpm.snr_gamma": 5.0,
        "train.max_steps": 2}))
    trainer = DDPMTrainer(cfg)
    trainer.fit()
    sched = trainer.noise_scheduler
    torch.testing.assert_close(sched.betas, rescale_zero_terminal_snr(torch.linspace(1e-4, 0.02, 1000)))
    assert sched.alphas_cumprod[-1] == 0 and trainer.snr[-1] == 0  # SNR 0: the min-SNR weight is 0 there
    saved = json.loads((tmp_path / "run" / "export" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["rescale_betas_zero_snr"] is True and saved["prediction_type"] == "v_prediction"
    pipe = pipelines.load(tmp_path / "run")
    for name in ("ddpm", "ddim", "dpm"):
        sampler = make_scheduler(name, pipe.scheduler.config, 4)
        assert sampler.config.rescale_betas_zero_snr and float(sampler.alphas_cumprod[-1]) < 1e-7, name
        out = pipe.sample_numbers(range(2), 4, name, 0)
        assert torch.isfinite(out).all(), name
