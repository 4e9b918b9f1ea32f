"""Full-reference image metrics on [-1, 1] tensors, computed on the tensors' device, on the 0..255
scale scikit-image's defaults report (tests/test_image_metrics.py checks both against scikit-image).

PSNR: torchmetrics' per-image PSNR, data range 255. SSIM: Wang et al. 2004 as scikit-image computes
it (7x7 uniform window, K1 0.01, K2 0.03, sample covariance, the mean over the window positions
inside the image, channels averaged); torchmetrics' SSIM uses the population covariance and differs
by ~3e-4, so the formula is written here. `ImageScores` is the one per-image scorer of training
validation, `sample.py evaluate` and `sample.py compare`, so their figures agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

SSIM_WINDOW = 7


def _to_255(x: torch.Tensor) -> torch.Tensor:
    return (x.detach().double().clamp(-1, 1) + 1) * 127.5


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error in [-1, 1] units (the pix2pix L1), over a batch (B, C, H, W)."""
    return float((pred.float() - target.float().to(pred.device)).abs().mean())


def psnr(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB, data range 255. pred, target: (B, C, H, W) in [-1, 1]."""
    p, t = _to_255(pred), _to_255(target.to(pred.device))
    return peak_signal_noise_ratio(p, t, data_range=255.0, reduction="none", dim=(1, 2, 3)).tolist()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per-image SSIM (Wang et al. 2004, 7x7 uniform window), data range 255, channels averaged.
    pred, target: (B, C, H, W) in [-1, 1], H and W >= 7 (ValueError otherwise)."""
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got "
                         f"{tuple(pred.shape[-2:])}")
    x, y = _to_255(pred), _to_255(target.to(pred.device))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = SSIM_WINDOW ** 2
    mean = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731  (window positions inside)
    mx, my = mean(x), mean(y)
    cov = n / (n - 1)  # sample covariance, as scikit-image's default
    vx, vy, vxy = cov * (mean(x * x) - mx * mx), cov * (mean(y * y) - my * my), cov * (mean(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).tolist()


class ImageScores:
    """Per-image L1, PSNR, SSIM (and LPIPS when given a metric) of outputs against targets, averaged
    over everything added. add(pred, target): (B, C, H, W) in [-1, 1], one score per image."""

    def __init__(self, lpips_metric=None):
        self.lpips = lpips_metric
        self.values: dict[str, list[float]] = {"L1": [], "PSNR": [], "SSIM": []}
        if lpips_metric is not None:
            self.values["LPIPS"] = []

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.float(), target.float().to(pred.device)
        self.values["L1"] += (pred - target).abs().mean(dim=(1, 2, 3)).tolist()
        self.values["PSNR"] += psnr(pred, target)
        if min(pred.shape[-2:]) >= SSIM_WINDOW:  # tiny images: no SSIM, no crash
            self.values["SSIM"] += ssim(pred, target)
        if self.lpips is not None and pred.shape[1] == 3:
            self.values["LPIPS"] += self.lpips(pred, target)

    def __len__(self) -> int:
        return len(self.values["L1"])

    def means(self) -> dict[str, float]:
        """{metric: mean over the images added}; a metric with no value (LPIPS of 1-channel images) is
        left out."""
        return {k: sum(v) / len(v) for k, v in self.values.items() if v}
