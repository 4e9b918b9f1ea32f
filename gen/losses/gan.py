"""Adversarial objectives (Goodfellow et al. 2014 'vanilla'; Mao et al. 2017 LSGAN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("vanilla", "lsgan")


class GANLoss(nn.Module):
    """loss(logits, target_is_real): mean over every patch logit.

    vanilla: binary cross-entropy on logits, -log sigmoid(x) for real, -log(1 - sigmoid(x)) for fake;
    lsgan: (x - 1)^2 for real, x^2 for fake.
    """

    def __init__(self, mode: str = "vanilla"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN mode {mode!r}; choose one of {list(GAN_MODES)}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 under autocast
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)
