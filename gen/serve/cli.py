"""`python sample.py serve RUN [RUN ...]`: the command line (Gradio is imported only to serve)."""
from __future__ import annotations

import argparse

from .inputs import DEFAULT_MAX_PIXELS


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sample.py serve",
                                description="trained runs in a browser page and as an API (docs/serve.md)")
    p.add_argument("run_dirs", nargs="+", help="run directories (or export/ folders) of any kind")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto",
                   help="auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest upload in pixels, width x height (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--max-samples", type=int, default=16, help="DDPM: most samples per request (default 16)")
    return p.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    from ..pipelines import resolve_device
    from .runs import Limits, load_runs

    for flag, value in (("--max-pixels", args.max_pixels), ("--max-samples", args.max_samples)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: must be in 0..65535")
    from pathlib import Path

    from ..pipelines import find_export

    for run in args.run_dirs:  # before the slow import of gradio and the weights
        if find_export(run) is None:
            raise FileNotFoundError(f"{run}: no exported run here (run directory or export/ folder with "
                                    "pipeline.json not found)" if not Path(run).exists() else
                                    f"{run} holds no exported pipeline (pipeline.json missing); train to "
                                    "the end (or resume) to write run_dir/export")
    try:
        from .app import build_app, endpoint, launch
    except ImportError as err:
        raise ValueError(str(err)) from None
    runs = load_runs(args.run_dirs, resolve_device(args.device))
    demo = build_app(runs, Limits(args.max_pixels, args.max_samples))
    for run in runs:
        print(f"serving {run.describe()}: API /{endpoint(run.name)}")
    print(f"page and API on http://{args.host}:{args.port}/ (one job at a time; Ctrl+C stops)", flush=True)
    launch(demo, args.host, args.port)
    return 0
