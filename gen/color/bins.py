"""Zhang et al.'s quantised ab space: bins, soft-encoded targets, class rebalancing, annealed mean.

Q follows the bins everywhere. The default bins are the paper's 313 centres (grid 10), shipped in
gen/color/data with attribution; `gamut_bins(grid)` derives bins in code for any grid size with
this rule: an ab cell centre is kept when, for some L in 0, 1, ..., 100, the Lab colour (L, a, b)
maps to linear sRGB with every channel in [0, 1] (no clipping). At grid 10 that keeps 225 bins, fewer than
313: the authors' exact rule is not published (their bins also cover colours of out-of-sRGB ImageNet
images).
"""
from __future__ import annotations

from importlib import resources
from typing import Optional

import numpy as np
import torch

from .lab import lab_to_linear_rgb


def zhang_bins() -> np.ndarray:
    """(313, 2) float64 ab centres of Zhang et al. 2016."""
    with resources.files("gen.color").joinpath("data/pts_in_hull.npy").open("rb") as f:
        return np.load(f).astype(np.float64)


def zhang_prior() -> np.ndarray:
    """(313,) the paper's ImageNet prior over `zhang_bins()`."""
    with resources.files("gen.color").joinpath("data/prior_probs.npy").open("rb") as f:
        return np.load(f).astype(np.float64)


def gamut_bins(grid: int = 10, extent: int = 110) -> np.ndarray:
    """(Q, 2) centres of the grid cells (a, b multiples of `grid` in [-extent, extent]) that are in
    the sRGB gamut for at least one lightness L in 0..100 (see the module docstring)."""
    axis = np.arange(-extent, extent + 1, grid, dtype=np.float64)
    a, b = np.meshgrid(axis, axis, indexing="ij")
    ab = np.stack([a.ravel(), b.ravel()], axis=1)  # (G, 2)
    L = np.arange(0, 101, dtype=np.float64)
    lab = np.concatenate([np.repeat(L, len(ab))[:, None], np.tile(ab, (len(L), 1))], axis=1)  # (101*G, 3)
    linear = lab_to_linear_rgb(torch.from_numpy(lab).T.reshape(1, 3, len(L), len(ab)))[0]  # (3, L, G)
    in_gamut = ((linear >= 0) & (linear <= 1)).all(dim=0)  # (L, G)
    return ab[in_gamut.any(dim=0).numpy()]


def load_bins(name: str, grid: int = 10) -> np.ndarray:
    if name == "zhang313":
        return zhang_bins()
    if name == "gamut":
        return gamut_bins(grid)
    raise ValueError(f"unknown colour bins {name!r}; choose zhang313 or gamut")


def soft_encode(
    ab: torch.Tensor, centres: torch.Tensor, neighbours: int = 5, sigma: float = 5.0
) -> torch.Tensor:
    """ab (B, 2, H, W) -> soft targets (B, Q, H, W): a Gaussian (sigma, in ab units) over the
    `neighbours` nearest bin centres, each pixel's weights summing to 1."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
    d2 = torch.cdist(flat, centres.float()).pow(2)  # (N, Q)
    near_d2, near_idx = d2.topk(neighbours, dim=1, largest=False)
    weights = torch.softmax(-near_d2 / (2 * sigma ** 2), dim=1)  # normalised Gaussian weights
    z = torch.zeros_like(d2).scatter_(1, near_idx, weights)
    return z.view(b, h, w, -1).permute(0, 3, 1, 2)


def nearest_bins(ab: torch.Tensor, centres: torch.Tensor, neighbours: int = 5, sigma: float = 5.0,
                 chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft encoding kept sparse: ab (B, 2, H, W) -> (indices (B, K, H, W) int64, weights (B, K, H, W)),
    the K = `neighbours` nearest bins, nearest first, and their normalised Gaussian weights (sigma in ab
    units). Equal to `soft_encode`'s non-zeros; memory grows with K, not Q (distances are taken
    `chunk` pixels at a time)."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
    idx, wts = [], []
    for part in flat.split(chunk):
        near_d2, near_idx = torch.cdist(part, centres.float()).pow(2).topk(neighbours, dim=1, largest=False)
        idx.append(near_idx)
        wts.append(torch.softmax(-near_d2 / (2 * sigma ** 2), dim=1))

    def back(t: torch.Tensor) -> torch.Tensor:  # (N, K) -> (B, K, H, W)
        return torch.cat(t).view(b, h, w, neighbours).permute(0, 3, 1, 2)
    return back(idx), back(wts)


def soft_cross_entropy(logits: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                       class_weights: Optional[torch.Tensor] = None, stride: int = 1) -> torch.Tensor:
    """Zhang et al. 2016 eq. 2 and 3 from the sparse targets: -sum_q z_q log softmax(logits)_q per pixel,
    times the rebalancing weight v(z) of its nearest bin, averaged. indices, weights (B, K, H, W) from
    `nearest_bins`; class_weights (Q,) or None. logits (B, Q, H, W), or (B, Q, H/s, W/s) from a head at
    output `stride` s: each target pixel then scores the prediction of its s x s block (the same value
    as nearest-upsampling the logits, without the (B, Q, H, W) tensor; Zhang et al. subsample the
    targets instead, which keeps one pixel in s^2). ValueError if the logits do not tile the targets."""
    b, k, h, w = indices.shape
    s = stride
    if h % s or w % s or tuple(logits.shape[-2:]) != (h // s, w // s):
        raise ValueError(f"logits {tuple(logits.shape[-2:])} do not tile targets {h}x{w} at stride {s}")
    log_p = torch.log_softmax(logits.float(), dim=1)  # (B, Q, h', w'), h' = H / s

    def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C * s * s, H / s, W / s)
        c = t.shape[1]
        t = t.view(b, c, h // s, s, w // s, s).permute(0, 1, 3, 5, 2, 4)
        return t.reshape(b, c * s * s, h // s, w // s)
    idx, wts = (indices, weights) if s == 1 else (blocks(indices), blocks(weights))
    ce = -(wts * log_p.gather(1, idx)).view(b, k, s * s, h // s, w // s).sum(dim=1)  # (B, s*s, h', w')
    if class_weights is not None:
        ce = ce * class_weights[idx.view(b, k, s * s, h // s, w // s)[:, 0]]
    return ce.mean()


def nearest_bin(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """ab (B, 2, H, W) -> (B, H, W) int64 index of the nearest centre."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
    return torch.cdist(flat, centres.float()).argmin(dim=1).view(b, h, w)


def smooth_prior(counts: np.ndarray, centres: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Empirical bin distribution smoothed by a Gaussian (sigma, ab units) over the bin centres."""
    p = counts / max(counts.sum(), 1e-12)
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * sigma ** 2))
    smoothed = kernel @ p
    return smoothed / smoothed.sum()


def rebalance_weights(prior: np.ndarray, mix: float = 0.5) -> np.ndarray:
    """Zhang eq. 4: w proportional to ((1 - mix) * prior + mix / Q)^-1, scaled so E_prior[w] = 1."""
    w = 1.0 / ((1 - mix) * prior + mix / len(prior))
    return w / (prior * w).sum()


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
    """logits (B, Q, H, W) -> ab (B, 2, H, W): the mean of softmax(log p / T). T -> 0 gives the
    mode, T = 1 the mean of the predicted distribution."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p = torch.log_softmax(logits.float(), dim=1)
    annealed = torch.softmax(log_p / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", annealed, centres.float().to(logits.device))
