"""Colorization (Zhang, Isola, Efros, ECCV 2016) and its baselines in one harness.

Input: the L channel (normalised to [-1, 1]); target: ab. Heads on the shared U-Net:
- classification: Q logits per pixel (Q = number of ab bins), trained with cross-entropy against
  soft-encoded targets (the 5 nearest bins, kept sparse), each pixel weighted by the rebalancing
  weight of its nearest bin (Zhang eq. 2-4); decoded by the annealed mean. By default at full
  resolution (the U-Net's decoder with skips gives it for the price of its last layers);
  `colorization.output_stride=4` predicts at 1/4 resolution as Zhang et al. do (their VGG-style net
  has no decoder), which is what makes 256x256 batches of 32 fit in memory.
- l2 / l1: ab regression (Zhang's Table 1 dense-prediction baseline).
- gan: pix2pix-style L -> ab, L1 (x lambda_l1) + conditional PatchGAN on (L, ab).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from gen.color import (
    load_bins,
    nearest_bin,
    rebalance_weights,
    smooth_prior,
    nearest_bins,
    soft_cross_entropy,
    split_lab,
    zhang_prior,
)
from gen.cache import Cache
from gen.losses import GANLoss
from gen.config import parse_diffaugment
from gen.losses.diffaugment import DiffAugment
from gen.methods import validation
from gen.pipelines import export_copy
from gen.pipelines.colorization import AB_SCALE, ColorizationPipeline

from .base import Trainer
from .builders import adam, build_discriminator, build_generator
from .generator_ema import GeneratorEMA
from .init_from import load_translation
from .gan_step import discriminator_step, generator_gan_term, pair

PRIOR_FILE = "color_prior.json"


def empirical_prior(dataset, centres: torch.Tensor, max_images: int, sigma: float) -> np.ndarray:
    """Smoothed distribution of the nearest ab bins over the pixels of up to `max_images` images."""
    counts = torch.zeros(len(centres), dtype=torch.float64)
    n = min(max_images, len(dataset))
    for i in range(n):
        _, ab = split_lab(dataset[i]["image"][None])
        counts += torch.bincount(nearest_bin(ab, centres).flatten(), minlength=len(centres)).double()
    return smooth_prior(counts.numpy(), centres.double().numpy(), sigma)


def prior_cache(path: Path, dataset, bins: np.ndarray, max_images: int, sigma: float, log=print) -> Cache:
    """The cache of `empirical_prior(dataset, bins, max_images, sigma)`, keyed by the files it reads
    (the first max_images of the dataset's) and everything that shapes their pixels and the counts."""
    n = min(max_images, len(dataset))
    bins_digest = hashlib.sha256(np.ascontiguousarray(bins, dtype=np.float64).tobytes()).hexdigest()[:16]
    settings = {"version": 2, "images": n, "sigma": sigma, "channels": dataset.channels,
                "max_16bit": dataset.max_16bit, "train_crops_seed": dataset.seed if dataset.train else None,
                **dataclasses.asdict(dataset.geometry), "bins": bins_digest}
    return Cache(path, "colorization prior", {"images": dataset.files[:n]}, settings, log)


class ColorizationTrainer(Trainer):
    method = "colorization"

    @property
    def head(self) -> str:
        return "classification" if self.cfg.colorization.loss == "classification" else "regression"

    def build(self) -> None:
        c = self.cfg.colorization
        self.bins = load_bins(c.bins, c.bin_grid)
        self.centres = torch.from_numpy(self.bins).float().to(self.device)
        unet = self.cfg.model.generator.startswith("unet")
        if c.output_stride != 1 and (self.head != "classification" or not unet):
            raise ValueError(f"config key colorization.output_stride={c.output_stride} is for the "
                             f"classification head on a U-Net generator (got colorization.loss={c.loss!r}, "
                             f"model.generator={self.cfg.model.generator!r})")
        if c.output_stride != 1 and self.cfg.data.preprocess == "none":
            # any-size batches would leave partial blocks at the borders; inference takes any size
            raise ValueError(f"config key colorization.output_stride={c.output_stride} trains on crops: "
                             "set data.preprocess to crop or resize_and_crop (sampling still takes any size)")
        if self.head == "classification":
            stride = {"output_stride": c.output_stride} if c.output_stride != 1 else {}
            net = build_generator(self.cfg, 1, len(self.bins), out_activation="none", **stride)
            weights = self.class_weights() if c.rebalance else np.ones(len(self.bins))
            self.weights = torch.from_numpy(weights).float().to(self.device)
        else:
            net = build_generator(self.cfg, 1, 2, out_activation="tanh" if c.loss == "gan" else "none")
        self.models = {"generator": net}
        self.optimizers = {"generator": adam(self.cfg, net)}
        if c.loss == "gan":
            d = build_discriminator(self.cfg, 3)
            self.models["discriminator"], self.optimizers["discriminator"] = d, adam(self.cfg, d)
            self.gan_loss = GANLoss(c.gan_mode)
        # DiffAugment of the (L, ab) pairs D judges: one transform for both parts
        policy = self.cfg.train.diffaugment
        self.augment = DiffAugment(parse_diffaugment(policy), (1, 2)) if policy else None
        if self.cfg.model.init_from:  # a colorization export of the same head (fine-tuning)
            load_translation(self.cfg.model.init_from, {"generator": net, "discriminator": self.models.get(
                "discriminator")}, {"generator": "network", "discriminator": "discriminator"},
                self.accelerator.print, kind="colorization")
        self.schedulers = {k: self.lr_schedule(o) for k, o in self.optimizers.items()}
        decay = self.cfg.train.ema_decay  # after init_from: the average starts from the loaded weights
        self.ema = GeneratorEMA(self, ["generator"], decay) if decay else None

    def class_weights(self) -> np.ndarray:
        """Rebalancing weights from the prior, computed once per run and cached in the run directory."""
        c = self.cfg.colorization
        if c.prior == "imagenet":
            if c.bins != "zhang313":
                raise ValueError("colorization.prior=imagenet is the prior over the 313 zhang313 bins; "
                                 f"with colorization.bins={c.bins!r} use prior=data")
            return rebalance_weights(zhang_prior(), c.mix)
        cache = prior_cache(self.run_dir / PRIOR_FILE, self.train_set, self.bins, c.prior_images, c.sigma,
                            self.accelerator.print)
        main = self.accelerator.is_main_process
        fresh = cache.valid(quiet=not main)
        # Every process has looked before the main one may write: all take the same branch below.
        self.accelerator.wait_for_everyone()
        if not fresh:
            if main:
                prior = empirical_prior(self.train_set, self.centres.cpu(), c.prior_images, c.sigma)
                cache.write(lambda tmp: tmp.write_text(json.dumps({"prior": prior.tolist()})))
            self.accelerator.wait_for_everyone()
        prior = np.asarray(json.loads(cache.path.read_text())["prior"])
        return rebalance_weights(prior, c.mix)

    def predict_ab(self, l_norm: torch.Tensor) -> torch.Tensor:
        """Network output -> ab (B, 2, H, W), for the regression heads."""
        return self.forward("generator", l_norm).float() * AB_SCALE

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg.colorization
        with torch.no_grad():
            l_norm, ab = split_lab(batch["image"])  # (B, 1, H, W) in [-1, 1], (B, 2, H, W)
        if self.head == "classification":
            # sparse soft targets: K indices and weights per pixel, not a dense (B, Q, H, W) tensor
            idx, wts = nearest_bins(ab, self.centres, c.neighbours, c.sigma)
            loss = soft_cross_entropy(self.forward("generator", l_norm), idx, wts, self.weights,
                                      stride=c.output_stride)
            self.backward(loss, "generator")
            self.step_generator()
            return {"CE": loss}
        fake_ab = self.predict_ab(l_norm)
        losses = {}
        if c.loss == "gan":  # the conditional discriminator judges (L, ab / AB_SCALE)
            real, fake = pair(l_norm, ab / AB_SCALE), pair(l_norm, fake_ab / AB_SCALE)
            losses.update(discriminator_step(self, "discriminator", self.gan_loss, real, fake,
                                             augment=self.augment))
        diff = (fake_ab - ab) / AB_SCALE
        if c.loss == "l2":
            loss = diff.pow(2).mean()
            losses["L2"] = loss
        else:
            loss = diff.abs().mean()
            losses["L1"] = loss
            if c.loss == "gan":
                fake = pair(l_norm, fake_ab / AB_SCALE)
                g_gan = generator_gan_term(self, "discriminator", self.gan_loss, fake, self.augment)
                losses["G_GAN"] = g_gan
                loss = c.lambda_l1 * loss + c.lambda_gan * g_gan
        self.backward(loss, "generator")
        self.step_generator()
        losses["G"] = loss
        return losses

    def on_device(self) -> None:
        if self.ema:
            self.ema.to(self.device)

    def step_generator(self) -> None:
        skipped = self.skipped_updates
        self.step_optimizer("generator")
        if self.ema:
            self.ema.step(skipped)

    def pipeline(self) -> ColorizationPipeline:
        c = self.cfg.colorization
        variant = {"classification": f"classification, {'rebalanced' if c.rebalance else 'no rebalancing'}",
                   "l2": "L2 regression", "l1": "L1 regression", "gan": "L1 + cGAN"}[c.loss]
        net = export_copy(self.unwrap("generator"))
        return ColorizationPipeline(self.ema.into("generator", net) if self.ema else net, self.head,
                                    self.bins if self.head == "classification" else None, c.temperature,
                                    method=f"colorization ({variant})")

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        if self.val_set is None:
            return {}
        # bins: the training bins score regression heads too (their exports carry none), as in evaluate
        return validation(self.pipeline(), self.val_set, self.validation_items(per_batch=4), grid_rows=8,
                          bins=self.bins)

    def export(self, path: Path) -> None:
        self.pipeline().save_pretrained(path)
        if "discriminator" in self.models:  # kept for fine-tuning (model.init_from)
            self.unwrap("discriminator").save_pretrained(path / "discriminator")
