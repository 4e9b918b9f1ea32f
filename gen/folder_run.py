"""`sample.py RUN --output DIR`: a run's outputs written as PNG files, for every image of an input
folder (translators; conditional DDPM) or as numbered samples (unconditional DDPM, + grid.png).

Outputs mirror the input's subfolders (`IN/a/x.jpg` -> `OUT/a/x.png`, names settled by
gen.data.output_names); every name is checked before anything is written: an output never replaces
an input, nor an existing file unless `overwrite` (ValueError). Each function prints the input
listing's line (what was found and skipped) and a closing line, and returns the number of images
written. Images are written as they come: only the grid's first GRID_ITEMS are kept.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from .data.image_io import open_image
from .data.listing import relative_name, scan_images
from .data.output_names import check_outputs, mirrored_stems
from .data.transforms import to_pil
from .visualize import image_grid

GRID_ITEMS = 64  # grid.png: the first 64 inputs (conditional) or samples (unconditional)


def input_files(folder: Path, what: str, out_dir: Path) -> list[Path]:
    """The images under `folder`, subfolders included (`out_dir` inside it is not read), with the
    listing's line of what was found and skipped printed. FileNotFoundError / ValueError (no image)
    from gen.data.listing.scan_images."""
    listing = scan_images(Path(folder), what, exclude=[out_dir])
    print(listing.report("input"))
    return listing.files


def translate_folder(pipe, input_dir: Path, out_dir: Path, bit_depth: int = 8,
                     overwrite: bool = False) -> int:
    """`pipe.translate_image` of every image under `input_dir`, at its own size, as OUT/<its path>.png
    (bit_depth 16: 16-bit PNGs, for single-channel translators)."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    files = input_files(input_dir, "input images", out_dir)
    outputs = [out_dir / f"{stem}.png" for stem in mirrored_stems(input_dir, files)]
    check_outputs(outputs, files, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, out in zip(tqdm(files, desc="translate", dynamic_ncols=True), outputs):
        img = open_image(path)
        out.parent.mkdir(parents=True, exist_ok=True)  # a/x.png -> OUT/a/x.png
        (pipe.translate_image(img, bit_depth) if bit_depth == 16 else pipe.translate_image(img)).save(out)
    print(f"wrote {len(outputs)} images to {out_dir}")
    return len(outputs)


def sample_conditional(pipe, input_dir: Path, out_dir: Path, k: int, steps: int, scheduler: str,
                       seed: Optional[int], full_size: bool = False, overwrite: bool = False) -> int:
    """k samples of an image-conditioned DDPM per condition image under `input_dir`: OUT/<its path>.png
    (k = 1) or <its path>_0.png .. _{k-1}.png, and grid.png (a row per input: condition, samples).
    seed None: the run's own."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    files = input_files(input_dir, "condition images", out_dir)
    stems = mirrored_stems(input_dir, files, reserved=["grid"])
    names = [[f"{s}.png"] if k == 1 else [f"{s}_{j}.png" for j in range(k)] for s in stems]
    check_outputs([out_dir / n for group in names for n in group] + [out_dir / "grid.png"], files, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(leave=False, dynamic_ncols=True)
    rows, written = [], 0
    for path, group in zip(tqdm(files, desc="sample", dynamic_ncols=True), names):
        cond = pipe.condition_from_image(open_image(path))
        # Named by its path in the folder (gen.seeding): the same samples whatever else is there
        x = pipe.sample_for(cond, k, steps, scheduler, seed, relative_name(path, input_dir), full_size)
        (out_dir / group[0]).parent.mkdir(parents=True, exist_ok=True)  # a/x.png -> OUT/a/
        for im, name in zip(x, group):
            to_pil(im).save(out_dir / name)
            written += 1
        if len(rows) < GRID_ITEMS:  # the grid shows the first inputs; nothing else is kept
            rows.append([cond[0]] + list(x))
    image_grid(rows).save(out_dir / "grid.png")
    print(sampled(written, out_dir, steps, scheduler, pipe.seed if seed is None else seed))
    return written


def sample_unconditional(pipe, out_dir: Path, num: int, batch_size: int, steps: int, scheduler: str,
                         seed: Optional[int], overwrite: bool = False) -> int:
    """`num` samples of an unconditional DDPM, `batch_size` at a time, as OUT/sample_00000.png ... and
    grid.png (the first GRID_ITEMS, square). Sample i is the same image whatever batch_size."""
    out_dir = Path(out_dir)
    names = [f"sample_{i:05d}.png" for i in range(num)]
    check_outputs([out_dir / n for n in names] + [out_dir / "grid.png"], (), overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(leave=False, dynamic_ncols=True)
    images = []  # the first GRID_ITEMS samples, for the grid; the rest are written and dropped
    for start in tqdm(range(0, num, batch_size), desc="sample", dynamic_ncols=True):
        numbers = range(start, min(start + batch_size, num))
        batch = pipe.sample_numbers(numbers, steps, scheduler, seed, progress=True)
        for j, im in enumerate(batch):
            to_pil(im).save(out_dir / names[start + j])
        images += [im.clone() for im in batch[: GRID_ITEMS - len(images)]]
    side = math.ceil(math.sqrt(len(images)))
    image_grid([images[i:i + side] for i in range(0, len(images), side)]).save(out_dir / "grid.png")
    print(sampled(num, out_dir, steps, scheduler, pipe.seed if seed is None else seed))
    return num


def sampled(written: int, out_dir: Path, steps: int, scheduler: str, seed: int) -> str:
    return f"wrote {written} samples and grid.png to {out_dir} ({scheduler}, {steps} steps, seed {seed})"
