"""Loss weighting of the diffusion objective over timesteps.

Min-SNR-gamma (Hang et al., ICCV 2023, eq. 9 and its v / x0 forms): the x0-space weight of step t is
min(SNR(t), gamma), SNR(t) = alpha_bar_t / (1 - alpha_bar_t); expressed on the network's own
target it is min(SNR, gamma) / SNR for epsilon prediction and min(SNR, gamma) / (SNR + 1) for
v-prediction (the weighting diffusers' text-to-image example uses, with `compute_snr`).
"""
from __future__ import annotations

import torch

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def snr_table(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR(t) for every training timestep: (T,) float64 -> (T,) float32."""
    a = alphas_cumprod.double()
    return (a / (1 - a)).float()


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights (B,) from the SNR (B,) of each sample's timestep; gamma > 0."""
    if prediction_type not in PREDICTIONS:
        raise ValueError(f"min-SNR weighting: unknown prediction type {prediction_type!r}; "
                         f"one of {PREDICTIONS}")
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped
