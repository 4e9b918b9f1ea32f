"""Train any method: `python train.py CONFIG.yaml [key=value ...]` (or only key=value overrides).

  python train.py configs/quickstart.yaml                    pix2pix on built-in data, about 2 minutes
  python train.py configs/pix2pix/facades.yaml train.max_steps=2000 run.dir=runs/mine
  python train.py --list                                     configs, methods, model presets, every key

Methods: pix2pix, cyclegan, colorization, ddpm, segmentation, rotation (key `method`). Keys are
dotted (`train.lr=1e-4`, `model.generator=unet_128`); the schema with every key and its default is
gen/config.py. Many GPUs / processes: `accelerate launch train.py CONFIG.yaml ...`. Training the
same run.dir again resumes from its newest complete checkpoint.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def listing() -> str:
    """Configs, methods, presets and every config key with its default."""
    from gen import config
    from gen.models import list_models

    root = Path(__file__).resolve().parent
    configs = sorted(str(p.relative_to(root)) for p in (root / "configs").rglob("*.yaml"))
    lines = ["configs:", *(f"  {c}" for c in configs),
             f"methods: {', '.join(config.METHODS)}",
             f"model.generator presets: {', '.join(list_models('generator'))}",
             f"model.discriminator presets: {', '.join(list_models('discriminator'))}",
             "keys (default):"]
    choices = config.CHOICES
    for key, value in config.flatten(config.ExperimentConfig()).items():
        allowed = f"  [{' | '.join(map(str, choices[key]))}]" if key in choices else ""
        lines.append(f"  {key}={'null' if value is None else value}{allowed}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] == "--list":
        print(listing())
        return 0
    from gen import config
    from trainers import TRAINERS

    try:
        # Without a YAML file (first argument already key=value) the schema defaults are the base.
        cfg = config.load(None, argv) if "=" in argv[0] else config.load(argv[0], argv[1:])
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        export = TRAINERS[cfg.method](cfg).fit()
    except (ValueError, OSError, FloatingPointError) as err:
        message = str(err)
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the last line
            message = message.strip().splitlines()[-1]
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"done: export in {export}")
    return 0


if __name__ == "__main__":
    # A run owns its wandb service: one inherited from a parent that used wandb (a notebook, a test
    # runner) keeps a killed run's stream open, and the resume then fails with "run ID is in use".
    os.environ.pop("WANDB_SERVICE", None)
    sys.exit(main(sys.argv[1:]))
