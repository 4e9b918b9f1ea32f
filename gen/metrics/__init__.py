"""Metrics: PSNR / SSIM / L1 on images, and the per-image scorer every evaluation path shares."""
from .image import ImageScores, l1, psnr, ssim

__all__ = ["ImageScores", "l1", "psnr", "ssim"]
