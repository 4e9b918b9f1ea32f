"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) between real and generated images.

Both come from torchmetrics, whose Inception network is torch-fidelity's port of the TensorFlow FID
Inception (the weights behind the published FID/KID numbers; clean-fid and torch-fidelity use the
same ones). torchmetrics was picked because it is the metrics library the diffusers/Lightning
ecosystem already uses, it runs on the accelerator's device, and it takes a feature extractor as a
module (so the code path is testable with random weights, offline). Features are computed once per
image and the FID/KID math is torchmetrics' own, fed the cached features.

Nothing is downloaded: without the Inception weights in torch's hub cache the metrics are reported
as unavailable, with the reason. FID with fewer images than feature dimensions (2048) is biased
upward; compare runs at equal image counts.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .perceptual import MetricUnavailable

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset
CHUNK = 64  # images per Inception forward


def cached_inception() -> Optional[Path]:
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


class _Features(nn.Module):
    """Hands already-extracted features (N, d) to torchmetrics unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def inception_extractor() -> nn.Module:
    """torchmetrics' FID Inception (uint8 (N, 3, H, W) -> (N, 2048)); MetricUnavailable if not cached."""
    if cached_inception() is None:
        raise MetricUnavailable(
            f"FID/KID unavailable: the Inception weights are not cached at "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_FILE} and nothing is downloaded at "
            "run time")
    from torchmetrics.image.fid import NoTrainInceptionV3

    # antialias=False: torch-fidelity's TensorFlow-1-style bilinear resize to 299, as the published FIDs
    # (torchmetrics' own default resizes with antialiasing, which shifts FID for non-299 px images)
    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], antialias=False)


class InceptionDistances:
    """Collects features of real images once and of each run's outputs; `scores(run)` -> FID, KID.

    extractor: uint8 (N, 3, H, W) in 0..255 -> (N, d) features; default torchmetrics' Inception.
    Images go in as (B, C, H, W) in [-1, 1] with C = 1 (repeated to RGB) or 3.
    """

    def __init__(self, extractor: Optional[nn.Module] = None, device: Optional[torch.device | str] = None):
        self.device = torch.device(device or "cpu")
        self.extractor = (extractor or inception_extractor()).to(self.device).eval()
        self.real: list[torch.Tensor] = []
        self.fake: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise ValueError(f"FID/KID need 1- or 3-channel images, got {images.shape[1]} channels")
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        # in chunks: Inception at 299 px holds ~16 MB of activations per image; features are kept in the
        # extractor's own dtype (float32: 8 KB per image) and widened to float64 only to score
        return torch.cat([self.extractor(chunk.to(self.device)).cpu() for chunk in x.split(CHUNK)])

    def fresh(self) -> "InceptionDistances":
        """An empty accumulator sharing this one's extractor (features of one evaluation only)."""
        return InceptionDistances(self.extractor, self.device)

    def add_real(self, images: torch.Tensor) -> None:
        self.real.append(self._features(images))

    def add_fake(self, run: str, images: torch.Tensor) -> None:
        self.fake.setdefault(run, []).append(self._features(images))

    def report(self, run: str, unavailable: str = "") -> dict:
        """scores(run), or {"FID": reason} when the metric is unavailable or had too few images."""
        if unavailable:
            return {"FID": unavailable, "KID": unavailable}
        try:
            return self.scores(run)
        except ValueError as err:
            return {"FID": str(err), "KID": str(err)}

    def scores(self, run: str) -> dict[str, float | int]:
        """{"FID", "KID", "KID_std", "FID_images"}; KID's mean and sd over 50 random subsets of
        min(1000, n / 2) images, n the smaller of the real and generated counts (subsets of all n
        images would all be the same set, and their sd 0)."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        real, fake = torch.cat(self.real).double(), torch.cat(self.fake[run]).double()
        if min(len(real), len(fake)) < 2:
            raise ValueError(f"FID/KID need at least 2 real and 2 generated images (got {len(real)}, "
                             f"{len(fake)})")
        d = real.shape[1]
        fid = FrechetInceptionDistance(feature=_Features(d), reset_real_features=False)
        with warnings.catch_warnings():  # "KID keeps every feature in memory": these are already in memory
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=_Features(d), subsets=50,
                                          subset_size=max(2, min(1000, min(len(real), len(fake)) // 2)))
        for metric in (fid, kid):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        with torch.random.fork_rng():  # KID's random subsets: the same figures on every call
            torch.manual_seed(0)
            kid_mean, kid_std = kid.compute()
        return {"FID": float(fid.compute()), "KID": float(kid_mean), "KID_std": float(kid_std),
                "FID_images": min(len(real), len(fake))}


def try_inception_distances(device=None, given: Optional[InceptionDistances] = None
                            ) -> tuple[Optional[InceptionDistances], str]:
    """(an empty accumulator on `given`'s extractor, or on the Inception metric, '') when there is
    one, else (None, the reason). Never `given` itself: features an earlier evaluation added to it
    would be scored with this one's."""
    if given is not None:
        return given.fresh(), ""
    try:
        return InceptionDistances(device=device), ""
    except MetricUnavailable as err:
        return None, str(err)
