"""Side-by-side comparison of runs on the same test inputs: a grid, a metrics table (CSV, markdown),
and a static HTML report. `trainers.wandb_report` puts the same table into wandb.

Translation runs (pix2pix, L1-only, ...) are scored by L1 / PSNR / SSIM / LPIPS against the target
and, with a segmenter on labelled data, by FCN-score; segmentation runs by pixel accuracy, mean
accuracy and mean IU against the labels. The FCN-score of the real photos comes first, as the
ground-truth row.
"""
from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import pipelines
from .config import ExperimentConfig
from .data import build_paired
from .data.labels import label_to_tensor
from .metrics import l1, psnr, ssim
from .metrics.perceptual import try_lpips
from .metrics.segmentation import ConfusionMatrix
from .visualize import image_grid


@dataclass
class Comparison:
    columns: list[str]  # grid columns: input, ground truth, one per run
    grid_rows: list[list[torch.Tensor]]
    table: list[dict] = field(default_factory=list)  # one dict per row: run, method, metrics
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for row in self.table:
            names += [k for k in row if k not in ("run", "method") and k not in names]
        return names


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compare_runs(cfg: ExperimentConfig, run_dirs: list[Path], split: str = "test", segmenter: Optional[Path] = None,
                 grid_rows: int = 6, max_images: Optional[int] = None) -> Comparison:
    data = build_paired(cfg.data, split, train=False)
    n = len(data) if max_images is None else min(max_images, len(data))
    labelled, k = cfg.data.kind == "segmentation", cfg.data.num_classes
    pipes = {Path(r).name: pipelines.load(r) for r in run_dirs}
    seg = pipelines.load(segmenter) if segmenter else None
    if seg is not None and not labelled:
        raise ValueError("--segmenter needs labelled data (data.kind=segmentation) for the FCN-score")
    lpips_metric, lpips_missing = try_lpips()
    scores = {name: {"L1": [], "PSNR": [], "SSIM": [], "LPIPS": []} for name in pipes}
    cms = {name: ConfusionMatrix(k) for name in pipes} if labelled else {}
    truth_cm = ConfusionMatrix(k) if seg else None
    rows = []
    for i in tqdm(range(n), desc=f"compare {split}", dynamic_ncols=True):
        item = data[i]
        x, y = item["input"][None], item["target"][None]
        row = [item["input"], item["target"]]
        if seg is not None:
            truth_cm.update(seg(y)[0].numpy(), item["label"].numpy())
        for name, pipe in pipes.items():
            if pipe.kind == "segmentation":
                if not labelled:
                    raise ValueError(f"run {name} is a segmenter but the data has no labels")
                pred = pipe(x)[0].cpu()
                cms[name].update(pred.numpy(), item["label"].numpy())
                row.append(label_to_tensor(pred, k))
                continue
            out = pipe(x).cpu().float()
            s = scores[name]
            s["L1"].append(l1(out, y))
            s["PSNR"] += psnr(out, y)
            s["SSIM"] += ssim(out, y)
            if lpips_metric is not None and out.shape[1] == 3:
                s["LPIPS"] += lpips_metric(out, y)
            if seg is not None:
                cms[name].update(seg(out)[0].numpy(), item["label"].numpy())
            row.append(out[0])
        if len(rows) < grid_rows:
            rows.append(row)
    result = Comparison(["input", "ground truth"] + list(pipes), rows)
    if seg is not None:
        result.table.append({"run": "ground truth (real photos)", "method": "real",
                             **{f"FCN {m}": v for m, v in truth_cm.scores().items()}})
    for name, pipe in pipes.items():
        row = {"run": name, "method": pipe.method}
        if pipe.kind == "segmentation":
            row.update(cms[name].scores())
        else:
            row.update({m: _mean(v) for m, v in scores[name].items() if v})
            if lpips_metric is None:
                row["LPIPS"] = "unavailable"
            if seg is not None:
                row.update({f"FCN {m}": v for m, v in cms[name].scores().items()})
        result.table.append(row)
    if lpips_metric is None:
        result.notes.append(lpips_missing)
    return result


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def write_report(result: Comparison, out_dir: Path, title: str = "gen comparison") -> dict[str, Path]:
    """grid.png, metrics.csv, metrics.md, index.html (self-contained apart from grid.png)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["run", "method"] + result.metric_names
    paths = {"grid": out_dir / "grid.png", "csv": out_dir / "metrics.csv", "markdown": out_dir / "metrics.md",
             "html": out_dir / "index.html", "json": out_dir / "metrics.json"}
    image_grid(result.grid_rows).save(paths["grid"])
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in result.table:
            writer.writerow([_cell(row.get(h)) for h in header])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(row.get(h)) for h in header) + " |" for row in result.table]
    md += [f"\n{note}" for note in result.notes]
    paths["markdown"].write_text("\n".join(md) + "\n")
    paths["json"].write_text(json.dumps({"columns": result.columns, "table": result.table, "notes": result.notes},
                                        indent=1))
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(h)))}</td>" for h in header) + "</tr>"
                   for r in result.table)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in result.notes)
    paths["html"].write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Columns of the grid: {html.escape(' | '.join(result.columns))}</p>"
        f"<img src='grid.png' alt='comparison grid'><h2>Metrics</h2><table><tr>{cells}</tr>{body}</table>"
        f"{notes}</body></html>\n")
    return paths


def grid_images(result: Comparison) -> list[list[Image.Image]]:
    from .data.transforms import to_pil
    return [[to_pil(t).convert("RGB") for t in row] for row in result.grid_rows]
