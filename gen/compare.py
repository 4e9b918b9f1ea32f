"""Side-by-side comparison of runs on the same test inputs: a grid, a metrics table (CSV, markdown),
and a static HTML report. `trainers.wandb_report` puts the same table into wandb.

Each run is scored by its method's scoring (gen/methods), the code behind training's validation and
`sample.py evaluate`: image-making runs (pix2pix, L1-only, conditional DDPM) by L1 / PSNR / SSIM /
LPIPS / FID / KID against the target and, with a segmenter on labelled data, by FCN-score (the real
photos' FCN-score first, as the ground-truth row); colorization by AuC and colourfulness (colouring the
target photo's L channel, beside the grayscale baseline row); segmentation by pixel accuracy, mean
accuracy and mean IU; a diffusion sampler with k > 1 also by diversity (mean pairwise L1, and LPIPS
when available, between the k samples of one input); an unconditional DDPM by FID / KID and, for 32x32
RGB samples, FD_cifarnet / KID_cifarnet of its samples against the split's real images.
"""
from __future__ import annotations

import csv
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import pipelines
from .data.evaluation import EvalData
from .methods import Context, Sampling, scoring_for
from .metrics.inception import try_inception_distances
from .metrics.offline_score import try_cifar_distances, unavailable_for
from .metrics.perceptual import try_lpips
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
            rgb, name = images[i]["image"], images[i]["name"]
            l_norm, ab = split_lab(rgb[None])  # the input shown is the L that colorizers see
            return {"input": join_lab(l_norm, torch.zeros_like(ab))[0], "target": rgb, "name": name}
    return GrayToColour()


UNPAIRED_KINDS = ("cyclegan", "unpaired_translation")  # exports scored on unpaired data (testA / testB)


def _domain_classifier(run_dir: Path, evaluation: EvalData, device):
    """The domain classifier of unpaired scoring, trained on (or cached from) the training files as
    sample.py evaluate trains it, in the first compared run's directory."""
    from .evaluate import domain_classifier
    return domain_classifier(Path(run_dir), evaluation.files["trainA"], evaluation.files["trainB"], device)


def _table_row(name: str, method: str, result: dict) -> dict:
    """A scoring's result as one table row: scalars as columns, the FCN-score as "FCN <metric>"."""
    row = {"run": name, "method": method}
    for key, value in result.items():
        if key in ("inference", "sampler", "split", "images", "images_A", "images_B",
                   "fcn_score_ground_truth"):
            continue
        if key == "fcn_score":
            row.update({f"FCN {m}": v for m, v in value.items()})
        elif not isinstance(value, dict):
            row[key] = value
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
    precision: Optional[str] = None,
    cifar10: Optional[Path] = None,
    cifar=None,
) -> Comparison:
    """Every run on the same inputs, each scored by its method's scoring (gen/methods, the code of
    training's validation and sample.py evaluate): one table row per run and one grid. `distances`:
    an InceptionDistances to use (default: torchmetrics' Inception when cached, else reported missing).
    Unconditional DDPM runs also get FD_cifarnet / KID_cifarnet: in `cifar` (a CifarDistances), else a
    classifier trained on (or cached from) the CIFAR-10 folder `cifar10`, as sample.py evaluate."""
    sampling = sampling or Sampling()
    if sampling.samples_per_input < 1:
        raise ValueError(f"samples per input must be >= 1, got {sampling.samples_per_input}")
    unpaired = evaluation.kind == "unpaired"
    if unpaired:  # CycleGAN and CUT runs: every A test file (the grid's rows), then every B file
        from .evaluate import split_items
        data, _ = split_items(None, evaluation, max_images)
        n = len(data)
    else:
        data = _evaluation_items(evaluation)
        n = len(data) if max_images is None else min(max_images, len(data))
    split = evaluation.split
    names = [Path(r).name for r in run_dirs]
    if len(set(names)) < len(names):
        raise ValueError(f"runs share a folder name ({names}); the report names runs by folder, so give each "
                         "run a distinct folder name")
    # unpaired data scores CycleGAN both ways; on pairs a CycleGAN run is its A -> B translator
    load = pipelines.load_export if unpaired else pipelines.load
    pipes = {Path(r).name: load(r, device=device, precision=precision) for r in run_dirs}
    seg = pipelines.load(segmenter, device=device, precision=precision) if segmenter else None
    if seg is not None and evaluation.kind != "segmentation":
        raise ValueError("--segmenter needs labelled data (data.kind=segmentation) for the FCN-score")
    lpips_metric, lpips_missing = try_lpips()
    distances, fid_missing = try_inception_distances(device, distances)
    unconditional = [p for p in pipes.values() if p.kind == "diffusion" and not p.condition_channels]
    cifar_missing = ""
    if cifar10 is not None and not unconditional:
        raise ValueError("--cifar10 is read for unconditional DDPM runs only, and none is compared")
    if cifar is None and any(not unavailable_for(p.unet.config.out_channels, (p.sample_size,) * 2)
                             for p in unconditional):
        cifar, cifar_missing = try_cifar_distances(cifar10, device)
    scorings, classifier = {}, None
    for name, pipe in pipes.items():
        # the image-making extras (LPIPS, FID / KID, FCN-score): only scorings that make images read them
        ctx = Context(grid_rows=0, lpips=lpips_metric, lpips_missing="" if lpips_metric else "unavailable",
                      distances=distances, segmenter=seg, bins=evaluation.bins, sampling=sampling)
        if any(p is pipe for p in unconditional):
            ctx.lpips_missing = ""  # its samples have no target to be compared with
            ctx.cifar_missing = (unavailable_for(pipe.unet.config.out_channels, (pipe.sample_size,) * 2)
                                 or cifar_missing)
            ctx.cifar = cifar if not ctx.cifar_missing else None
        if unpaired and pipe.kind not in UNPAIRED_KINDS:
            raise ValueError(f"run {name} ({pipe.method}) needs paired data; unpaired data (testA / testB) "
                             "has no targets")
        if unpaired and evaluation.channels == (3, 3):
            ctx.classifier = classifier = classifier or _domain_classifier(run_dirs[0], evaluation, device)
        scorings[name] = scoring = scoring_for(pipe, ctx, evaluation.kind)
        reason = scoring.refuse(evaluation.kind, name)
        if reason:
            raise ValueError(reason)
    makers = [name for name, scoring in scorings.items() if scoring.makes_images]
    columns = ["input (A)"] if unpaired else ["input", "ground truth"]
    for name, scoring in scorings.items():
        columns += [name] + [f"{name} ({j + 1})" for j in range(1, scoring.outputs_per_item)]
    rows = []
    # Each run in the batches its evaluate uses (score_items: batch_size items from 0), so its figures
    # are evaluate's to the last bit: a batched network's sums follow the batch on many threads.
    chunk = math.lcm(*(scoring.batch_size for scoring in scorings.values()))
    for start in tqdm(range(0, n, chunk), desc=f"compare {split}", dynamic_ncols=True):
        items = [data[i] for i in range(start, min(start + chunk, n))]
        outputs = [[] for _ in items]
        for scoring in scorings.values():
            for b in range(0, len(items), scoring.batch_size):
                for j, out in enumerate(scoring.add(items[b:b + scoring.batch_size]), start=b):
                    outputs[j] += list(out)
        for item, outs in zip(items, outputs):
            row = [item["image"]] if unpaired else [item["input"], item["target"]]
            if len(rows) < grid_rows and (not unpaired or item["domain"] == "A"):  # unpaired: A -> B rows
                rows.append(row + outs)
    result = Comparison(columns, rows)
    results = {name: scoring.result() for name, scoring in scorings.items()}
    key = "fcn_score_ground_truth"
    truth = next((r[key] for r in results.values() if key in r), None)
    if truth is not None:
        result.table.append({"run": "ground truth (real photos)", "method": "real",
                             **{f"FCN {m}": v for m, v in truth.items()}})
    for name, pipe in pipes.items():
        result.table.append(_table_row(name, pipe.method, results[name]))
    baselines = {}
    for scoring in scorings.values():  # reference rows (colorization's gray), scored by the same code
        baselines.update(scoring.baselines())
    for name, scores in baselines.items():
        result.table.append(_table_row(name.replace("_", " "), "baseline", scores))
    if lpips_metric is None and makers:
        result.notes.append(lpips_missing)
    if unpaired:
        count = {dom: sum(1 for d, _ in data.entries if d == dom) for dom in "AB"}
        fid = "" if distances is None else "; FID / KID against the real test images of the target domain"
        result.notes.append(
            f"unpaired: every run translates the same {count['A']} A and {count['B']} B test images; the "
            "grid shows A -> B; translated_A_judged_B is the share of translations a domain classifier "
            f"(trained on the real training images, cached in {run_dirs[0]}) calls B, with its accuracy on "
            f"the real test images beside it{fid}")
    if distances is None and makers:  # only image-making runs have FID / KID
        result.notes.append(fid_missing)
    elif makers and not unpaired:
        result.notes.append(f"FID / KID: against the {n} real target images of the split (torchmetrics' "
                            "Inception features); with fewer than 2048 images FID is biased upward: compare "
                            "runs at equal counts")
    size = tuple(data[0]["image" if unpaired else "input"].shape[-2:]) if n else (0, 0)
    for name, scoring in scorings.items():
        result.notes += scoring.notes(name, evaluation.kind, size)
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
