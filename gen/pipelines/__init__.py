"""Inference pipelines, loadable from `run_dir/export` without the training code."""
from __future__ import annotations

import json
from pathlib import Path

from .translation import PIPELINE_FILE, TranslationPipeline

PIPELINES = {"translation": TranslationPipeline}


def load(path: str | Path, **kw):
    """Load an exported pipeline: a run directory or its `export/` folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"run directory or export not found: {path}")
    if (path / "export" / PIPELINE_FILE).is_file():
        path = path / "export"
    meta_file = path / PIPELINE_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} holds no exported pipeline ({PIPELINE_FILE} missing); "
                                "train to the end (or resume) to write run_dir/export")
    kind = json.loads(meta_file.read_text()).get("kind")
    if kind not in PIPELINES:
        raise ValueError(f"{meta_file}: unknown pipeline kind {kind!r}; known: {sorted(PIPELINES)}")
    return PIPELINES[kind].from_pretrained(path, **kw)


__all__ = ["TranslationPipeline", "load", "PIPELINES"]
