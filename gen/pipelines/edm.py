"""Samplers of EDM exports (Karras et al. 2022): Karras sigmas (eq. 5: rho 7, sigma 0.002..80 by
default, the values the export's scheduler config holds) and a deterministic ODE solver.

euler: diffusers' EDMEulerScheduler (Algorithm 1 without its correction, one network evaluation per
step); heun: Algorithm 1 itself (`heun_step`, 2 N - 1 evaluations for N steps; diffusers'
HeunDiscreteScheduler steps DDPM's discrete timesteps, not EDM's preconditioned denoiser); dpm:
diffusers' EDMDPMSolverMultistepScheduler (DPM-Solver++ 2M on the same sigmas). All three read the
same preconditioning (diffusers' EDM `precondition_*`, tested equal to gen.losses.edm's) and start
from x ~ N(0, sigma_max^2 I) (Algorithm 1 line 1; diffusers' `init_noise_sigma` would add 1 to the
variance).
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

EDM_SCHEDULERS = ("euler", "heun", "dpm")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # D(x; sigma) -> the denoised x


def is_edm_config(config) -> bool:
    """Whether a scheduler config (dict or FrozenDict) is an EDM one (it has sigma_data)."""
    return "sigma_data" in dict(config)


def make_edm_scheduler(name: str, config):
    """The EDM sampler `name` on the Karras schedule `config` (an EDMEulerScheduler's config)."""
    config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    if name in ("euler", "heun"):  # heun steps the Euler scheduler's sigmas with its own correction
        return EDMEulerScheduler.from_config(config)
    if name == "dpm":
        return EDMDPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                          final_sigmas_type="zero")
    raise ValueError(f"scheduler {name!r} does not sample EDM models; choose one of {list(EDM_SCHEDULERS)}")


def heun_step(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
              ) -> torch.Tensor:
    """One step of Karras et al. 2022, Algorithm 1 (deterministic, 2nd order) of the probability-flow
    ODE dx/dsigma = (x - D(x; sigma)) / sigma, from sigma > 0 to sigma_next >= 0 (0-dim tensors):
    the Euler step x' = x + (sigma_next - sigma) d, d = (x - D(x; sigma)) / sigma (lines 4-5), then,
    unless sigma_next = 0, the trapezoidal correction with d' = (x' - D(x'; sigma_next)) / sigma_next
    (lines 6-8). x: (B, C, H, W) float32."""
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if float(sigma_next) > 0:
        d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma) * (d + d_next) / 2
    return x_next

