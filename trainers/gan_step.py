"""The adversarial half of every GAN method (pix2pix, CycleGAN, colorization's loss=gan), in one place.

Isola et al. 2017 / Zhu et al. 2017: the discriminator step on D(real) and D(fake.detach()) with
the loss halved (D learns slower than G), and the generator's GAN term on the frozen discriminator.
A conditional discriminator (pix2pix, colorization) sees (condition, image) concatenated on channels.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from gen.losses import GANLoss


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def pair(condition: Optional[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """What a conditional discriminator judges: (B, Cc + C, H, W); unconditional: the image."""
    return image if condition is None else torch.cat([condition, image], 1)


def discriminator_loss(d: nn.Module, gan: GANLoss, real: torch.Tensor, fake: torch.Tensor,
                       fake_first: bool = True, augment: Optional[Callable] = None
                       ) -> dict[str, torch.Tensor]:
    """{"D_real", "D_fake", "D" = 0.5 * (D_real + D_fake)} for inputs already paired (see `pair`);
    `fake` is detached here, so the generator gets no gradient from this loss. The order of the two
    forwards is the reference's (pix2pix: fake first; CycleGAN: real first): a batch-norm
    discriminator's running statistics depend on it. augment: DiffAugment of both inputs."""
    aug = augment or (lambda x: x)
    real, fake = aug(real), aug(fake.detach())
    if fake_first:
        loss_fake = gan(d(fake.detach()), False)
        loss_real = gan(d(real), True)
    else:
        loss_real = gan(d(real), True)
        loss_fake = gan(d(fake.detach()), False)
    return {"D_real": loss_real, "D_fake": loss_fake, "D": 0.5 * (loss_real + loss_fake)}


def discriminator_step(trainer, name: str, gan: GANLoss, real: torch.Tensor, fake: torch.Tensor,
                       optimizer: Optional[str] = None, augment: Optional[Callable] = None
                       ) -> dict[str, torch.Tensor]:
    """One update of discriminator `name` (its optimizer by default) on paired real / fake inputs;
    the discriminator is left frozen (requires_grad off) for the generator step that follows."""
    d = trainer.models[name]
    set_requires_grad(d, True)
    losses = discriminator_loss(d, gan, real, fake, augment=augment)
    trainer.backward(losses["D"], optimizer or name)
    trainer.step_optimizer(optimizer or name)
    set_requires_grad(d, False)
    return losses


def generator_gan_term(trainer, name: str, gan: GANLoss, fake: torch.Tensor,
                       augment: Optional[Callable] = None) -> torch.Tensor:
    """GAN(D(fake), real) for the generator, through the unwrapped discriminator: its weights are
    frozen, so DDP must not wait for their gradients (only D's input, G's output, needs one).
    augment: the same DiffAugment as the D step (differentiable: G's gradient flows through it)."""
    return gan(trainer.unwrap(name)(augment(fake) if augment else fake), True)
