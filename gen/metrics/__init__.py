"""Metrics: PSNR / SSIM / L1 on images."""
from .image import l1, psnr, ssim

__all__ = ["l1", "psnr", "ssim"]
