"""Losses of the dense predictors (segmentation, rotation pre-training)."""
from __future__ import annotations

import torch


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not `ignore_index` (0 when all are ignored).

    logits: (B, K) or (B, K, H, W), any float dtype (computed in fp32); target: (B,) or (B, H, W)
    class ids in 0..K-1 or ignore_index. Equal to F.cross_entropy(logits, target, ignore_index=...),
    written with log_softmax + gather because CUDA has no deterministic NLL-loss kernel (gather's
    backward has one), so train.deterministic=true works on a GPU.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    valid = target != ignore_index
    picked = log_p.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)  # (B, ...) log p(target)
    return -(picked * valid).sum() / valid.sum().clamp_min(1)
