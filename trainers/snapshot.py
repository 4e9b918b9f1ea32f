"""The export a kept checkpoint would have written: what `sample.py evaluate RUN --checkpoint STEP`
scores, so a run's best step (CUT reports its best epoch) and its final export are scored the same
way, through the one inference path (export -> gen.pipelines).

The run's trainer is rebuilt from RUN/config.yaml (in a scratch run.dir: the run itself is only read),
the checkpoint's weights and tracked state (generator EMA, LR plan) are loaded, and the trainer's own
`export` writes the folder, atomically.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from gen import config as config_lib

from . import checkpoint


def steps(run_dir: Path) -> list[int]:
    """The steps of RUN's complete-looking checkpoints, oldest first."""
    found = checkpoint.checkpoint_dirs(Path(run_dir) / "checkpoints")
    return sorted(int(p.name.split("_")[1]) for p in found)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """RUN/checkpoints/step_<step>; FileNotFoundError listing the kept steps when it is not there."""
    run_dir = Path(run_dir)
    kept = steps(run_dir)
    if step not in kept:
        raise FileNotFoundError(
            f"{run_dir} has no complete checkpoint at step {step}; kept: {kept or 'none'} "
            "(train.keep_checkpoints sets how many a run keeps)")
    return run_dir / "checkpoints" / f"step_{step:08d}"


def export_checkpoint(run_dir: Path, step: int, output: Path, device: Optional[str] = None) -> Path:
    """Write the export of RUN's checkpoint at `step` to `output` (replaced atomically); returns it.
    `device`: where the trainer is rebuilt (default the CPU: an export needs no accelerator)."""
    from . import TRAINERS  # the trainers import this module's package

    run_dir, output = Path(run_dir), Path(output)
    path = checkpoint_path(run_dir, step)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: a checkpoint is exported with the config of the run "
                                "that wrote it")
    loaded = checkpoint._load_one(path, 0)
    with tempfile.TemporaryDirectory(prefix="gen_snapshot_") as scratch:
        cfg = config_lib.load(cfg_file, [f"run.dir={scratch}", "log.wandb=disabled",
                                         f"train.device={device or 'cpu'}"])
        trainer = TRAINERS[cfg.method](cfg)
        trainer.build_data()
        trainer.build()
        for name, sd in loaded.models.items():
            if name not in trainer.models:
                raise ValueError(f"checkpoint {path} has model {name!r} that {cfg_file} does not build "
                                 f"({sorted(trainer.models)})")
            checkpoint.load_weights(trainer.unwrap(name), name, sd, path)
        trainer.load_extra_state(loaded.state.get("extra", {}))
        trainer.step = loaded.step
        trainer.on_device()
        output.parent.mkdir(parents=True, exist_ok=True)
        trainer.write_export(output)
    return output
