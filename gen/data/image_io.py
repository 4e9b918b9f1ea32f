"""Reading images from disk the way users expect, with errors that name the file.

Conversions (to 8-bit RGB or L): EXIF orientation applied; 16-bit grayscale scaled by 255/65535;
palette expanded; transparency (RGBA, LA, palette with a transparent index) composited onto
white, as image viewers show it; CMYK/YCbCr converted by Pillow; grayscale replicated to RGB when
3 channels are asked for, RGB reduced to luminance when 1 is.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS


def list_images(folder: Path, what: str = "images") -> list[Path]:
    """Sorted image files of a folder. Other files (README, .DS_Store, ...) are skipped with a
    warning rather than an error: such folders are common and the files are clearly not data."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if is_image_file(p)]
    skipped = [p.name for p in files if not is_image_file(p) and not p.name.startswith(".")]
    if skipped:
        warnings.warn(f"{folder}: skipping {len(skipped)} non-image file(s): {skipped[:5]}", stacklevel=2)
    if not images:
        raise ValueError(f"no {what} in {folder} (looked for {', '.join(IMG_EXTENSIONS)})")
    return images


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


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # Pillow opens 16-bit PNG/TIFF grayscale as I;16 or I; both hold 0..65535.
        return Image.fromarray(np.clip(arr * (255.0 / 65535.0) + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def _flatten_alpha(img: Image.Image) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img


def convert_image(img: Image.Image, channels: int) -> Image.Image:
    """Any Pillow image -> 8-bit 'RGB' (channels 3) or 'L' (channels 1)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _flatten_alpha(_to_8bit(img))
    return img.convert("RGB" if channels == 3 else "L")


def load_image(path: Path, channels: int = 3) -> Image.Image:
    return convert_image(open_image(Path(path)), channels)


def load_label(path: Path) -> np.ndarray:
    """Class-index label map: (H, W) int64 of the raw stored values (palette indices for 'P')."""
    img = open_image(Path(path))
    if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"label map {path} has mode {img.mode!r}; expected a single-channel "
                         "class-index image (palette 'P', 8-bit 'L' or 16-bit)")
    return np.asarray(img).astype(np.int64)
