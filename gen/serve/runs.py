"""What `sample.py serve` does for each kind of run, without Gradio: the pipelines sample.py loads,
called as sample.py calls them, writing the PNG files sample.py writes (bit for bit the same for the
same input and options), plus what the page shows beside them.

Seeds: a conditional DDPM samples an upload named x.png as sample.py samples x.png at the top of a
folder (an input's noise is named by the seed and its file name: gen.seeding); unconditional sample i
is sample.py's sample_{i:05d}.png whatever the batch.
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from .. import pipelines
from ..color import join_lab, split_lab
from ..data.image_io import convert_image
from ..data.transforms import from_pil, to_pil
from ..models.inference import INFERENCE_MODES
from ..pipelines.colorization import GrayBaseline
from ..pipelines.base import PIPELINE_FILE
from .inputs import DEFAULT_MAX_PIXELS, image_notes, label_notes, read_upload

BATCH_SIZE = 16  # sample.py's default --batch-size: unconditional samples are drawn in batches of it
OnStep = Optional[Callable[[int, int], None]]  # (denoising steps done, steps in all)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: pixels per upload, DDPM samples per request."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_samples: int = 16


@dataclass
class Result:
    """files: (caption, PNG) in order, the first being sample.py's file for a one-output request;
    before: what the model saw (for the before/after view); notes: how the input was read."""
    files: list[tuple[str, Path]]
    before: Optional[Path] = None
    notes: list[str] = field(default_factory=list)
    legend: list[dict] = field(default_factory=list)  # segmentation: the classes present


def _int(value, name: str, low: int, high: int) -> int:
    """An integer in low..high from a page or API value (ints, or floats with no fraction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{name} {value!r}: expected a whole number in {low}..{high}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} {int(value)}: must be in {low}..{high}")
    return int(value)


def _stem(upload: str) -> str:
    """The upload's file name without extension, made safe as a file name."""
    return re.sub(r"[^\w.-]", "_", Path(upload).stem).strip(".") or "image"


@contextlib.contextmanager
def count_steps(unet: torch.nn.Module, total: int, on_step: OnStep):
    """Call on_step(done, total) after every U-Net evaluation (one per denoising step)."""
    if on_step is None:
        yield
        return
    done = [0]

    def hook(*_):
        done[0] += 1
        on_step(done[0], total)
    handle = unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class Scratch:
    """Per-request folders for the PNGs handed to the page; folders older than `keep` seconds go."""

    def __init__(self, keep: float = 900.0):
        self._dir = tempfile.TemporaryDirectory(prefix="gen-serve-")
        self.root, self.keep = Path(self._dir.name), keep

    def new(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            if now - old.stat().st_mtime > self.keep:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.root))


class ServedRun:
    """One run directory (or export/ folder) with its pipelines loaded once."""

    def __init__(self, path: str | Path, device: Optional[torch.device] = None, name: Optional[str] = None):
        self.path = Path(path)
        export = pipelines.find_export(self.path)
        if export is None:
            pipelines.load(self.path)  # the loader's own FileNotFoundError, naming what is missing
        self.name = name or (export.parent.name if export.name == "export" else export.name)
        kind = json.loads((export / PIPELINE_FILE).read_text()).get("kind")
        directions = ("AtoB", "BtoA") if kind == "cyclegan" else (None,)
        self.pipes = {d: pipelines.load(self.path, direction=d, device=device) for d in directions}
        pipe = self.pipe
        if pipe.kind == "diffusion":
            self.kind = "conditional ddpm" if pipe.condition_channels else "ddpm"
            self.train_timesteps = pipe.scheduler.config.num_train_timesteps
        else:
            # translation (pix2pix, CycleGAN's directions, CUT), colorization, segmentation
            self.kind = "translation" if pipe.kind in pipelines.TRANSLATOR_KINDS else pipe.kind
        self.method = getattr(pipe, "method", self.kind)

    @property
    def pipe(self):
        return next(iter(self.pipes.values()))

    @property
    def takes_image(self) -> bool:
        return self.kind != "ddpm"

    @property
    def directions(self) -> list[str]:
        return [d for d in self.pipes if d is not None]

    def describe(self) -> str:
        pipe, what = self.pipe, {"translation": "translator", "colorization": "colorization",
                                 "segmentation": "segmenter", "ddpm": "unconditional DDPM",
                                 "conditional ddpm": "image-conditioned DDPM"}[self.kind]
        extra = ""
        if self.kind == "translation":
            extra = f", {' and '.join(self.directions) or pipe.direction}, {pipe.inference} inference"
        elif self.kind.endswith("ddpm"):
            extra = f", {pipe.sample_size}x{pipe.sample_size}, {self.train_timesteps} training timesteps"
        elif self.kind == "segmentation":
            extra = f", {pipe.num_classes} classes"
        return f"{self.name}: {self.method} {what}{extra} ({self.path})"

    # -- translators ------------------------------------------------------------------------------
    def translator(self, direction: Optional[str], inference: Optional[str]):
        """The pipeline for `direction` with `inference` (None: the export's), as sample.py's
        --direction / --inference load it; the network is shared, not copied."""
        if self.directions:
            if direction not in (None, *self.directions):
                raise ValueError(f"direction {direction!r}: {self.name} translates "
                                 f"{' or '.join(self.directions)}")
            pipe = self.pipes[direction or "AtoB"]
        else:
            if direction not in (None, "", self.pipe.direction):
                raise ValueError(f"direction {direction!r}: {self.name} translates "
                                 f"{self.pipe.direction} only")
            pipe = self.pipe
        if inference in (None, "", pipe.inference):
            return pipe
        if inference not in INFERENCE_MODES:
            raise ValueError(f"inference {inference!r}: choose one of {list(INFERENCE_MODES)}")
        pipe = copy.copy(pipe)
        pipe.inference = inference
        return pipe

    def translate(self, upload: str, out: Path, limits: Limits, direction: Optional[str] = None,
                  inference: Optional[str] = None, bit_depth: int = 8) -> Result:
        pipe = self.translator(direction, inference)
        if bit_depth not in (8, 16):
            raise ValueError(f"bit depth {bit_depth!r}: 8 or 16")
        if bit_depth == 16 and pipe.net.config.out_channels != 1:
            raise ValueError("16-bit output is for translators with single-channel outputs (e.g. depth maps)")
        img = read_upload(upload, limits.max_pixels)
        label = pipe.label_input
        notes = (label_notes(img, label["num_classes"], label["first_label"]) if label
                 else image_notes(img, pipe.in_channels, pipe.max_16bit))
        before = to_pil(pipe.input_from_image(img)[0])
        output = pipe.translate_image(img, bit_depth) if bit_depth == 16 else pipe.translate_image(img)
        return Result([(f"{self.name} {pipe.direction}", _save(output, out / f"{_stem(upload)}.png"))],
                      _save(before, out / "input.png"), notes)

    # -- colorization -----------------------------------------------------------------------------
    def colorize(self, upload: str, out: Path, limits: Limits) -> Result:
        img = read_upload(upload, limits.max_pixels)
        notes = [n for n in image_notes(img, 3) if "replicated" not in n]
        if not _is_gray(img):
            notes.append("colour removed: the model sees the image's lightness (Lab L) only")
        l_norm, _ = split_lab(from_pil(img, 3))
        gray = to_pil(join_lab(l_norm, GrayBaseline()(l_norm))[0])
        output = self.pipe.translate_image(img)
        return Result([(self.name, _save(output, out / f"{_stem(upload)}.png")),
                       ("grayscale baseline", _save(gray, out / "gray.png"))], out / "gray.png", notes)

    # -- segmentation -----------------------------------------------------------------------------
    def segment(self, upload: str, out: Path, limits: Limits) -> Result:
        pipe = self.pipe
        img = read_upload(upload, limits.max_pixels)
        notes = image_notes(img, pipe.net.config.in_channels)
        labels = pipe.translate_image(img)  # palette PNG of the raw label ids: sample.py's file
        photo = convert_image(img, 3)
        overlay = Image.blend(photo, labels.convert("RGB"), 0.5)
        return Result([(self.name, _save(labels, out / f"{_stem(upload)}.png")),
                       ("overlay", _save(overlay, out / "overlay.png"))],
                      _save(photo, out / "input.png"), notes,
                      legend(labels, pipe.num_classes, pipe.first_label))

    # -- DDPM -------------------------------------------------------------------------------------
    def check_sampling(self, count: int, what: str, steps, scheduler: Optional[str], seed, limits: Limits):
        """(count, steps, scheduler, seed) in range, scheduler None (or "default") resolved to the
        export's own (DDIM, EDM's Heun, or the one its training grids used); ValueError naming the
        field otherwise."""
        count = _int(count, what, 1, limits.max_samples)
        steps = _int(steps, "steps", 1, self.train_timesteps)
        scheduler = self.pipe.check_scheduler(None if scheduler in (None, "default") else scheduler)
        return count, steps, scheduler, _int(seed, "seed", 0, 2 ** 63 - 1)

    def sample(self, out: Path, limits: Limits, num=4, steps=50, scheduler: Optional[str] = None, seed=0,
               on_step: OnStep = None) -> Result:
        """num unconditional samples: sample.py --num num --seed seed's sample_00000.png ..."""
        num, steps, scheduler, seed = self.check_sampling(num, "number of samples", steps, scheduler, seed,
                                                          limits)
        pipe = self.pipe
        files = []
        batches = -(-num // BATCH_SIZE)
        with count_steps(pipe.unet, steps * batches, on_step):
            for start in range(0, num, BATCH_SIZE):
                numbers = range(start, min(start + BATCH_SIZE, num))
                batch = pipe.sample_numbers(numbers, steps, scheduler, seed)
                for j, im in enumerate(batch):
                    name = f"sample_{start + j:05d}.png"
                    files.append((name, _save(to_pil(im), out / name)))
        return Result(files, notes=[f"{scheduler}, {steps} steps, seed {seed}"])

    def sample_for(self, upload: str, out: Path, limits: Limits, k=1, steps=50,
                   scheduler: Optional[str] = None, seed=0, full_size: bool = False,
                   on_step: OnStep = None) -> Result:
        """k samples for one condition image: sample.py --samples-per-input k --seed seed's files
        for the first input (STEM.png, or STEM_0.png ... for k > 1)."""
        k, steps, scheduler, seed = self.check_sampling(k, "samples per input", steps, scheduler, seed,
                                                        limits)
        pipe = self.pipe
        img = read_upload(upload, limits.max_pixels)
        label = pipe.label_input
        notes = (label_notes(img, label["num_classes"], label["first_label"]) if label
                 else image_notes(img, pipe.condition_channels))
        cond = pipe.condition_from_image(img)
        with count_steps(pipe.unet, steps, on_step):  # named like the same file at the top of a folder
            x = pipe.sample_for(cond, k, steps, scheduler, seed, Path(upload).name, bool(full_size))
        stem = _stem(upload)
        names = [f"{stem}.png"] if k == 1 else [f"{stem}_{j}.png" for j in range(k)]
        files = [(name, _save(to_pil(im), out / name)) for im, name in zip(x, names)]
        notes.append(f"{scheduler}, {steps} steps, seed {seed}" + (", full size" if full_size else ""))
        return Result(files, _save(to_pil(cond[0]), out / "condition.png"), notes)

    # -- any image input --------------------------------------------------------------------------
    def run_image(self, upload: str, out: Path, limits: Limits, direction: Optional[str] = None,
                  steps=50, scheduler: Optional[str] = None, seed=0) -> Result:
        """The run's own output for one upload, with its defaults (used by the comparison)."""
        if self.kind == "translation":
            return self.translate(upload, out, limits, direction)
        if self.kind == "colorization":
            return self.colorize(upload, out, limits)
        if self.kind == "segmentation":
            return self.segment(upload, out, limits)
        if self.kind == "conditional ddpm":
            return self.sample_for(upload, out, limits, 1, steps, scheduler, seed)
        raise ValueError(f"{self.name} is an unconditional DDPM: it takes no input image")


def compare(runs: list[ServedRun], upload: str, scratch: Scratch, limits: Limits, steps=50,
            scheduler: Optional[str] = None, seed=0) -> Result:
    """The same upload through every run that takes an image (both directions of a CycleGAN), each
    output as that run's own page gives it; a run that refuses the input is named in the notes."""
    files, notes, before = [], [], None
    for run in runs:
        if not run.takes_image:
            continue
        for direction in run.directions or [None]:
            label = f"{run.name} {direction}" if direction else run.name
            try:
                result = run.run_image(upload, scratch.new(), limits, direction, steps, scheduler, seed)
            except (ValueError, FloatingPointError) as err:
                notes.append(f"{label}: {err}")
                continue
            before = before or (result.before if run.kind != "colorization" else None)
            files.append((label, result.files[0][1]))
            notes += [f"{label}: {n}" for n in result.notes]
    if not files:
        raise ValueError("no run could take this input: " + "; ".join(notes))
    return Result(files, before, notes)


def legend(labels: Image.Image, num_classes: int, first_label: int) -> list[dict]:
    """The classes present in a label PNG, most pixels first: id, class index, colour, share."""
    from ..data.labels import palette

    ids, counts = np.unique(np.asarray(labels), return_counts=True)
    colours = palette(num_classes)
    pixels = labels.width * labels.height
    rows = [{"label_id": int(i), "class": int(i) - first_label, "share": float(c) / pixels,
             "colour": "#%02x%02x%02x" % tuple(colours[int(i) - first_label])} for i, c in zip(ids, counts)]
    return sorted(rows, key=lambda r: -r["share"])


def load_runs(run_dirs: list[str], device: Optional[torch.device] = None) -> list[ServedRun]:
    """Every run loaded once; runs whose folders share a name are told apart by their path."""
    runs = [ServedRun(r, device) for r in run_dirs]
    names = [r.name for r in runs]
    for r, d in zip(runs, run_dirs):
        if names.count(r.name) > 1:
            r.name = str(d)
    return runs


def _is_gray(img: Image.Image) -> bool:
    rgb = np.asarray(convert_image(img, 3), dtype=np.int16)
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path
