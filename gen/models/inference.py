"""Inference semantics made explicit: 'eval' vs the pix2pix paper's 'dropout as noise'."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

INFERENCE_MODES = ("paper", "eval")


@contextlib.contextmanager
def inference_semantics(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """Set `model`'s layers for inference and put them back afterwards (layer modes only: unlike
    torch.inference_mode, autograd is untouched; wrap the call in torch.no_grad()).

    eval:  dropout off, batch norm uses its running statistics.
    paper: Isola et al. 2017 §3.3: dropout stays on (the generator's noise) and batch norm uses
           the statistics of the test batch; running statistics are neither used nor updated.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}; choose one of {list(INFERENCE_MODES)}")
    was_training = model.training
    model.eval()
    saved = []
    if mode == "paper":
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                # With no running buffers an eval-mode BatchNorm normalises by batch statistics.
                saved.append((m, m.running_mean, m.running_var))
                m.running_mean, m.running_var = None, None
    try:
        yield model
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var
        model.train(was_training)
