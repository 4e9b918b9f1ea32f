"""sRGB <-> CIE Lab (D65, 2 degree observer) in torch, batched and differentiable, on any device.

Why not scikit-image's rgb2lab/lab2rgb directly: the conversion runs inside every training step
(images arrive as RGB batches on the accelerator), so it must be a tensor op. It follows
scikit-image's constants and is tested against skimage.color.rgb2lab / lab2rgb
(tests/test_colorization.py); L in [0, 100], a and b roughly in [-110, 110].
"""
from __future__ import annotations

import torch

# sRGB (D65) -> XYZ, and the D65 white point (as in scikit-image).
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_CONSTANTS = {
    "rgb_to_xyz": _RGB_TO_XYZ,
    "xyz_to_rgb": torch.linalg.inv(_RGB_TO_XYZ),
    "white": _WHITE.view(1, 3, 1, 1),
}
_EPS, _KAPPA = 0.008856, 7.787
_cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}


def _const(name: str, like: torch.Tensor) -> torch.Tensor:
    """A conversion constant on `like`'s device and dtype, copied there once per process (a copy per
    call would be a blocking host-to-device transfer in every colorization step on a GPU)."""
    key = (name, like.device, like.dtype)
    if key not in _cache:
        _cache[key] = _CONSTANTS[name].to(like)
    return _cache[key]


def _apply(matrix: str, x: torch.Tensor) -> torch.Tensor:
    """A named (3, 3) matrix on the channel dim of (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", _const(matrix, x), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) Lab."""
    rgb = rgb.clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply("rgb_to_xyz", linear) / _const("white", rgb)
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    L = torch.where(xyz[:, 1:2] > _EPS, 116 * f[:, 1:2] - 16, 903.3 * xyz[:, 1:2])
    return torch.cat([L, 500 * (f[:, 0:1] - f[:, 1:2]), 200 * (f[:, 1:2] - f[:, 2:3])], dim=1)


def lab_to_linear_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) Lab -> linear-light RGB, unclipped (outside [0, 1] = outside the sRGB gamut)."""
    L, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (L + 16) / 116
    f = torch.cat([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / _KAPPA) * _const("white", lab)
    return _apply("xyz_to_rgb", xyz)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) Lab -> (B, 3, H, W) sRGB in [0, 1] (out-of-gamut colours clipped)."""
    linear = lab_to_linear_rgb(lab).clamp(0, 1)
    rgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear
    )
    return rgb.clamp(0, 1)


def split_lab(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB batch in [-1, 1] -> (L normalised to [-1, 1] (B, 1, H, W), ab (B, 2, H, W) in Lab units)."""
    lab = rgb_to_lab((images.float() + 1) / 2)
    return lab[:, :1] / 50 - 1, lab[:, 1:]


def join_lab(l_norm: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(L in [-1, 1], ab) -> RGB in [-1, 1]."""
    return lab_to_rgb(torch.cat([(l_norm.float() + 1) * 50, ab.float()], dim=1)) * 2 - 1
