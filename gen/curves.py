"""Training curves: RUN_DIR/metrics.jsonl read back (trainers/runlog.py writes it) and drawn as a PNG
without a plotting library: one panel per metric, one line per run."""
from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw

Series = list[tuple[int, Optional[float]]]  # (step, value); None: not finite, a gap in the line
METRICS_FILE = "metrics.jsonl"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
PANEL_W, PANEL_H, LEFT, BOTTOM, TOP, RIGHT, LEGEND = 380, 230, 64, 26, 22, 14, 18


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl, in file order; a torn last line (a kill mid-write) is skipped."""
    rows = []
    if not Path(path).is_file():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def numeric_keys(rows: Sequence[dict]) -> list[str]:
    """The keys of metrics.jsonl rows that hold numbers (null: a non-finite number), first seen first."""
    keys: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if k != "step" and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))):
                keys.setdefault(k)
    return list(keys)


def select_keys(keys: Sequence[str], patterns: Optional[Sequence[str]]) -> list[str]:
    """The keys matching any shell-style pattern ('train/*'); all of them without patterns. Raises
    ValueError naming the patterns that match nothing, with the keys there are."""
    if not patterns:
        return list(keys)
    unmatched = [p for p in patterns if not fnmatch.filter(keys, p)]
    if unmatched:
        raise ValueError(f"--keys {' '.join(unmatched)}: no logged metric matches; the metrics are "
                         f"{', '.join(keys) or 'none'}")
    return [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]


def series_by_key(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, Series]:
    """metrics.jsonl rows -> {key: [(step, value)]} in step order, for the keys these rows hold."""
    out: dict[str, Series] = {k: [] for k in keys}
    for row in sorted(rows, key=lambda r: r["step"]):
        for k in keys:
            if k in row:
                out[k].append((row["step"], row[k]))
    return {k: v for k, v in out.items() if v}


def _label(value: float) -> str:
    return f"{value:.4g}"


def _panel(draw: ImageDraw.ImageDraw, x0: int, y0: int, key: str, runs: dict[str, Series],
           colours: dict[str, str]) -> None:
    """One metric: its title, a frame with the value range on the left and the step range below."""
    points = [(s, v) for line in runs.values() for s, v in line if v is not None]
    s_lo, s_hi = min(s for s, _ in points), max(s for s, _ in points)
    v_lo, v_hi = min(v for _, v in points), max(v for _, v in points)
    if v_hi == v_lo:  # a flat line is drawn in the middle
        v_lo, v_hi = v_lo - 0.5 * (abs(v_lo) or 1), v_hi + 0.5 * (abs(v_hi) or 1)
    left, top = x0 + LEFT, y0 + TOP
    right, bottom = x0 + PANEL_W - RIGHT, y0 + PANEL_H - BOTTOM
    draw.text((left, y0 + 4), key, fill="black")
    draw.rectangle((left, top, right, bottom), outline="#999999")
    draw.text((x0 + 4, top), _label(v_hi), fill="#444444")
    draw.text((x0 + 4, bottom - 11), _label(v_lo), fill="#444444")
    draw.text((left, bottom + 4), str(s_lo), fill="#444444")
    draw.text((right - 6 * len(str(s_hi)), bottom + 4), str(s_hi), fill="#444444")

    def xy(step: int, value: float) -> tuple[float, float]:
        fx = 0.5 if s_hi == s_lo else (step - s_lo) / (s_hi - s_lo)
        fy = (value - v_lo) / (v_hi - v_lo)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for run, line in runs.items():
        pieces: list[list[tuple[float, float]]] = [[]]
        for step, value in line:
            if value is None or not math.isfinite(value):
                pieces.append([])
            else:
                pieces[-1].append(xy(step, value))
        for piece in pieces:
            if len(piece) > 1:
                draw.line(piece, fill=colours[run], width=2)
            for px, py in piece if len(piece) == 1 else ():
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colours[run])


def plot_curves(curves: dict[str, dict[str, Series]], columns: int = 2) -> Image.Image:
    """{metric: {run: [(step, value)]}} -> an RGB image: a grid of panels (`columns` wide), one per
    metric, one coloured line per run, and a legend naming the runs on top. Raises ValueError when
    there is nothing to draw."""
    curves = {k: runs for k, runs in curves.items() if any(v is not None for line in runs.values()
                                                           for _, v in line)}
    if not curves:
        raise ValueError("no finite metric values to plot")
    names = list(dict.fromkeys(run for runs in curves.values() for run in runs))
    colours = {run: COLOURS[i % len(COLOURS)] for i, run in enumerate(names)}
    columns = max(1, min(columns, len(curves)))
    rows = math.ceil(len(curves) / columns)
    image = Image.new("RGB", (columns * PANEL_W, LEGEND + rows * PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    x = 6
    for run in names:
        draw.rectangle((x, 5, x + 9, 14), fill=colours[run])
        draw.text((x + 13, 4), run, fill="black")
        x += 13 + int(draw.textlength(run)) + 14
    for i, (key, runs) in enumerate(curves.items()):
        _panel(draw, (i % columns) * PANEL_W, LEGEND + (i // columns) * PANEL_H, key, runs, colours)
    return image
