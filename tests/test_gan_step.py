"""The shared adversarial step (trainers/gan_step.py): loss values by hand, the order of the
discriminator's two forwards, and colorization's loss=gan using its own mode and weight."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gen import config
from gen.losses import GANLoss
from trainers.gan_step import discriminator_loss, pair


class Constant(nn.Module):
    """A 'discriminator' answering `value` everywhere, recording what it was shown."""

    def __init__(self, value: float):
        super().__init__()
        self.value, self.seen = value, []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.seen.append(x)
        return torch.full((x.shape[0], 1, 2, 2), self.value) + self.w


@pytest.mark.parametrize("mode,value,expected", [
    ("vanilla", 0.0, (math.log(2), math.log(2))),            # -log sigmoid(0) both ways
    ("lsgan", 0.25, ((0.25 - 1) ** 2, 0.25 ** 2)),            # (x - 1)^2 real, x^2 fake
])
def test_discriminator_loss_by_hand(mode, value, expected):
    real, fake = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4, requires_grad=True)
    d = Constant(value)
    losses = discriminator_loss(d, GANLoss(mode), real, fake)
    assert losses["D_real"].item() == pytest.approx(expected[0])
    assert losses["D_fake"].item() == pytest.approx(expected[1])
    assert losses["D"].item() == pytest.approx(0.5 * sum(expected))
    assert not d.seen[0].requires_grad  # the fake is detached: no gradient reaches the generator
    assert torch.equal(d.seen[0], fake.detach()) and torch.equal(d.seen[1], real)  # pix2pix: fake first
    d = Constant(value)
    discriminator_loss(d, GANLoss(mode), real, fake, fake_first=False)  # CycleGAN: real first
    assert torch.equal(d.seen[0], real)


def test_conditional_pair_concatenates_channels():
    cond, img = torch.zeros(1, 1, 4, 4), torch.ones(1, 2, 4, 4)
    assert pair(cond, img).shape == (1, 3, 4, 4) and torch.equal(pair(None, img), img)


def test_colorization_gan_uses_its_mode_and_weight(tmp_path):
    from test_colorization import colorization_overrides, write_banded
    from trainers import ColorizationTrainer
    write_banded(tmp_path / "d" / "train", 4)
    write_banded(tmp_path / "d" / "val", 2, seed=1)
    cfg = config.load(None, colorization_overrides(tmp_path / "run", tmp_path / "d", **{
        "colorization.loss": "gan", "colorization.gan_mode": "lsgan", "colorization.lambda_gan": 0.0,
        "train.max_steps": 1}))
    trainer = ColorizationTrainer(cfg)
    trainer.setup()
    assert trainer.gan_loss.mode == "lsgan"
    batch = trainer.to_device(next(iter(trainer.train_loader(trainer.train_set, 0))))
    losses = trainer.train_step(batch)
    assert losses["G"].item() == pytest.approx(100.0 * losses["L1"].item(), rel=1e-6)  # lambda_gan 0
    with pytest.raises(ValueError, match="colorization.gan_mode"):
        config.load(None, colorization_overrides(tmp_path / "r2", tmp_path / "d",
                                                 **{"colorization.gan_mode": "x"}))
