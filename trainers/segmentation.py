"""Semantic segmentation, the dense predictor the generative methods are compared against: the
shared U-Net with K output logits (no activation) and per-pixel cross-entropy with an ignore index.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gen.data import IGNORE_INDEX
from gen.losses.dense import cross_entropy
from gen.pipelines import SegmentationPipeline, export_copy

from .base import Trainer
from .builders import build_generator
from .pretrained_encoder import encoder_of, load_pretrained_encoder


def _stay_in_eval(module: nn.Module, args) -> None:
    module.training = False


def freeze(module: nn.Module) -> int:
    """Fix `module` as initialised: no gradients, out of the optimizer, and its batch norms normalise
    with their stored statistics instead of updating them ("FCN-32s-fixed", Long et al. 2015 Table 1).
    Returns the number of parameter tensors frozen."""
    params = list(module.parameters())
    for p in params:
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_stay_in_eval)
    return len(params)


class SegmentationTrainer(Trainer):
    method = "segmentation"

    def build(self) -> None:
        d = self.cfg.data
        # photo (data.channels_b) -> K logits
        net = build_generator(self.cfg, d.channels_b, d.num_classes, out_activation="none")
        m = self.cfg.model
        if m.init_from:
            copied = load_pretrained_encoder(net, m.init_from)
            self.accelerator.print(f"encoder initialised from {m.init_from} ({copied} tensors)")
        if m.freeze == "encoder":
            if not m.init_from:
                raise ValueError("model.freeze=encoder keeps the encoder as initialised: set model.init_from "
                                 "to a pre-trained encoder (a rotation run); a frozen random encoder would "
                                 "be all the segmenter sees")
            frozen = freeze(encoder_of(net))
            self.accelerator.print(f"model.freeze=encoder: {frozen} encoder tensors fixed (the rest learns)")
        self.use_single_model("segmenter", net)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        photo, label = batch["input"], batch["label"]  # (B, 3, H, W) in [-1, 1]; (B, H, W) int64
        logits = self.forward("segmenter", photo)  # (B, K, H, W)
        loss = cross_entropy(logits, label, IGNORE_INDEX)
        self.backward(loss, "segmenter")
        self.step_optimizer("segmenter")
        return {"CE": loss}

    def pipeline(self) -> SegmentationPipeline:
        m = self.cfg.model
        net = "FCN-" + m.generator[3:] if m.generator.startswith("fcn") else f"U-Net {m.generator}"
        variant = f"{net}, {m.upsample} upsampling" + (", encoder from rotation" if m.init_from else "")
        return SegmentationPipeline(
            export_copy(self.unwrap("segmenter")),
            self.cfg.data.num_classes,
            self.cfg.data.first_label,
            method=f"segmentation ({variant})",
        )

    def export(self, path: Path) -> None:
        self.pipeline().save_pretrained(path)
