"""Joint geometry for image pairs: the same resize, crop and flip for A, B (and a label map).

Random parameters are drawn from a `torch.Generator` seeded per sample (see `sample_generator`),
not from the global RNG: augmentation is then a pure function of (seed, sample number), which
makes resumed runs and any number of DataLoader workers reproduce the uninterrupted run exactly.
The pixel work is torchvision's transforms v2 functional API.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF



@dataclass(frozen=True)
class Geometry:
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True


def sample_generator(seed: int, sample_number: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + sample_number) % (2 ** 63))


def _resized_size(geo: Geometry, w: int, h: int, train: bool) -> tuple[int, int]:
    """(width, height) after the resize step."""
    if geo.preprocess == "resize_and_crop":
        side = geo.load_size if train else geo.crop_size
        return side, side
    if geo.preprocess == "scale_width":
        target = geo.load_size if train else geo.crop_size
        return target, max(round(target * h / w), geo.crop_size)
    return w, h


def plan(geo: Geometry, w: int, h: int, train: bool, gen: Optional[torch.Generator], name: str) -> dict:
    """Resize size, crop box and flip for one sample of size (w, h)."""
    rw, rh = _resized_size(geo, w, h, train)
    if geo.preprocess == "none":
        return {"size": (rw, rh), "box": (0, 0, rh, rw), "flip": False}
    c = geo.crop_size
    if c > rw or c > rh:
        raise ValueError(f"crop_size {c} is larger than image {name} ({rw}x{rh} after the "
                         f"'{geo.preprocess}' resize); lower data.crop_size or use resize_and_crop")
    if train:
        top = int(torch.randint(0, rh - c + 1, (1,), generator=gen))
        left = int(torch.randint(0, rw - c + 1, (1,), generator=gen))
        flip = geo.flip and bool(torch.rand(1, generator=gen) < 0.5)
    else:
        top, left, flip = (rh - c) // 2, (rw - c) // 2, False
    return {"size": (rw, rh), "box": (top, left, c, c), "flip": flip}


def apply_image(img: Image.Image, p: dict) -> torch.Tensor:
    """PIL (W, H) -> float tensor (C, h, w) in [-1, 1] with the planned geometry."""
    if img.size != p["size"]:
        img = TF.resize(img, [p["size"][1], p["size"][0]], interpolation=InterpolationMode.BICUBIC)
    img = TF.crop(img, *p["box"])
    if p["flip"]:
        img = TF.horizontal_flip(img)
    return image_tensor(img)


def image_tensor(img: Image.Image) -> torch.Tensor:
    """A converted PIL image (8-bit L / RGB, or mode F on the 0..255 scale) -> contiguous float
    (C, H, W) in [-1, 1]. The one conversion: training, evaluation and sample.py's inputs share it,
    so the same file is the same tensor bit for bit wherever it is read."""
    if img.mode == "F":  # 16-bit data on the 0..255 scale, kept unrounded (image_io.convert_image)
        return ((TF.to_image(img).float() / 255.0).clamp(0, 1) * 2.0 - 1.0).contiguous()
    t = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
    return (t * 2.0 - 1.0).contiguous()


def apply_label(label: np.ndarray, p: dict) -> torch.Tensor:
    """(H, W) int64 -> (h, w) int64 with nearest-neighbour resize and the same crop/flip."""
    t = torch.from_numpy(label)[None]
    if (t.shape[-1], t.shape[-2]) != p["size"]:
        t = TF.resize(t, [p["size"][1], p["size"][0]], interpolation=InterpolationMode.NEAREST_EXACT)
    t = TF.crop(t, *p["box"])
    if p["flip"]:
        t = TF.horizontal_flip(t)
    return t[0]


def to_pil(t: torch.Tensor, bit_depth: int = 8, max_16bit: Optional[float] = None) -> Image.Image:
    """(C, H, W) in [-1, 1] -> PIL RGB or L; one channel with bit_depth 16 -> 16-bit 'I;16' holding
    0..max_16bit (default 65535), the inverse of reading it with that data.max_16bit."""
    if bit_depth == 16:
        if t.shape[0] != 1:
            raise ValueError(
                f"16-bit output is for single-channel images; this output has {t.shape[0]} channels"
            )
        top = max_16bit or 65535.0
        arr = ((t.detach().float().clamp(-1, 1) + 1) * (top / 2.0)).round().clamp(0, 65535).cpu().numpy()
        return Image.fromarray(arr[0].astype(np.uint16))  # mode I;16
    arr = ((t.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).cpu()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), "L")
    return Image.fromarray(arr[:3].permute(1, 2, 0).numpy(), "RGB")


def from_pil(img: Image.Image, channels: int, max_16bit: Optional[float] = None) -> torch.Tensor:
    """Any PIL image, converted to `channels` (1 or 3) -> (1, C, H, W) float in [-1, 1]."""
    from .image_io import convert_image
    return image_tensor(convert_image(img, channels, max_16bit))[None]


def load_images(
    paths, geometry: Geometry, channels: int = 3, max_16bit: Optional[float] = None
) -> torch.Tensor:
    """Evaluation batch: every file converted, resized/cropped deterministically
    -> (N, C, h, w) in [-1, 1]."""
    from .image_io import load_image
    return torch.stack([apply_image(img, plan(geometry, *img.size, train=False, gen=None, name=str(p)))
                        for p in paths for img in [load_image(p, channels, max_16bit)]])
