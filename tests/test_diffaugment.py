"""DiffAugment (Zhao et al. 2020, gen/losses/diffaugment.py): what each transform does, that it is
differentiable, one transform for a conditional pair, and the GAN methods calling it before every
discriminator input of both steps."""
from __future__ import annotations

import pytest
import torch

from gen import config
from gen.losses.diffaugment import DiffAugment


def test_translation_shifts_by_whole_pixels_and_fills_with_zeros():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    torch.manual_seed(0)
    out = DiffAugment(["translation"])(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}
    where = (out[:, 0] == 1).nonzero()[:, 1:]  # (row, col) of the pixel in each sample
    assert len(where) == 64 and (where - 8).abs().max() <= 2  # at most 1/8 of 16 pixels each way
    assert len({tuple(w) for w in where.tolist()}) > 5  # the shift varies per sample


def test_cutout_zeroes_one_square_of_half_the_size():
    x = torch.ones(32, 3, 16, 16)
    torch.manual_seed(0)
    out = DiffAugment(["cutout"])(x)
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros > 0).all() and (zeros == 64).any()  # 8 x 8, clipped at borders
    assert torch.equal(out[:, 0], out[:, 2])  # every channel shares the square


def test_colour_factors_are_shared_by_the_parts_of_a_pair_and_gradients_flow():
    torch.manual_seed(1)
    a, b = torch.rand(4, 3, 8, 8) * 2 - 1, torch.rand(4, 2, 8, 8) * 2 - 1
    torch.manual_seed(0)
    both = DiffAugment(["color", "translation", "cutout"], (3, 2))(torch.cat([a, b], 1))
    torch.manual_seed(0)
    alone = DiffAugment(["color", "translation", "cutout"])(a)  # the same draws: the same transform of part A
    torch.testing.assert_close(both[:, :3], alone)
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    DiffAugment()(fake).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_bad_policies_and_methods_without_a_discriminator_are_refused(tmp_path):
    from conftest import tiny_overrides
    from gen.config import DIFFAUGMENT_POLICIES
    from gen.losses.diffaugment import TRANSFORMS
    assert set(DIFFAUGMENT_POLICIES) == set(TRANSFORMS)  # what the config accepts is what exists
    with pytest.raises(ValueError, match="unknown transform"):
        DiffAugment(["blur"])
    with pytest.raises(ValueError, match="train.diffaugment='blur'"):
        config.load(None, tiny_overrides(tmp_path / "r", tmp_path, **{"train.diffaugment": "blur"}))
    with pytest.raises(ValueError, match="no discriminator"):
        config.load(None, tiny_overrides(tmp_path / "r", tmp_path, **{"train.diffaugment": "color",
                                                                      "pix2pix.gan_mode": "none"}))


@pytest.mark.parametrize("method", ["pix2pix", "cyclegan", "colorization"])
def test_every_discriminator_input_of_both_steps_is_augmented(tmp_path, method):
    from conftest import tiny_overrides, write_aligned
    from test_colorization import colorization_overrides, write_banded
    from test_cyclegan import cyclegan_overrides, write_unpaired
    from trainers import TRAINERS
    extra = {"train.diffaugment": "color,translation,cutout", "train.max_steps": 1}
    if method == "pix2pix":
        write_aligned(tmp_path / "d" / "train", 2)
        overrides = tiny_overrides(tmp_path / "run", tmp_path / "d", **{**extra, "data.val": "null"})
    elif method == "cyclegan":
        overrides = cyclegan_overrides(tmp_path / "run", write_unpaired(tmp_path / "d", n=2), **extra)
    else:
        write_banded(tmp_path / "d" / "train", 4)
        write_banded(tmp_path / "d" / "val", 2, seed=1)
        overrides = colorization_overrides(tmp_path / "run", tmp_path / "d", **{
            **extra, "colorization.loss": "gan", "colorization.prior": "imagenet"})
    trainer = TRAINERS[method](config.load(None, overrides))
    trainer.setup()
    seen = []
    real_augment = trainer.augment
    trainer.augment = lambda x: seen.append(x.shape) or real_augment(x)
    trainer.train_step(trainer.to_device(next(trainer.loader)))
    per_d = {"pix2pix": 3, "cyclegan": 6, "colorization": 3}[method]  # D: real + fake; G: fake (per D)
    assert len(seen) == per_d
