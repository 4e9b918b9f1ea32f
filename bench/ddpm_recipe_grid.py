"""One picture of a DDPM recipe bench's samples: for each recipe, the sample column of its
`sample.py evaluate` grid, side by side, labelled. Unconditional (bench/ddpm_recipes.sh,
RUN/eval_<sampler>/grid.png: real | sample rows); --conditional (bench/ddpm_facades_recipes.sh,
RUN/eval_val/grid.png: condition | sample | target rows): the condition first and the target last.

    python bench/ddpm_recipe_grid.py runs/ddpm_recipes --seed 0 --output reports/ddpm_recipes_s0.png
    python bench/ddpm_recipe_grid.py runs/ddpm_facades_recipes --seed 1 --conditional --tile 48 \
        --output reports/ddpm_facades_recipes_s1.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gen.visualize import HEADER, image_grid  # noqa: E402

RECIPES = ("paper", "v", "minsnr", "vzsnr", "cosine", "edm")  # the names both recipe benches use


def sample_column(grid_png: Path, tile: int, column: int = 1, columns: int = 2) -> list[torch.Tensor]:
    """Column `column` (of `columns`) of an evaluate grid, its tiles back at `tile` pixels, as
    (3, tile, tile) in [-1, 1]."""
    img = Image.open(grid_png).convert("RGB")
    side = img.size[0] // columns
    rows = (img.size[1] - HEADER) // side
    out = []
    for r in range(rows):
        box = (column * side, HEADER + r * side, (column + 1) * side, HEADER + (r + 1) * side)
        t = img.crop(box).resize((tile, tile), Image.NEAREST)
        out.append(torch.from_numpy(np.array(t)).permute(2, 0, 1).float() / 127.5 - 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default=None,
                   help="eval folder suffix of the unconditional recipes (default ddim50, EDM's heun25); "
                        "a conditional run has one evaluation (eval_val), labelled by its metrics.json")
    p.add_argument("--tile", type=int, default=32)
    p.add_argument("--conditional", action="store_true",
                   help="grids of bench/ddpm_facades_recipes.sh (RUN/eval_val: condition | sample | target)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    if args.conditional and args.sampler:
        p.error("--sampler chooses among the unconditional bench's evaluations; a conditional run has one")
    columns, labels, first = [], [], None
    for recipe in RECIPES:
        sampler = "heun25" if recipe == "edm" and args.sampler is None else args.sampler or "ddim50"
        folder = "eval_val" if args.conditional else f"eval_{sampler}"
        grid = args.runs / f"{recipe}_s{args.seed}" / folder / "grid.png"
        if grid.is_file():
            columns.append(sample_column(grid, args.tile, 1, 3 if args.conditional else 2))
            if args.conditional:  # "ddim 50 steps, seed 1" -> "ddim50": what evaluate sampled with
                name, steps = json.loads((grid.parent / "metrics.json").read_text())["sampler"].split()[:2]
                sampler = f"{name}{steps}"
            labels.append(f"{recipe} {sampler}")
            first = first or grid
    if args.conditional and first is not None:
        columns = [sample_column(first, args.tile, 0, 3), *columns, sample_column(first, args.tile, 2, 3)]
        labels = ["condition", *labels, "target"]
    if not columns:
        print(f"no evaluate grids under {args.runs}", file=sys.stderr)
        return 1
    n = min(len(c) for c in columns)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image_grid([[c[i] for c in columns] for i in range(n)], labels).save(args.output)
    print(f"{len(columns)} columns x {n} rows -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
