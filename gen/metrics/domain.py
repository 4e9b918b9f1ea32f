"""A small two-domain classifier (e.g. horse vs zebra) to score unpaired translation: the share of
translated images it assigns to the target domain. Trained only on real training images; its
accuracy on real test images is reported beside the score so the score can be trusted or not."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import Geometry, load_images, sample_generator


class DomainClassifier(nn.Module):
    """x: (B, 3, 64, 64) in [-1, 1] -> logits (B, 2); class 0 = domain A, 1 = domain B."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, c = [], 3
        for k in range(4):  # 64 -> 4 after four stride-2 blocks
            layers += [
                nn.Conv2d(c, width * 2**k, 3, padding=1),
                nn.BatchNorm2d(width * 2**k),
                nn.ReLU(True),
                nn.MaxPool2d(2),
            ]
            c = width * 2 ** k
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class ClassifierSettings:
    """Everything that shapes a trained domain classifier (the key of its cache, with the files).
    Images are resized to `size`, trained on random `crop` crops with flips; steps =
    max(min_steps, epochs x images / batch)."""

    size: int = 72
    crop: int = 64
    width: int = 32
    epochs: int = 40
    min_steps: int = 30
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0


class _Resized:
    """The real training images of both domains, read from their files when a batch asks for them
    (nothing held: memory does not grow with the number of training images)."""

    def __init__(self, files: Sequence[Path], size: int):
        self.files, self.geometry = list(files), Geometry("resize_and_crop", size, size, False)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B,) -> (B, 3, size, size) in [-1, 1]."""
        return load_images([self.files[i] for i in idx.tolist()], self.geometry, 3)


def train_domain_classifier(files_a: Sequence[Path], files_b: Sequence[Path],
                            settings: ClassifierSettings = ClassifierSettings(),
                            device: str | torch.device = "cpu") -> DomainClassifier:
    """Adam on random crops of resizes, with flips, of the real images of both domains (read per
    batch); class-balanced batches; trained on `device`."""
    s = settings
    torch.manual_seed(s.seed)
    images = _Resized([*files_a, *files_b], s.size)
    y = torch.cat([torch.zeros(len(files_a), dtype=torch.long), torch.ones(len(files_b), dtype=torch.long)])
    weights = torch.where(y == 0, 1.0 / len(files_a), 1.0 / len(files_b))
    net = DomainClassifier(s.width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    steps = max(s.min_steps, s.epochs * len(y) // s.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps)
    gen = sample_generator(s.seed, 0)
    from tqdm.auto import tqdm
    for _ in tqdm(range(steps), desc="domain classifier (real training images)", dynamic_ncols=True):
        idx = torch.multinomial(weights, s.batch, replacement=True, generator=gen)
        top, left = (int(v) for v in torch.randint(0, s.size - s.crop + 1, (2,), generator=gen))
        batch = images.batch(idx)[:, :, top:top + s.crop, left:left + s.crop]
        flip = torch.rand(s.batch, generator=gen) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch).to(device)
        loss = F.cross_entropy(net(batch), y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def predict_domain(net: DomainClassifier, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """images: (N, 3, H, W) in [-1, 1] -> (N,) predicted domain (0 = A, 1 = B)."""
    device = next(net.parameters()).device
    return torch.cat(
        [net(images[i : i + batch].to(device)).argmax(1).cpu() for i in range(0, len(images), batch)]
    )
