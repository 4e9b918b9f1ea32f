"""Class-index label maps: validation and rendering to RGB."""
from __future__ import annotations

from typing import Optional

import numpy as np

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: the PASCAL VOC bit-interleaved colour map, skipping VOC's black 0."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for k in range(num_classes):
        c, r, g, b = k + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[k] = (r, g, b)
    return colours


def to_class_indices(raw: np.ndarray, num_classes: int, first_label: int = 0,
                     ignore_label: Optional[int] = None, name: str = "label map") -> np.ndarray:
    """Raw stored ids -> class indices 0..num_classes-1 (ignored pixels -> IGNORE_INDEX)."""
    idx = raw - first_label
    ignored = raw == ignore_label if ignore_label is not None else np.zeros(raw.shape, bool)
    bad = (~ignored) & ((idx < 0) | (idx >= num_classes))
    if bad.any():
        values = sorted(set(np.unique(raw[bad]).tolist()))[:10]
        raise ValueError(f"{name}: label values {values} are outside the allowed range "
                         f"{first_label}..{first_label + num_classes - 1}"
                         + (f" (ignore_label={ignore_label})" if ignore_label is not None else "")
                         + "; check data.num_classes, data.first_label and data.ignore_label")
    return np.where(ignored, IGNORE_INDEX, idx)


def label_to_rgb(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8; ignored pixels are black."""
    out = np.zeros(label.shape + (3,), dtype=np.uint8)
    valid = label >= 0
    out[valid] = palette(num_classes)[label[valid]]
    return out


def label_image_to_tensor(img, num_classes: int, first_label: int = 0, ignore_label: Optional[int] = None,
                          name: str = "input label map"):
    """A label-map image as training rendered it: (1, 3, H, W) in [-1, 1].

    Single-channel images (palette 'P' indices, 8/16-bit ids) are read as raw label ids, whatever
    colours the file's own palette shows; RGB images must use gen's palette (black = ignored), and
    any other colour is a ValueError naming it, since it belongs to no class."""
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        idx = to_class_indices(np.asarray(img).astype(np.int64), num_classes, first_label, ignore_label, name)
    else:
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        codes = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
        colours = palette(num_classes).astype(np.int64)
        known = dict(
            zip((colours[:, 0] << 16 | colours[:, 1] << 8 | colours[:, 2]).tolist(), range(num_classes))
        )
        known[0] = IGNORE_INDEX
        unknown = sorted(set(np.unique(codes).tolist()) - set(known))
        if unknown:
            shown = [f"#{c:06x}" for c in unknown[:5]]
            raise ValueError(
                f"{name}: colours {shown} are not in the class palette this model was trained with "
                f"({num_classes} classes); pass the label map as a class-index image (palette or "
                "grayscale PNG of label ids) or render it with gen's palette"
            )
        lut = np.vectorize(known.get, otypes=[np.int64])
        idx = lut(codes)
    return label_to_tensor(idx, num_classes)[None]


def label_to_tensor(label, num_classes: int):
    """(H, W) class indices (tensor or array) -> (3, H, W) float tensor in [-1, 1]; ignored pixels black."""
    import torch
    arr = label.cpu().numpy() if hasattr(label, "cpu") else np.asarray(label)
    return torch.from_numpy(label_to_rgb(arr, num_classes)).permute(2, 0, 1).float() / 127.5 - 1.0
