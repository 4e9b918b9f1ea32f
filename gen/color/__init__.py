"""Colour for Zhang-style colorization: Lab conversion (lab.py) and the quantised ab space (bins.py)."""
from .bins import (
    annealed_mean,
    gamut_bins,
    load_bins,
    nearest_bin,
    nearest_bins,
    rebalance_weights,
    smooth_prior,
    soft_cross_entropy,
    soft_encode,
    zhang_bins,
    zhang_prior,
)
from .lab import join_lab, lab_to_rgb, rgb_to_lab, split_lab

__all__ = ["annealed_mean", "gamut_bins", "load_bins", "nearest_bin", "nearest_bins", "rebalance_weights",
           "smooth_prior", "soft_cross_entropy",
           "soft_encode", "zhang_bins", "zhang_prior", "join_lab", "lab_to_rgb", "rgb_to_lab", "split_lab"]
