"""Uploads: read as sample.py reads a file, refused with a message naming the upload, and described
where reading changes them (16-bit rounded, transparency flattened, channels converted)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PIL import Image

from ..data.image_io import SIXTEEN_BIT, image_size, open_image

DEFAULT_MAX_PIXELS = 4096 * 4096  # per upload; `sample.py serve --max-pixels N` changes it
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def read_upload(path: Optional[str], max_pixels: int) -> Image.Image:
    """The uploaded file decoded as sample.py's open_image does, after a header-only size check.
    ValueError naming the upload (not the server's copy of it) for no file, a file that is not an
    image, or one over `max_pixels`."""
    if not path:
        raise ValueError("no image: upload an image file (PNG, JPEG, ...) first")
    name = Path(path).name
    try:
        w, h = image_size(Path(path))
        if w * h > max_pixels:
            raise ValueError(f"{name} is {w}x{h} = {w * h:,} pixels; this server takes images of up to "
                             f"{max_pixels:,} pixels (sample.py serve --max-pixels N)")
        return open_image(Path(path))
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), name)) from None


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def image_notes(img: Image.Image, channels: int, max_16bit: Optional[float] = None) -> list[str]:
    """What reading `img` as a `channels`-channel image changes, in the words shown in the page."""
    notes = []
    deep = img.mode in SIXTEEN_BIT or img.mode == "F"
    if deep and channels == 3:
        notes.append(f"{'16-bit' if img.mode != 'F' else 'float'} grayscale image: this model takes RGB, so "
                     "it was rounded to 8 bits (as sample.py does)")
    elif deep:
        top = max_16bit or 65535
        notes.append(f"16-bit image read at full precision (0..{top:g} is the model's black..white)")
    if has_alpha(img):
        notes.append("transparency composited onto white (as sample.py and training read it)")
    gray = deep or img.mode in ("L", "LA", "1", "I", "F") or (img.mode == "P" and _gray_palette(img))
    if channels == 1 and not gray:
        notes.append("colour image reduced to its luminance: this model takes 1-channel images")
    elif channels == 3 and gray and not deep:
        notes.append("grayscale image replicated to RGB: this model takes 3-channel images")
    return notes


def label_notes(img: Image.Image, num_classes: int, first_label: int) -> list[str]:
    """How a label-map upload is read (label_image_to_tensor): ids, or gen's palette colours."""
    ids = f"{first_label}..{first_label + num_classes - 1}"
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        notes = [f"label map read as class ids {ids} (its pixel values; a palette's colours are not used)"]
    else:
        notes = [f"colour label map: colours matched to gen's palette of {num_classes} classes "
                 "(black = ignored)"]
    if has_alpha(img) and img.mode != "P":
        notes.append("the label map's alpha channel is ignored")
    return notes


def _gray_palette(img: Image.Image) -> bool:
    colours = img.convert("RGB").getcolors(1 << 16) or []
    return all(r == g == b for _, (r, g, b) in colours)
