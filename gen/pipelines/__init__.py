"""Inference pipelines, loadable from `run_dir/export` without the training code."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .base import PIPELINE_FILE, PRECISIONS, export_copy, read_meta
from .colorization import ColorizationPipeline
from .diffusion import DiffusionSamplingPipeline
from .segmentation import SegmentationPipeline
from .translation import TRANSLATOR_KINDS, CycleGANPipeline, TranslationPipeline, UnpairedTranslationPipeline

PIPELINES = {
    "translation": TranslationPipeline,
    "unpaired_translation": UnpairedTranslationPipeline,
    "cyclegan": CycleGANPipeline,
    "segmentation": SegmentationPipeline,
    "diffusion": DiffusionSamplingPipeline,
    "colorization": ColorizationPipeline,
}


def resolve_device(name: Optional[str] = "auto", flag: str = "--device") -> torch.device:
    """auto: the GPU when one is usable, else the CPU; an explicit device must exist."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{flag} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} {name}: torch sees no usable GPU here; use --device cpu (or auto)")
    return device


def load(path: str | Path, direction: Optional[str] = None, device: Optional[str | torch.device] = None,
         inference: Optional[str] = None, precision: Optional[str] = None):
    """Load an exported pipeline: a run directory or its `export/` folder, on `device` (default CPU),
    in `precision` (fp32 or bf16; default fp32).

    CycleGAN exports hold both directions: `direction` (AtoB, the default, or BtoA) picks one.
    `inference` (paper or eval) overrides a pix2pix / CycleGAN export's own; other exports have none.
    """
    pipe = _direction(path, load_export(path, inference, precision, device), direction)
    return pipe


def load_export(path: str | Path, inference: Optional[str] = None, precision: Optional[str] = None,
                device: Optional[str | torch.device] = None):
    """The whole exported pipeline (a CycleGAN export with both directions), as `load` reads it."""
    pipe = _load(path, inference).with_precision(precision)
    return pipe.to(device) if device is not None else pipe


def find_export(path: str | Path) -> Optional[Path]:
    """A run directory or its export/ folder -> the folder holding pipeline.json, or None."""
    path = Path(path)
    for folder in (path / "export", path):
        if (folder / PIPELINE_FILE).is_file():
            return folder
    return None


def _load(path: str | Path, inference: Optional[str]):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run directory or export not found: {path}")
    path = find_export(path) or path
    meta_file = path / PIPELINE_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no exported pipeline ({PIPELINE_FILE} missing); "
                                "train to the end (or resume) to write run_dir/export")
    kind = read_meta(path).get("kind")
    if kind not in PIPELINES:
        raise ValueError(f"{meta_file}: unknown pipeline kind {kind!r}; known: {sorted(PIPELINES)}")
    cls = PIPELINES[kind]
    if inference is not None and kind not in (*TRANSLATOR_KINDS, "cyclegan"):
        raise ValueError(f"{path} is a {kind} export: --inference {inference} applies to pix2pix, "
                         "CycleGAN and CUT exports only")
    try:
        if kind == "diffusion":
            return cls.from_export(path)
        if kind in (*TRANSLATOR_KINDS, "cyclegan"):
            return cls.from_pretrained(path, inference)
        return cls.from_pretrained(path)
    except KeyError as err:  # a hand-made or truncated pipeline.json
        raise ValueError(f"{meta_file} has no {err.args[0]!r} entry, which a {kind} export needs; re-export "
                         "the run (or convert the checkpoint again)") from None


def _direction(path: str | Path, pipe, direction: Optional[str]):
    """One direction of a CycleGAN export (AtoB by default); any other export, checked against `direction`."""
    kind = pipe.kind
    if kind == "cyclegan":
        direction = direction or "AtoB"
        if direction not in pipe.directions:
            raise ValueError(f"direction must be one of {sorted(pipe.directions)}, got {direction!r}")
        return pipe.directions[direction]
    if direction is not None and direction != getattr(pipe, "direction", None):
        what = (f"a {pipe.method} export that translates {pipe.direction} only" if hasattr(pipe, "direction")
                else f"a {kind} export")
        raise ValueError(
            f"{Path(path)} is {what}; --direction chooses between the two generators of a CycleGAN export"
        )
    return pipe


__all__ = [
    "ColorizationPipeline",
    "DiffusionSamplingPipeline",
    "TranslationPipeline",
    "UnpairedTranslationPipeline",
    "TRANSLATOR_KINDS",
    "CycleGANPipeline",
    "SegmentationPipeline",
    "load",
    "load_export",
    "export_copy",
    "find_export",
    "read_meta",
    "PIPELINES",
    "PRECISIONS",
]
