"""CUT and FastCUT (Park et al. 2020): one generator, one PatchGAN, PatchNCE instead of a cycle.

One step, in the reference's order: G(x) (with CUT's identity term, G(y) in the same batch; with
FastCUT's flip equivariance, the batch flipped left-right with probability 1/2); the discriminator's
step on real B vs G(x) with the loss halved; then one backward of
    lambda_gan * GAN(G(x)) + mean(NCE(x, G(x)), NCE(y, G(y)))        (CUT: nce_idt)
    lambda_gan * GAN(G(x)) + NCE(x, G(x))                             (FastCUT)
where NCE(x, G(x)) = lambda_nce * mean over the tapped layers of the mean PatchNCE loss
(gen.losses.patchnce), and one Adam steps the generator and the projection heads on it.
Flip equivariance: the features of G(flip(x)) are flipped back before they are compared with the
features of x at the same locations, so G must commute with the flip.
"""
from __future__ import annotations

from pathlib import Path

import torch

from gen.config import parse_diffaugment, parse_nce_layers
from gen.losses import GANLoss
from gen.losses.diffaugment import DiffAugment
from gen.losses.patchnce import PatchNCEHeads, patchnce_loss
from gen.models import init_weights
from gen.models.layers import pad_to_multiple
from gen.pipelines import UnpairedTranslationPipeline, export_copy

from .base import Trainer
from .builders import adam, build_discriminator, build_generator, init_kind
from .gan_step import discriminator_step, generator_gan_term
from .generator_ema import GeneratorEMA
from .init_from import export_meta, load_translation


class CUTTrainer(Trainer):
    method = "cut"

    def build(self) -> None:
        c, d = self.cfg.cut, self.cfg.data
        g = build_generator(self.cfg, d.channels_a, d.channels_b)
        layers = parse_nce_layers(c.nce_layers) if c.nce_layers else g.default_feature_layers
        try:
            self.nce_layers = g.check_feature_layers(layers)
            channels = g.feature_channels(self.nce_layers)
        except ValueError as err:
            given = (f"={c.nce_layers!r}" if c.nce_layers
                     else f" (unset: {self.cfg.model.generator}'s default)")
            raise ValueError(f"config key cut.nce_layers{given}: {err}") from None
        heads = PatchNCEHeads(channels, c.head_width)
        heads = init_weights(heads, self.cfg.model.init_gain, init_kind(self.cfg))
        disc = build_discriminator(self.cfg, d.channels_b)
        self.models = {"generator": g, "nce_heads": heads, "discriminator": disc}
        # The reference steps the heads with an Adam of their own (optimizer_F) of the same lr and betas
        # right after the generator's: one Adam over both is that update (Adam's state is per
        # parameter), and keeps one fp16 loss scale for the one backward that feeds both.
        self.optimizers = {"generator": adam(self.cfg, g, heads), "discriminator": adam(self.cfg, disc)}
        self.schedulers = {k: self.lr_schedule(o) for k, o in self.optimizers.items()}
        self.gan_loss = GANLoss(c.gan_mode)
        policy = self.cfg.train.diffaugment
        self.augment = DiffAugment(parse_diffaugment(policy)) if policy else None
        self.lambda_nce, self.nce_idt = c.resolved("lambda_nce"), c.resolved("nce_idt")
        self.flip = c.resolved("flip_equivariance")
        if self.cfg.model.init_from:
            self.init_from(self.cfg.model.init_from)
        decay = self.cfg.train.ema_decay  # after init_from: the average starts from the loaded weights
        self.ema = GeneratorEMA(self, ["generator"], decay) if decay else None

    def init_from(self, source: str) -> None:
        """The generator (and discriminator, if the export has one) of a CUT or single-direction
        translation export; the projection heads start fresh."""
        kind = export_meta(source).get("kind")
        if kind not in ("unpaired_translation", "translation"):
            raise ValueError(f"model.init_from={source}: a {kind} export cannot start a CUT run (a CUT or "
                             "pix2pix-style export, or `python -m gen.convert reference` of a CUT "
                             "checkpoint)")
        nets = {"generator": self.models["generator"], "discriminator": self.models["discriminator"]}
        load_translation(source, nets, {n: n for n in nets}, self.accelerator.print)
        self.accelerator.print("model.init_from: the PatchNCE heads start fresh")

    def on_device(self) -> None:
        if self.ema:
            self.ema.to(self.device)

    def nce(self, source: torch.Tensor, translated: torch.Tensor, flipped: bool) -> torch.Tensor:
        """lambda_nce * the PatchNCE loss of G(source) = `translated` against `source`, averaged over
        locations, images and layers."""
        c = self.cfg.cut
        g, heads = self.models["generator"], self.models["nce_heads"]
        pad = self.forward_features
        with torch.no_grad():  # the keys are detached in the loss: no graph needed for them
            keys, where = heads(pad(g, source), c.num_patches)
        queries = pad(g, translated, flipped)
        if flipped:  # back to the source's orientation, so a location means the same pixel in both
            queries = [q.flip(-1) for q in queries]
        queries, _ = heads(queries, c.num_patches, where)
        losses = [patchnce_loss(q, k, c.nce_t).mean() for q, k in zip(queries, keys)]
        return self.lambda_nce * torch.stack(losses).mean()

    def forward_features(self, g, x: torch.Tensor, flipped: bool = False) -> list[torch.Tensor]:
        """The generator's taps through its prepared module (DDP / autocast); with data.preprocess=none
        padded to its multiple first (the taps then include the padding): on the right and bottom,
        or for a `flipped` image on the left, so that its taps flipped back have the padding where
        the source's have it and a location names the same pixel in both."""
        if self.cfg.data.preprocess == "none":
            multiple = self.unwrap("generator").multiple
            x = pad_to_multiple(x.flip(-1), multiple)[0].flip(-1) if flipped else (
                pad_to_multiple(x, multiple)[0])
        return g(x, feature_layers=self.nce_layers)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg.cut
        real_a, real_b = batch["A"], batch["B"]  # (B, Ca, H, W), (B, Cb, H, W) in [-1, 1]
        n = real_a.shape[0]
        real = torch.cat([real_a, real_b]) if self.nce_idt else real_a
        # one draw per step from the checkpointed CPU RNG (a host bool, no device sync)
        flipped = self.flip and bool(torch.rand(()) < 0.5)
        if flipped:
            real = real.flip(-1)
        fake = self.forward("generator", real)
        fake_b = fake[:n]
        losses = discriminator_step(self, "discriminator", self.gan_loss, real_b, fake_b,
                                    augment=self.augment)
        terms = {}
        if c.lambda_gan > 0:
            terms["G_GAN"] = c.lambda_gan * generator_gan_term(self, "discriminator", self.gan_loss, fake_b,
                                                               self.augment)
        if self.lambda_nce > 0:
            terms["NCE"] = self.nce(real_a, fake_b, flipped)
            if self.nce_idt:
                terms["NCE_Y"] = self.nce(real_b, fake[n:], flipped)
        nce = (terms["NCE"] + terms["NCE_Y"]) / 2 if "NCE_Y" in terms else terms.get("NCE", 0.0)
        loss_g = terms.get("G_GAN", 0.0) + nce
        self.backward(loss_g, "generator")  # one backward: the generator's and the heads' gradients
        skipped = self.skipped_updates
        self.step_optimizer("generator")
        if self.ema:
            self.ema.step(skipped)
        return dict(losses, **terms, G=loss_g)

    def pipeline(self) -> UnpairedTranslationPipeline:
        net = export_copy(self.unwrap("generator"))
        if self.ema:
            net = self.ema.into("generator", net)
        label = "fastcut" if self.cfg.cut.mode == "fastcut" else "cut"
        return UnpairedTranslationPipeline(net, label, self.cfg.cut.inference, "AtoB", self.cfg.run.seed,
                                           self.cfg.data.max_16bit)

    def export(self, path: Path) -> None:
        self.pipeline().save_pretrained(path)
        self.unwrap("discriminator").save_pretrained(path / "discriminator")  # for model.init_from
