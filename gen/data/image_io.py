"""Reading images from disk the way users expect, with errors that name the file.

Conversions (to 8-bit RGB or L): EXIF orientation applied; palette expanded; transparency (RGBA, LA,
palette with a transparent index) composited onto white, as image viewers show it; CMYK/YCbCr
converted by Pillow; grayscale replicated to RGB when 3 channels are asked for, RGB reduced to
luminance when 1 is. 16-bit (and float) grayscale read as one channel keeps its precision: a float
'F' image on the 0..255 scale, 0..max_16bit (default 65535) mapped to 0..255 without rounding;
read as RGB it is rounded to 8 bits, with a warning.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


def open_image(path: Path) -> Image.Image:
    """Open and fully decode, so truncated or corrupt files fail here with the file's name."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img) if img.getexif() else img.copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF rotation applied), from the header only: nothing is decoded."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _to_float(img: Image.Image, max_16bit: Optional[float] = None) -> Image.Image:
    """16-bit or float grayscale -> 'F' on the 0..255 scale, unrounded."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode in SIXTEEN_BIT:
        # Pillow opens 16-bit PNG/TIFF grayscale as I;16 or I; both hold 0..65535.
        scale = 255.0 / (max_16bit or 65535.0)
    elif max_16bit is not None:  # float data (e.g. depth in metres) with a stated white value
        scale = 255.0 / max_16bit
    else:
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
    return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.float32), "F")


def _to_8bit(img: Image.Image, max_16bit: Optional[float] = None) -> Image.Image:
    if img.mode in SIXTEEN_BIT or img.mode == "F":
        return Image.fromarray((np.asarray(_to_float(img, max_16bit)) + 0.5).astype(np.uint8), "L")
    return img


def _flatten_alpha(img: Image.Image) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img


def convert_image(img: Image.Image, channels: int, max_16bit: Optional[float] = None) -> Image.Image:
    """Any Pillow image -> 8-bit 'RGB' (channels 3), 8-bit 'L' or, for 16-bit / float grayscale,
    'F' on the 0..255 scale (channels 1)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if channels == 1 and (img.mode in SIXTEEN_BIT or img.mode == "F"):
        return _to_float(img, max_16bit)
    img = _flatten_alpha(_to_8bit(img, max_16bit))
    return img.convert("RGB" if channels == 3 else "L")


def warn_precision(img: Image.Image, path, channels: int, max_16bit: Optional[float] = None) -> None:
    """Warn, naming the file, when 16-bit or float data would be rounded to 8 bits (read as RGB),
    clipped, or shown nearly black (a small part of its range): set data.max_16bit."""
    if img.mode not in SIXTEEN_BIT and img.mode != "F":
        return
    top = float(np.asarray(img).max(initial=0))
    if img.mode == "F" and max_16bit is None:
        full = 1.0 if top <= 1.0 else 255.0  # float data is read as 0..1 or 0..255
    else:
        full = max_16bit or 65535.0
    kind = "float" if img.mode == "F" else "16-bit"
    if channels == 3:
        warnings.warn(f"{path}: a {kind} grayscale image read as 8-bit RGB loses precision; read it as one "
                      "channel (data.channels_a=1 / data.channels_b=1) to keep it", stacklevel=3)
    elif top > full:
        warnings.warn(f"{path}: values up to {top:g} exceed {full:g}, the value shown as white, and are "
                      "clipped; set data.max_16bit to the data's range", stacklevel=3)
    elif top < full / 8 and not (img.mode == "F" and max_16bit is None and top <= 1.0):
        warnings.warn(
            f"{path}: this {kind} image uses only 0..{top:g} of 0..{full:g}, so it trains as a nearly "
            f"black image; set data.max_16bit (e.g. {int(2 ** np.ceil(np.log2(top + 1)))}) to map that "
            "range to the full intensity scale", stacklevel=3)


def load_image(path: Path, channels: int = 3, max_16bit: Optional[float] = None) -> Image.Image:
    """Open, decode and convert (see convert_image), with warn_precision's warnings."""
    img = open_image(Path(path))
    warn_precision(img, path, channels, max_16bit)
    return convert_image(img, channels, max_16bit)


def load_label(path: Path) -> np.ndarray:
    """Class-index label map: (H, W) int64 of the raw stored values (palette indices for 'P')."""
    img = open_image(Path(path))
    if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"label map {path} has mode {img.mode!r}; expected a single-channel "
                         "class-index image (palette 'P', 8-bit 'L' or 16-bit)")
    return np.asarray(img).astype(np.int64)
