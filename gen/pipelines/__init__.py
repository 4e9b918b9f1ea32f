"""Inference pipelines, loadable from `run_dir/export` without the training code."""
from __future__ import annotations

import json
from pathlib import Path

from typing import Optional

import torch

from .colorization import ColorizationPipeline
from .diffusion import DiffusionSamplingPipeline
from .segmentation import SegmentationPipeline
from .translation import PIPELINE_FILE, CycleGANPipeline, TranslationPipeline

PIPELINES = {
    "translation": TranslationPipeline,
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


def load(
    path: str | Path, direction: Optional[str] = None, device: Optional[str | torch.device] = None, **kw
):
    """Load an exported pipeline: a run directory or its `export/` folder, on `device` (default CPU).

    CycleGAN exports hold both directions: `direction` (AtoB, the default, or BtoA) picks one.
    """
    pipe = _load(path, direction, **kw)
    return pipe.to(device) if device is not None else pipe


def find_export(path: str | Path) -> Optional[Path]:
    """A run directory or its export/ folder -> the folder holding pipeline.json, or None."""
    path = Path(path)
    for folder in (path / "export", path):
        if (folder / PIPELINE_FILE).is_file():
            return folder
    return None


def _load(path: str | Path, direction: Optional[str] = None, **kw):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run directory or export not found: {path}")
    path = find_export(path) or path
    meta_file = path / PIPELINE_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no exported pipeline ({PIPELINE_FILE} missing); "
                                "train to the end (or resume) to write run_dir/export")
    kind = json.loads(meta_file.read_text()).get("kind")
    if kind not in PIPELINES:
        raise ValueError(f"{meta_file}: unknown pipeline kind {kind!r}; known: {sorted(PIPELINES)}")
    cls = PIPELINES[kind]
    pipe = cls.from_export(path, **kw) if kind == "diffusion" else cls.from_pretrained(path, **kw)
    if kind == "cyclegan":
        direction = direction or "AtoB"
        if direction not in pipe.directions:
            raise ValueError(f"direction must be one of {sorted(pipe.directions)}, got {direction!r}")
        return pipe.directions[direction]
    if direction is not None and direction != getattr(pipe, "direction", None):
        what = (f"a {pipe.method} export that translates {pipe.direction} only" if hasattr(pipe, "direction")
                else f"a {kind} export")
        raise ValueError(
            f"{path} is {what}; --direction chooses between the two generators of a CycleGAN export"
        )
    return pipe


__all__ = [
    "ColorizationPipeline",
    "DiffusionSamplingPipeline",
    "TranslationPipeline",
    "CycleGANPipeline",
    "SegmentationPipeline",
    "load",
    "PIPELINES",
]
