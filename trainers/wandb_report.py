"""Log a `gen.compare.Comparison` to wandb. Offline unless WANDB_API_KEY is set.

A report folder is self-contained: the wandb run, its media and wandb's staging folder live inside
it, so a copied or moved folder syncs whole. What is logged:
- always: the grid, one image panel per column (`comparison/columns/<column>`, a row per input) and
  each run's numeric metrics in the summary (`comparison/<run>/<metric>`). The images are run files,
  which the transaction log names relative to the run folder.
- online also: a Table of the images side by side, the metrics Table and a bar chart per metric.
  wandb stores a Table as an artifact whose files its transaction log names by absolute path, so an
  offline Table would lose its cells once the folder is moved; online it is uploaded at once.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from gen.compare import Comparison, grid_images

from .runlog import wait_written

FOLDER_ENV = {"WANDB_DATA_DIR": "data", "WANDB_CACHE_DIR": "cache"}  # staging is under the data dir


@contextmanager
def wandb_inside(folder: Path) -> Iterator[None]:
    """wandb's data folder (artifact staging) and cache in `folder`/wandb while the block runs,
    instead of ~/.local/share/wandb and ~/.cache/wandb."""
    saved = {k: os.environ.get(k) for k in FOLDER_ENV}
    for key, sub in FOLDER_ENV.items():
        os.environ[key] = str(Path(folder).resolve() / "wandb" / sub)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def numeric_metrics(result: Comparison) -> list[str]:
    """The metrics that are numbers (or missing) in every row: the ones a chart or a summary can hold."""
    return [m for m in result.metric_names
            if all(isinstance(r.get(m), (int, float)) or r.get(m) is None for r in result.table)]


def log_tables(run, result: Comparison, rows: list) -> None:
    """The images Table, the metrics Table and a bar chart per metric (artifacts: online runs)."""
    import wandb

    images = wandb.Table(columns=result.columns)
    for row in rows:
        images.add_data(*[wandb.Image(img) for img in row])
    names = numeric_metrics(result)
    metrics = wandb.Table(
        columns=["run", "method"] + names,
        data=[[r["run"], r["method"]] + [r.get(m) for m in names] for r in result.table],
    )
    logged = {"comparison/images": images, "comparison/metrics": metrics}
    for m in names:
        bars = [[r["run"], r[m]] for r in result.table if isinstance(r.get(m), (int, float))]
        logged[f"comparison/bar/{m}"] = wandb.plot.bar(wandb.Table(columns=["run", m], data=bars), "run", m,
                                                       title=m)
    run.log(logged, step=0)


def log_comparison(result: Comparison, out_dir: Path, mode: str, project: str = "gen",
                   name: str = "compare", tables: Optional[bool] = None) -> Path:
    """Log the comparison into a wandb run under out_dir/wandb; `tables` (default: online only) adds
    the Tables and bar charts. Returns the run's files folder."""
    import wandb

    out_dir = Path(out_dir)
    with wandb_inside(out_dir):
        run = wandb.init(project=project, name=name, dir=str(out_dir), mode=mode, job_type="compare",
                         config={"runs": result.columns[2:]})
        rows = grid_images(result)
        logged = {f"comparison/columns/{column}": [wandb.Image(row[j], caption=f"row {i}")
                                                  for i, row in enumerate(rows)]
                  for j, column in enumerate(result.columns)}
        if (out_dir / "grid.png").is_file():
            logged["comparison/grid"] = wandb.Image(str(out_dir / "grid.png"))
        run.log(logged, step=0)
        for r in result.table:
            for m in result.metric_names:
                if isinstance(r.get(m), (int, float)):
                    run.summary[f"comparison/{r['run']}/{m}"] = r[m]
        if mode == "online" if tables is None else tables:
            log_tables(run, result, rows)
        run.finish()
        wait_written(Path(run.dir).parent)
    return Path(run.dir)
