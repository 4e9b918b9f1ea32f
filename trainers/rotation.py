"""Self-supervised pre-training by rotation prediction (Gidaris, Singh and Komodakis, ICLR 2018):
the encoder of a U-Net or an FCN learns to tell 0/90/180/270-degree rotations of unlabelled photos,
all four rotations of each image in the same mini-batch. A segmenter of the same architecture then
starts its encoder from these weights with `model.init_from=RUN_DIR` -- useful here, where no
pretrained (ImageNet) weights can be downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gen.losses.dense import cross_entropy
from gen.models import UNet
from gen.models.fcn import FCN
from gen.models.layers import GlobalAvgPool

from .base import Trainer
from .builders import build_generator
from .pretrained_encoder import encoder_of


class RotationNet(nn.Module):
    """A U-Net's or FCN's encoder levels + a 4-way head. x: (B, 3, H, W) -> logits (B, 4)."""

    def __init__(self, net: UNet | FCN):
        super().__init__()
        self.encoder = encoder_of(net)  # shared with the network, which is what gets exported
        self.fcn = isinstance(net, FCN)
        width = net.config.ngf * 8 if self.fcn else net.config.channels[-1]
        self.head = nn.Sequential(nn.LeakyReLU(0.2), GlobalAvgPool(), nn.Flatten(), nn.Linear(width, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.encoder:
            x = level(x) if self.fcn else level(x)[0]
        return self.head(x)


def four_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, S, S) -> (4B, C, S, S) rotated by k * 90 degrees, and labels k (4B,)."""
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class RotationTrainer(Trainer):
    method = "rotation"

    def build(self) -> None:
        self.net = build_generator(self.cfg, 3, 3)
        self.use_single_model("rotation", RotationNet(self.net))

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, y = four_rotations(batch["input"])
        logits = self.models["rotation"](x)
        loss = cross_entropy(logits, y)
        self.backward(loss, "rotation")
        self.step_optimizer("rotation")
        return {"CE": loss, "acc": (logits.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        if self.val_set is None:
            return {}
        net = self.unwrap("rotation").eval()
        x = torch.stack([self.val_set[i]["input"] for i in self.validation_items(per_batch=4)])
        x = x.to(self.device)
        x, y = four_rotations(x)
        acc = (net(x).argmax(1) == y).float().mean().item()
        net.train()
        return {"rotation_acc": acc}

    def export(self, path: Path) -> None:
        self.net.save_pretrained(path / "encoder")
