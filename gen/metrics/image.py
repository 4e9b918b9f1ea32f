"""Full-reference image metrics on [-1, 1] tensors, computed by scikit-image on 8-bit-range floats."""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float64 in [0, 255]."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy().astype(np.float64)


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error in [-1, 1] units (the pix2pix L1), over a batch (B, C, H, W)."""
    return float((pred.float() - target.float()).abs().mean())


def psnr(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB, data range 255. pred, target: (B, C, H, W) in [-1, 1]."""
    return [float(peak_signal_noise_ratio(_to_numpy(t), _to_numpy(p), data_range=255.0))
            for p, t in zip(pred, target)]


def ssim(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image SSIM (Wang et al. 2004, 7x7 window), data range 255, channels averaged."""
    return [float(structural_similarity(_to_numpy(t), _to_numpy(p), data_range=255.0, channel_axis=2))
            for p, t in zip(pred, target)]
