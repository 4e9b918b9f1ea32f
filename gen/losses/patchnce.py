"""PatchNCE (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation", eq. 2-5).

A patch of the translation G(x) should be closer to the patch of x at the same location than to the
patches of x at other locations. Per tapped encoder layer l of the generator: sample S locations
(the same for every image of the batch, and the same in x and in G(x)), project the features there
with a 2-layer MLP head H_l (Linear-ReLU-Linear, 256 units), L2-normalise, and score each query
v = H_l(E_l(G(x)))[s] against its positive v+ = H_l(E_l(x))[s] and the S - 1 negatives
H_l(E_l(x))[s'], s' != s, of the same image, by cross-entropy at temperature tau (0.07):

    loss_s = -log( exp(v.v+ / tau) / (exp(v.v+ / tau) + sum_{s' != s} exp(v.v-_{s'} / tau)) )

The keys (the features of x) are detached, as in the reference: the generator learns through the
queries. The reference appends the S - 1 negatives to the positive with its own s' = s entry set to
-10 / tau (weight e^-143); here the s' = s entry is the positive itself, the same loss to within 1e-60.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


def l2_normalise(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """x / (||x||_2 + eps) along the last dim (the reference's Normalize)."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def sample_locations(feat: torch.Tensor, num_patches: int) -> torch.Tensor:
    """min(num_patches, H * W) distinct flat locations of a (B, C, H, W) map, drawn from torch's RNG on
    its device: (S,) int64."""
    n = feat.shape[2] * feat.shape[3]
    return torch.randperm(n, device=feat.device)[:min(num_patches, n)]


class PatchNCEHeads(nn.Module):
    """One projection head per tapped layer, built from the layers' channel counts (the reference
    builds them at the first forward; built here, the optimizer and checkpoints know them from the start).

    forward(feats, num_patches, locations=None): feats [(B, C_l, H_l, W_l)] -> ([(B, S_l, width)]
    L2-normalised projections, [(S_l,) locations]); `locations` reuses earlier draws (the queries
    take the keys' locations)."""

    def __init__(self, channels: Sequence[int], width: int = 256):
        super().__init__()
        self.channels, self.width = list(channels), width
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width)) for c in self.channels
        )

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int,
                locations: Optional[Sequence[torch.Tensor]] = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(feats) != len(self.mlps):
            raise ValueError(f"{len(feats)} feature maps for {len(self.mlps)} PatchNCE heads")
        out, where = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps)):
            ids = sample_locations(feat, num_patches) if locations is None else locations[i]
            picked = feat.flatten(2)[:, :, ids].transpose(1, 2)  # (B, S, C)
            out.append(l2_normalise(mlp(picked)))
            where.append(ids)
        return out, where


def patchnce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """query, key: (B, S, D) L2-normalised projections at the same S locations of each image ->
    (B, S) loss per location (eq. above; negatives: the other locations of the same image). The key is
    detached. Computed in float32 (logits of 1 / tau = 14 would lose digits in bf16)."""
    if query.shape != key.shape or query.ndim != 3:
        raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} must both be (B, S, D)")
    q, k = query.float(), key.detach().float()
    logits = q @ k.transpose(1, 2) / temperature  # (B, S, S): [b, s, s'] = v_s . v_s' / tau
    # Row s holds the positive on its diagonal and the S - 1 negatives elsewhere: the reference's
    # [positive, negatives] logits, so cross-entropy with the diagonal as the target.
    return torch.logsumexp(logits, dim=-1) - logits.diagonal(dim1=1, dim2=2)
