"""One picture of bench/ddpm_recipes.sh's samples: for each recipe, the sample column of its
`sample.py evaluate` grid (RUN/eval_<sampler>/grid.png: real | sample rows), side by side, labelled.

    python bench/ddpm_recipe_grid.py runs/ddpm_recipes --seed 0 --output reports/ddpm_recipes_s0.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gen.visualize import HEADER, image_grid  # noqa: E402

RECIPES = ("paper", "minsnr", "vzsnr", "cosine", "edm")


def sample_column(grid_png: Path, tile: int) -> list[torch.Tensor]:
    """The second column's tiles of an evaluate grid, back at `tile` pixels, as (3, tile, tile) in [-1, 1]."""
    img = Image.open(grid_png).convert("RGB")
    side = img.size[0] // 2
    rows = (img.size[1] - HEADER) // side
    out = []
    for r in range(rows):
        box = (side, HEADER + r * side, 2 * side, HEADER + (r + 1) * side)
        t = img.crop(box).resize((tile, tile), Image.NEAREST)
        out.append(torch.from_numpy(np.array(t)).permute(2, 0, 1).float() / 127.5 - 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="ddim50", help="eval folder suffix of the DDPM recipes (EDM: heun25)")
    p.add_argument("--tile", type=int, default=32)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    columns, labels = [], []
    for recipe in RECIPES:
        sampler = "heun25" if recipe == "edm" and args.sampler == "ddim50" else args.sampler
        grid = args.runs / f"{recipe}_s{args.seed}" / f"eval_{sampler}" / "grid.png"
        if grid.is_file():
            columns.append(sample_column(grid, args.tile))
            labels.append(f"{recipe} {sampler}")
    if not columns:
        print(f"no evaluate grids under {args.runs}", file=sys.stderr)
        return 1
    n = min(len(c) for c in columns)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image_grid([[c[i] for c in columns] for i in range(n)], labels).save(args.output)
    print(f"{len(columns)} recipes x {n} samples -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
