"""Side-by-side comparison of runs on the same test inputs: a grid, a metrics table (CSV, markdown),
and a static HTML report. `trainers.wandb_report` puts the same table into wandb.

Every run that makes images (pix2pix, L1-only, CycleGAN, colorization, conditional DDPM) is scored by
L1 / PSNR / SSIM / LPIPS against the target and, with a segmenter on labelled data, by FCN-score;
segmentation runs by pixel accuracy, mean accuracy and mean IU against the labels. Each method adds its
own metrics: AuC and colourfulness for colorization (which colours the target photo's L channel),
diversity (mean pairwise L1, and LPIPS when available, between the k samples of one input) for a
diffusion sampler with k > 1. The FCN-score of the real photos comes first, as the ground-truth row.
"""
from __future__ import annotations

import csv
import html
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import pipelines
from .data.evaluation import EvalData
from .data.labels import label_to_tensor
from .metrics import ImageScores, l1
from .metrics.perceptual import try_lpips
from .metrics.inception import try_inception_distances
from .metrics.segmentation import ConfusionMatrix
from .pipelines.colorization import GrayBaseline
from .visualize import image_grid


@dataclass
class Comparison:
    columns: list[str]  # grid columns: input, ground truth, one per run (more for k > 1 samples)
    grid_rows: list[list[torch.Tensor]]
    table: list[dict] = field(default_factory=list)  # one dict per row: run, method, metrics
    notes: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for row in self.table:
            names += [k for k in row if k not in ("run", "method") and k not in names]
        return names

    @property
    def by_seed(self) -> list[dict]:
        """Runs named NAME_s0, NAME_s1, ... (or NAME_seed0, ...) grouped: per metric the mean and the
        sample standard deviation over the seeds, as "mean ± sd" rows (groups of 2 or more runs)."""
        groups: dict[str, list[dict]] = {}
        for row in self.table:
            m = re.fullmatch(r"(.+)_s(?:eed)?\d+", row["run"])
            if m:
                groups.setdefault(m.group(1), []).append(row)
        out = []
        for name, rows in groups.items():
            if len(rows) < 2:
                continue
            agg = {"run": name, "method": rows[0]["method"], "seeds": len(rows)}
            for metric in self.metric_names:
                values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float))]
                if len(values) == len(rows):
                    mean = sum(values) / len(values)
                    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
                    agg[metric] = f"{mean:.4f} ± {sd:.4f}"
            out.append(agg)
        return out


@dataclass
class Sampling:
    """How diffusion runs are sampled: k samples per input, sampler and steps, seed of input i = seed + i."""
    samples_per_input: int = 1
    steps: int = 50
    scheduler: str = "ddim"
    seed: int = 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _evaluation_items(data: EvalData):
    """Paired data as is; an image folder (data.kind=images) as grayscale input -> colour target."""
    if data.kind != "images":
        return data.items
    images = data.items

    class GrayToColour:
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            from .color import join_lab, split_lab
            rgb = images[i]["image"]
            l_norm, ab = split_lab(rgb[None])  # the input shown is the L that colorizers see
            return {"input": join_lab(l_norm, torch.zeros_like(ab))[0], "target": rgb}
    return GrayToColour()


def _diffusion_outputs(pipe, x: torch.Tensor, sampling: Sampling, index: int) -> torch.Tensor:
    """(1, C, H, W) condition -> (k, C_out, H, W). A model trained at another size samples at its own
    size (condition resized with nearest neighbours, which keeps label colours pure) and is resized back."""
    gen = torch.Generator(pipe.unet.device).manual_seed(sampling.seed + index)
    return pipe.sample_for(x, sampling.samples_per_input, sampling.steps, sampling.scheduler, gen)


class RunScores:
    """One image-making run's accumulators over the evaluation set."""

    def __init__(self, name: str, pipe, num_classes: int, lpips_metric, with_fcn: bool, centres=None,
                 distances=None):
        from .metrics.colorization import ColorizationScores
        self.name, self.pipe, self.lpips, self.distances = name, pipe, lpips_metric, distances
        self.images = ImageScores(lpips_metric)
        self.values: dict[str, list[float]] = {"diversity L1": [], "diversity LPIPS": []}
        self.cm = ConfusionMatrix(num_classes) if with_fcn else None
        self.colour = ColorizationScores(centres) if centres is not None else None

    def outputs(self, x: torch.Tensor, y: torch.Tensor, sampling: Sampling, index: int) -> torch.Tensor:
        """(k, C, H, W) in [-1, 1]: k = 1 except for diffusion samplers."""
        if self.pipe.kind == "diffusion":
            return _diffusion_outputs(self.pipe, x, sampling, index)
        if self.pipe.kind == "colorization":  # colours the target photo's own L channel; AuC recorded here
            from .color import split_lab
            return self.colour.update(y, self.pipe(split_lab(y)[0]).cpu())
        return self.pipe(x).cpu().float()

    def update(self, outs: torch.Tensor, y: torch.Tensor, label: Optional[torch.Tensor], seg) -> None:
        v = self.values
        for out in outs.split(1):
            self.images.add(out, y)
            if self.cm is not None:
                self.cm.update(seg(out)[0], label)
        if self.distances is not None and outs.shape[1] in (1, 3):
            self.distances.add_fake(self.name, outs)
        for a, b in itertools.combinations(outs.split(1), 2):
            v["diversity L1"].append(l1(a, b))
            if self.lpips is not None and a.shape[1] == 3:
                v["diversity LPIPS"] += self.lpips(a, b)

    def row(self) -> dict:
        row = {"run": self.name, "method": self.pipe.method}
        row.update(self.images.means())
        if self.lpips is None:
            row["LPIPS"] = "unavailable"
        if self.colour is not None:
            scores = self.colour.scores()
            row.update({"AuC": scores["AuC"], "AuC rebalanced": scores["AuC_rebalanced"],
                        "colourfulness": scores["colourfulness"]})
        if self.distances is not None and self.name in self.distances.fake:
            row.update({k: v for k, v in self.distances.report(self.name).items() if k in ("FID", "KID")})
        if self.cm is not None:
            row.update({f"FCN {m}": v for m, v in self.cm.scores().items()})
        if self.values["diversity L1"]:
            row["diversity L1"] = _mean(self.values["diversity L1"])
            row["diversity LPIPS"] = _mean(self.values["diversity LPIPS"]) if self.lpips else "unavailable"
        return row


def compare_runs(
    evaluation: EvalData,
    run_dirs: list[Path],
    segmenter: Optional[Path] = None,
    grid_rows: int = 6,
    max_images: Optional[int] = None,
    sampling: Optional[Sampling] = None,
    device: Optional[str] = None,
    distances=None,
) -> Comparison:
    """Every run on the same inputs: one table row per run (L1 / PSNR / SSIM / LPIPS / FID / KID,
    FCN-score with a segmenter, colorization AuC, DDPM diversity) and one grid. `distances`: an
    InceptionDistances to use (default: torchmetrics' Inception when cached, else reported missing)."""
    sampling = sampling or Sampling()
    if sampling.samples_per_input < 1:
        raise ValueError(f"samples per input must be >= 1, got {sampling.samples_per_input}")
    if evaluation.kind == "unpaired":
        raise ValueError("compare needs paired inputs (or an image folder for colorization); CycleGAN runs "
                         "are scored on their unpaired test split by sample.py evaluate")
    data, split = _evaluation_items(evaluation), evaluation.split
    n = len(data) if max_images is None else min(max_images, len(data))
    labelled, k = evaluation.kind == "segmentation", evaluation.num_classes
    names = [Path(r).name for r in run_dirs]
    if len(set(names)) < len(names):
        raise ValueError(f"runs share a folder name ({names}); the report names runs by folder, so give each "
                         "run a distinct folder name")
    pipes = {Path(r).name: pipelines.load(r, device=device) for r in run_dirs}
    seg = pipelines.load(segmenter, device=device) if segmenter else None
    if seg is not None and not labelled:
        raise ValueError("--segmenter needs labelled data (data.kind=segmentation) for the FCN-score")
    for name, pipe in pipes.items():
        if pipe.kind == "segmentation" and not labelled:
            raise ValueError(
                f"run {name} is a segmenter but the data has no labels (data.kind={evaluation.kind})"
            )
        if pipe.kind == "diffusion" and not pipe.condition_channels:
            raise ValueError(
                f"run {name} is an unconditional DDPM: it has no input to compare on; sample it with "
                f"sample.py {name} --num N"
            )
        if evaluation.kind == "images" and pipe.kind not in ("colorization", "diffusion"):
            raise ValueError(f"run {name} ({pipe.method}) needs paired data; data.kind=images only has "
                             "grayscale -> colour inputs, for colorization runs")
    lpips_metric, lpips_missing = try_lpips()
    distances, fid_missing = try_inception_distances(device, distances)
    from .evaluate import bins_of
    makers = {
        name: RunScores(
            name,
            pipe,
            k,
            lpips_metric,
            seg is not None,
            torch.from_numpy(bins_of(pipe, evaluation.bins)) if pipe.kind == "colorization" else None,
            distances,
        )
        for name, pipe in pipes.items()
        if pipe.kind != "segmentation"
    }
    colorizers = [name for name, pipe in pipes.items() if pipe.kind == "colorization"]
    gray = None
    if colorizers:  # the baseline every colorization table needs, scored by the same code (table only)
        baseline = GrayBaseline()
        gray = RunScores(baseline.method, baseline, k, lpips_metric, seg is not None,
                         torch.from_numpy(bins_of(baseline, evaluation.bins)), distances)
    cms = {name: ConfusionMatrix(k) for name, pipe in pipes.items() if pipe.kind == "segmentation"}
    truth_cm = ConfusionMatrix(k) if seg else None
    columns = ["input", "ground truth"]
    for name, pipe in pipes.items():
        extra = sampling.samples_per_input if pipe.kind == "diffusion" else 1
        columns += [name] + [f"{name} ({j + 1})" for j in range(1, extra)]
    rows = []
    for i in tqdm(range(n), desc=f"compare {split}", dynamic_ncols=True):
        item = data[i]
        x, y = item["input"][None], item["target"][None]
        label = item.get("label")
        row = [item["input"], item["target"]]
        if seg is not None:
            truth_cm.update(seg(y)[0], label)
        if distances is not None and y.shape[1] in (1, 3):
            distances.add_real(y)
        for name, pipe in pipes.items():
            if name in cms:
                pred = pipe(x)[0]
                cms[name].update(pred, label)
                row.append(label_to_tensor(pred.cpu(), k))
                continue
            outs = makers[name].outputs(x, y, sampling, i)
            makers[name].update(outs, y, label, seg)
            row += list(outs)
        if gray is not None:
            gray.update(gray.outputs(x, y, sampling, i), y, label, seg)
        if len(rows) < grid_rows:
            rows.append(row)
    result = Comparison(columns, rows)
    if seg is not None:
        result.table.append({"run": "ground truth (real photos)", "method": "real",
                             **{f"FCN {m}": v for m, v in truth_cm.scores().items()}})
    for name, pipe in pipes.items():
        result.table.append({"run": name, "method": pipe.method, **cms[name].scores()} if name in cms
                            else makers[name].row())
    if gray is not None:
        result.table.append(gray.row())
    if lpips_metric is None:
        result.notes.append(lpips_missing)
    if distances is None and makers:  # only image-making runs have FID / KID
        result.notes.append(fid_missing)
    elif makers:
        result.notes.append(f"FID / KID: against the {n} real target images of the split (torchmetrics' "
                            "Inception features); with fewer than 2048 images FID is biased upward: compare "
                            "runs at equal counts")
    for name, pipe in pipes.items():
        if pipe.kind == "diffusion":
            h, w = data[0]["input"].shape[-2:]
            how = "" if (h, w) == (pipe.sample_size,) * 2 else (
                f", at its training size {pipe.sample_size}x{pipe.sample_size} and resized to {h}x{w}")
            result.notes.append(
                f"{name}: {sampling.samples_per_input} sample(s) per input, {sampling.scheduler} "
                f"{sampling.steps} steps, seed {sampling.seed} + input index{how}"
            )
    if colorizers:
        photo = "the ground-truth photo (not the input column)"
        source = "the gray input" if evaluation.kind == "images" else photo
        result.notes.append(
            f"colorization runs ({', '.join(colorizers)}) colour the L channel of {source}; the "
            "grayscale baseline row (ab = 0) is scored by the same code"
        )
    return result


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def write_report(result: Comparison, out_dir: Path, title: str = "gen comparison") -> dict[str, Path]:
    """grid.png, metrics.csv, metrics.md, index.html (self-contained apart from grid.png)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["run", "method"] + result.metric_names
    paths = {"grid": out_dir / "grid.png", "csv": out_dir / "metrics.csv", "markdown": out_dir / "metrics.md",
             "html": out_dir / "index.html", "json": out_dir / "metrics.json"}
    image_grid(result.grid_rows, result.columns).save(paths["grid"])
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in result.table:
            writer.writerow([_cell(row.get(h)) for h in header])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(row.get(h)) for h in header) + " |" for row in result.table]
    seeds = result.by_seed
    seed_header = ["run", "method", "seeds"] + [h for h in result.metric_names if any(h in r for r in seeds)]
    if seeds:
        md += ["\nMean ± sd over seeds (runs named NAME_s<seed>):\n",
               "| " + " | ".join(seed_header) + " |", "|" + "---|" * len(seed_header)]
        md += ["| " + " | ".join(_cell(row.get(h)) for h in seed_header) + " |" for row in seeds]
    md += [f"\n{note}" for note in result.notes]
    paths["markdown"].write_text("\n".join(md) + "\n")
    paths["json"].write_text(json.dumps({"columns": result.columns, "table": result.table, "by_seed": seeds,
                                         "notes": result.notes}, indent=1))
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(h)))}</td>" for h in header) + "</tr>"
                   for r in result.table)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in result.notes)
    if seeds:
        seed_cells = "".join(f"<th>{html.escape(h)}</th>" for h in seed_header)
        seed_body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(h)))}</td>" for h in seed_header)
                            + "</tr>" for r in seeds)
        notes = f"<h2>Mean ± sd over seeds</h2><table><tr>{seed_cells}</tr>{seed_body}</table>" + notes
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
