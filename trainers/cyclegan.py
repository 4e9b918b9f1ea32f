"""CycleGAN (Zhu et al. 2017): two generators, two PatchGANs, cycle + identity losses, image pools.

Naming as in the reference: G_A maps A -> B and D_A judges domain B (real B vs G_A(A)); G_B maps
B -> A and D_B judges domain A. One step: forwards; the generators' step (D frozen) on
GAN + lambda * cycle + lambda * lambda_identity * identity; then the discriminators' step on pooled
fakes with each D loss halved.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from gen.losses import GANLoss
from gen.config import parse_diffaugment
from gen.losses.diffaugment import DiffAugment
from gen.losses.image_pool import ImagePool
from gen.pipelines import CycleGANPipeline, TranslationPipeline, export_copy


from .base import Trainer
from .builders import adam, build_discriminator, build_generator
from .init_from import export_meta, load_translation
from .gan_step import discriminator_loss, generator_gan_term, set_requires_grad
from .generator_ema import GeneratorEMA


class CycleGANTrainer(Trainer):
    method = "cyclegan"

    def build(self) -> None:
        c, d = self.cfg.cyclegan, self.cfg.data
        g_a = build_generator(self.cfg, d.channels_a, d.channels_b)
        g_b = build_generator(self.cfg, d.channels_b, d.channels_a)
        d_a, d_b = build_discriminator(self.cfg, d.channels_b), build_discriminator(self.cfg, d.channels_a)
        self.models = {"G_A": g_a, "G_B": g_b, "D_A": d_a, "D_B": d_b}
        self.optimizers = {
            "generators": adam(self.cfg, g_a, g_b), "discriminators": adam(self.cfg, d_a, d_b)}
        self.schedulers = {k: self.lr_schedule(o) for k, o in self.optimizers.items()}
        self.gan_loss = GANLoss(c.gan_mode)
        policy = self.cfg.train.diffaugment
        self.augment = DiffAugment(parse_diffaugment(policy)) if policy else None
        if self.cfg.model.init_from:
            self.init_from(self.cfg.model.init_from)
        seed = self.cfg.run.seed * 1000 + self.accelerator.process_index
        self.pools = {"fake_A": ImagePool(c.pool_size, seed), "fake_B": ImagePool(c.pool_size, seed + 500)}
        for name, pool in self.pools.items():
            self.track(name, pool, per_rank=True)  # each process pools its own fakes
        decay = self.cfg.train.ema_decay  # after init_from: the average starts from the loaded weights
        self.ema = GeneratorEMA(self, ["G_A", "G_B"], decay) if decay else None
        self.use_identity = c.lambda_identity > 0
        if self.use_identity and d.channels_a != d.channels_b:
            warnings.warn(
                f"identity loss switched off: domain A has {d.channels_a} channel(s) and domain B "
                f"{d.channels_b}, so G_A(B) is undefined (set cyclegan.lambda_identity=0 to silence this)"
            )
            self.use_identity = False

    def init_from(self, source: str) -> None:
        """Both directions from a CycleGAN export; from a single translator, the generator of its
        direction (the other direction and both discriminators start fresh)."""
        meta = export_meta(source)
        if meta.get("kind") == "cyclegan":
            layout = {"G_A": "AtoB/generator", "G_B": "BtoA/generator", "D_A": "AtoB/discriminator",
                      "D_B": "BtoA/discriminator"}
            load_translation(source, self.models, layout, self.accelerator.print)
        elif meta.get("kind") == "translation":
            role = "G_A" if meta.get("direction", "AtoB") == "AtoB" else "G_B"
            load_translation(source, {role: self.models[role]}, {role: "generator"}, self.accelerator.print)
            self.accelerator.print(f"model.init_from: a single {meta.get('direction', 'AtoB')} translator: "
                                   "the other generator and both discriminators start fresh")
        else:
            raise ValueError(f"model.init_from={source}: a {meta.get('kind')} export cannot start a CycleGAN")

    def generator_losses(self, real_a, real_b) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """Total G loss, its terms, and the fakes (B, C, H, W) for the D step."""
        c = self.cfg.cyclegan
        g = self.forward  # through the DDP wrappers; any size with data.preprocess=none
        fake_b, fake_a = g("G_A", real_a), g("G_B", real_b)
        rec_a, rec_b = g("G_B", fake_b), g("G_A", fake_a)
        terms = {"G_A": generator_gan_term(self, "D_A", self.gan_loss, fake_b, self.augment),
                 "G_B": generator_gan_term(self, "D_B", self.gan_loss, fake_a, self.augment),
                 "cycle_A": F.l1_loss(rec_a.float(), real_a.float()) * c.lambda_a,
                 "cycle_B": F.l1_loss(rec_b.float(), real_b.float()) * c.lambda_b}
        if self.use_identity:
            terms["idt_A"] = (
                F.l1_loss(g("G_A", real_b).float(), real_b.float()) * c.lambda_b * c.lambda_identity
            )
            terms["idt_B"] = (
                F.l1_loss(g("G_B", real_a).float(), real_a.float()) * c.lambda_a * c.lambda_identity
            )
        return sum(terms.values()), terms, fake_a, fake_b

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        real_a, real_b = batch["A"], batch["B"]  # (B, Ca, H, W), (B, Cb, H, W) in [-1, 1]
        d_nets = (self.models["D_A"], self.models["D_B"])
        for net in d_nets:
            set_requires_grad(net, False)
        loss_g, terms, fake_a, fake_b = self.generator_losses(real_a, real_b)
        self.backward(loss_g, "generators")
        skipped = self.skipped_updates
        self.step_optimizer("generators")
        if self.ema:
            self.ema.step(skipped)
        for net in d_nets:
            set_requires_grad(net, True)
        # one optimizer for both: their losses are summed (fakes from the pools, detached)
        fakes = self.pools["fake_B"].query(fake_b), self.pools["fake_A"].query(fake_a)
        d_loss = lambda net, real, fake: discriminator_loss(  # noqa: E731
            self.models[net], self.gan_loss, real, fake, fake_first=False, augment=self.augment)["D"]
        loss_d_a, loss_d_b = d_loss("D_A", real_b, fakes[0]), d_loss("D_B", real_a, fakes[1])
        self.backward(loss_d_a + loss_d_b, "discriminators")
        self.step_optimizer("discriminators")
        return dict(terms, G=loss_g, D_A=loss_d_a, D_B=loss_d_b)

    def on_device(self) -> None:
        for pool in self.pools.values():
            pool.to(self.device)
        if self.ema:
            self.ema.to(self.device)

    def pipeline(self) -> CycleGANPipeline:
        mode, seed, top = self.cfg.cyclegan.inference, self.cfg.run.seed, self.cfg.data.max_16bit
        g_a, g_b = export_copy(self.unwrap("G_A")), export_copy(self.unwrap("G_B"))
        if self.ema:
            g_a, g_b = self.ema.into("G_A", g_a), self.ema.into("G_B", g_b)
        return CycleGANPipeline(TranslationPipeline(g_a, self.method, mode, "AtoB", seed, top),
                                TranslationPipeline(g_b, self.method, mode, "BtoA", seed, top))

    def export(self, path: Path) -> None:
        self.pipeline().save_pretrained(path)
        # D_A judges G_A's outputs: it belongs to the AtoB direction (kept for model.init_from)
        for name, sub in (("D_A", "AtoB"), ("D_B", "BtoA")):
            self.unwrap(name).save_pretrained(path / sub / "discriminator")
