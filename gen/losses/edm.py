"""EDM (Karras, Aittala, Aila, Laine, NeurIPS 2022): preconditioning and training objective.

The denoiser is D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)) (Table 1,
"Ours"), with x = y + n, y the clean image and n ~ N(0, sigma^2 I):

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)   c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = 1 / sqrt(sigma^2 + sigma_data^2)            c_noise = ln(sigma) / 4

Training draws ln(sigma) ~ N(P_mean, P_std^2) and weights ||D(y + n; sigma) - y||^2 by
lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2, which is the unit-weighted
loss ||F - F_target||^2 on the network's own output, F_target = (y - c_skip (y + n)) / c_out (eq. 8).

The shared U-Net's sinusoidal time embedding has frequencies 1 .. 1/10000 per unit of timestep, laid
out for DDPM's timesteps 0..999: c_noise spans only about -1.6..1.1 over EDM's sigmas 0.002..80, where
the fastest sinusoid turns less than half a cycle and the rest are nearly constant. The U-Net is
therefore fed TIME_SCALE * c_noise = 62.5 ln(sigma) (about -390..270 over that range, -300..150 over
+-3 P_std of the training distribution), the span of DDPM's timesteps, so every frequency band of the
embedding sees the noise level it was laid out for.
"""
from __future__ import annotations

import torch

TIME_SCALE = 250.0  # U-Net timestep = TIME_SCALE * c_noise (see above)


def precondition(sigma: torch.Tensor, sigma_data: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) of noise levels sigma > 0 (any shape, float), Karras Table 1."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    root = (s2 + d2).sqrt()
    return d2 / (s2 + d2), sigma * sigma_data / root, 1 / root, sigma.log() / 4


def unet_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The U-Net's time input for noise level sigma: TIME_SCALE * c_noise(sigma)."""
    return TIME_SCALE * sigma.log() / 4


def sample_sigmas(batch: int, p_mean: float = -1.2, p_std: float = 1.2,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch,) float32 training noise levels, ln(sigma) ~ N(p_mean, p_std^2) (EDM sec. 5), drawn from
    torch's global generator (the stream a trainer checkpoints)."""
    return (torch.randn(batch, device=device) * p_std + p_mean).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2 (eq. 8 weight)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def f_target(y: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 0.5
             ) -> torch.Tensor:
    """What F must output for D(y + sigma noise; sigma) = y: (y - c_skip (y + sigma noise)) / c_out,
    in the closed form (sigma y / sigma_data - sigma_data noise) / sqrt(sigma^2 + sigma_data^2), which
    stays finite as sigma -> 0. y, noise: (B, C, H, W); sigma: (B,)."""
    s = sigma.view(-1, *([1] * (y.ndim - 1)))
    return (s * y / sigma_data - sigma_data * noise) / (s ** 2 + sigma_data ** 2).sqrt()


def log_sigma_quartile(sigma: torch.Tensor, p_mean: float = -1.2, p_std: float = 1.2) -> torch.Tensor:
    """(B,) long in 0..3: which quartile of the training distribution of ln(sigma) each sigma falls in
    (0: the least noise), for the loss-by-noise-level diagnostic."""
    edges = torch.tensor([-0.6744897501960817, 0.0, 0.6744897501960817], device=sigma.device)  # N(0,1)
    return torch.bucketize((sigma.log() - p_mean) / p_std, edges)
