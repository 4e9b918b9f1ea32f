"""pix2pix (Isola et al. 2017): U-Net generator, conditional PatchGAN, L1 + cGAN.

Step order as in the reference: G forward; D step on (A, G(A)) fake and (A, B) real with the loss
halved; then the G step on GAN + lambda_L1 * L1. `pix2pix.gan_mode=none` is the L1-only dense
regression baseline; `lambda_l1=0` is cGAN only.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gen.data import channels
from gen.losses import GANLoss
from gen.config import parse_diffaugment
from gen.losses.diffaugment import DiffAugment
from gen.pipelines import TranslationPipeline, export_copy

from .base import Trainer
from .builders import adam, build_discriminator, build_generator, label_input
from .gan_step import discriminator_step, generator_gan_term, pair
from .generator_ema import GeneratorEMA
from .init_from import load_translation


class Pix2PixTrainer(Trainer):
    method = "pix2pix"

    def build(self) -> None:
        p = self.cfg.pix2pix
        self.in_c, self.out_c = channels(self.cfg.data)
        g = build_generator(self.cfg, self.in_c, self.out_c)
        self.models = {"generator": g}
        self.optimizers = {"generator": adam(self.cfg, g)}
        self.use_gan = p.gan_mode != "none" and p.lambda_gan > 0
        if self.use_gan:
            d = build_discriminator(self.cfg, self.in_c + self.out_c)
            self.models["discriminator"] = d
            self.optimizers["discriminator"] = adam(self.cfg, d)
            self.gan_loss = GANLoss(p.gan_mode)
        # DiffAugment of the (A, B) pairs D judges: one transform for both parts
        policy = self.cfg.train.diffaugment
        self.augment = DiffAugment(parse_diffaugment(policy), (self.in_c, self.out_c)) if policy else None
        if self.cfg.model.init_from:
            load_translation(self.cfg.model.init_from, {"generator": g, "discriminator": self.models.get(
                "discriminator")}, {"generator": "generator", "discriminator": "discriminator"},
                self.accelerator.print, kind="translation")
        self.schedulers = {k: self.lr_schedule(o) for k, o in self.optimizers.items()}
        decay = self.cfg.train.ema_decay  # after init_from: the average starts from the loaded weights
        self.ema = GeneratorEMA(self, ["generator"], decay) if decay else None

    def on_device(self) -> None:
        if self.ema:
            self.ema.to(self.device)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        p = self.cfg.pix2pix
        real_a, real_b = batch["input"], batch["target"]  # (B, Ci, H, W), (B, Ct, H, W) in [-1, 1]
        fake_b = self.forward("generator", real_a)
        losses = {}
        if self.use_gan:
            losses.update(discriminator_step(self, "discriminator", self.gan_loss, pair(real_a, real_b),
                                             pair(real_a, fake_b), augment=self.augment))
        loss_l1 = F.l1_loss(fake_b.float(), real_b.float())
        loss_g = p.lambda_l1 * loss_l1
        if self.use_gan:
            loss_g_gan = generator_gan_term(self, "discriminator", self.gan_loss, pair(real_a, fake_b),
                                            self.augment)
            loss_g = loss_g + p.lambda_gan * loss_g_gan
            losses["G_GAN"] = loss_g_gan
        self.backward(loss_g, "generator")
        skipped = self.skipped_updates
        self.step_optimizer("generator")
        if self.ema:
            self.ema.step(skipped)
        losses.update(G_L1=loss_l1, G=loss_g)
        return losses

    def pipeline(self) -> TranslationPipeline:
        c = self.cfg.pix2pix
        # The label comparisons and reports show: which loss this generator was trained with.
        label = (
            "pix2pix (L1 only)"
            if c.gan_mode == "none"
            else "pix2pix (cGAN only)"
            if c.lambda_l1 == 0
            else "pix2pix"
        )
        net = export_copy(self.unwrap("generator"))
        return TranslationPipeline(
            self.ema.into("generator", net) if self.ema else net,
            label,
            self.cfg.pix2pix.inference,
            self.cfg.data.direction,
            seed=self.cfg.run.seed,
            max_16bit=self.cfg.data.max_16bit,
            label_input=label_input(self.cfg.data),
        )

    def export(self, path: Path) -> None:
        self.pipeline().save_pretrained(path)
        if self.use_gan:  # kept for fine-tuning (model.init_from); sampling never reads it
            self.unwrap("discriminator").save_pretrained(path / "discriminator")
