"""An exponential moving average of a GAN's generator weights (train.ema_decay), the weights that
validation, the export and so sample.py use when it is on (as StyleGAN / CUT-style training and
joliGEN do; Karras et al. 2018 for GANs). diffusers' EMAModel, as DDPM uses, checkpointed like any
tracked state (resumes are exact); created after model.init_from loaded its weights, so the average
starts from them. Parameters only: batch-norm statistics are the live network's.
"""
from __future__ import annotations

import torch
from diffusers.training_utils import EMAModel
from torch import nn


class GeneratorEMA:
    """One EMA per named generator of `trainer` (trainer.models[name]), tracked as ema_<name>."""

    def __init__(self, trainer, names: list[str], decay: float):
        self.trainer = trainer
        self.emas = {n: EMAModel(trainer.models[n].parameters(), decay=decay, foreach=True) for n in names}
        for name, ema in self.emas.items():
            trainer.track(f"ema_{name}", ema)

    def step(self, skipped_before: int) -> None:
        """After the generators' optimizer step: average in the new weights, unless that update was
        skipped (non-finite gradients) or is an accumulation micro-step."""
        t = self.trainer
        if t.accelerator.sync_gradients and t.skipped_updates == skipped_before:
            for name, ema in self.emas.items():
                ema.step(t.unwrap(name).parameters())

    def to(self, device: torch.device) -> None:
        for ema in self.emas.values():
            ema.to(device)

    def into(self, name: str, net: nn.Module) -> nn.Module:
        """`net` (an export copy of generator `name`) with the averaged weights in place."""
        self.emas[name].copy_to(net.parameters())
        return net
