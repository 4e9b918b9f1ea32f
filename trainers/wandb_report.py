"""Log a `gen.compare.Comparison` to wandb: a Table of the images side by side with each run's
metrics, the metrics Table, and a bar chart per metric. Offline unless WANDB_API_KEY is set."""
from __future__ import annotations

from pathlib import Path

from gen.compare import Comparison, grid_images


def log_comparison(result: Comparison, out_dir: Path, mode: str, project: str = "gen",
                   name: str = "compare") -> Path:
    import wandb

    run = wandb.init(project=project, name=name, dir=str(out_dir), mode=mode, job_type="compare",
                     config={"runs": result.columns[2:]})
    images = wandb.Table(columns=result.columns)
    for row in grid_images(result):
        images.add_data(*[wandb.Image(img) for img in row])
    metric_names = [m for m in result.metric_names
                    if all(isinstance(r.get(m), (int, float)) or r.get(m) is None for r in result.table)]
    metrics = wandb.Table(
        columns=["run", "method"] + metric_names,
        data=[[r["run"], r["method"]] + [r.get(m) for m in metric_names] for r in result.table],
    )
    logged = {"comparison/images": images, "comparison/metrics": metrics}
    for m in metric_names:
        rows = [[r["run"], r[m]] for r in result.table if isinstance(r.get(m), (int, float))]
        logged[f"comparison/bar/{m}"] = wandb.plot.bar(
            wandb.Table(columns=["run", m], data=rows), "run", m, title=m
        )
    run.log(logged)
    run.finish()
    return Path(run.dir)
