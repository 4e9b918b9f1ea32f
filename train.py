"""Train any method: `python train.py CONFIG.yaml [key=value ...]` (or only key=value overrides).

Many GPUs / processes: `accelerate launch train.py CONFIG.yaml ...`. Training the same run.dir
again resumes from its newest complete checkpoint.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
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
    sys.exit(main(sys.argv[1:]))
