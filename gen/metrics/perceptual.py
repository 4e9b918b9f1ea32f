"""LPIPS (Zhang et al. 2018) through the `lpips` package, without downloads.

The package ships its linear calibration layers, but the backbone (AlexNet / VGG / SqueezeNet
ImageNet weights) comes from torchvision's cache. When those weights are not in the local cache
the metric is reported as unavailable instead of downloading; `random_backbone=True` builds the
same computation on random backbone weights (for testing the code path only, not for scoring).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                  "squeeze": "squeezenet1_1-b8a52dc0.pth"}


class MetricUnavailable(RuntimeError):
    """A metric that needs weights which are not on this machine."""


def cached_backbone(net: str = "alex") -> Optional[Path]:
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose one of {sorted(BACKBONE_FILES)}")
    path = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    return path if path.is_file() else None


class LPIPS:
    """lpips(pred, target) -> per-image distances; pred, target: (B, 3, H, W) in [-1, 1]."""

    def __init__(self, net: str = "alex", random_backbone: bool = False):
        import lpips
        if not random_backbone and cached_backbone(net) is None:
            raise MetricUnavailable(f"LPIPS unavailable: the {net} backbone weights are not cached at "
                                    f"{Path(torch.hub.get_dir()) / 'checkpoints' / BACKBONE_FILES[net]} "
                                    "and nothing is downloaded at run time")
        self.model = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False).eval()
        self.random_backbone = random_backbone

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> list[float]:
        return self.model(pred.float(), target.float(), normalize=False).flatten().tolist()


def try_lpips(net: str = "alex") -> tuple[Optional[LPIPS], str]:
    """(metric, '') when the backbone is cached, else (None, the reason) for reports to print."""
    try:
        return LPIPS(net), ""
    except MetricUnavailable as err:
        return None, str(err)
