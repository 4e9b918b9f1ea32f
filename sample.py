"""Use a trained run without the training code.

python sample.py RUN_DIR --input DIR --output DIR      translate every image of a folder (any size)
python sample.py DDPM_RUN --num N --steps K --scheduler ddpm|ddim|dpm --seed S --output DIR
                                                      (EDM runs: --scheduler euler|heun|dpm)
                                                      diffusion samples as PNGs + grid.png; a conditional
                                                      DDPM takes --input DIR [--samples-per-input k]
python sample.py compare RUN_DIR [RUN_DIR ...] --data CONFIG_OR_RUN --output DIR [--segmenter RUN]
python sample.py evaluate RUN_DIR [--split test]       score a run on a split of its data: L1 / PSNR /
                                                      SSIM / FID / KID (paired), cycle PSNR + domain
                                                      classifier + FID (CycleGAN), AuC / PSNR /
                                                      colourfulness + gray baseline (colorization),
                                                      FID / KID of samples (DDPM)
python sample.py serve RUN_DIR [RUN_DIR ...] [--host 127.0.0.1] [--port 7860]
                                                      the runs in a browser page and as an API (Gradio,
                                                      pip install -e ".[serve]"; docs/serve.md)
python sample.py metrics RUN_DIR [RUN_DIR ...] [--keys 'train/*' ...] [--output curves.png]
                                                      the logged metrics of runs (RUN_DIR/metrics.jsonl):
                                                      a summary per metric, and their curves as a PNG
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

DEVICE_HELP = "auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
PRECISION_HELP = ("fp32 (default: what training's validation logs) or bf16 autocast (faster where the device "
                  "has bf16 units; outputs differ from fp32 by rounding)")
CIFAR10_HELP = ("unconditional DDPM runs: a CIFAR-10 folder (train/<class>/*.png, test/<class>/*.png) to "
                "train the classifier of FD_cifarnet / KID_cifarnet on, once (cached in $GEN_CACHE or "
                "~/.cache/gen); default ../shared/data/cifar10 beside the checkout, else the cached "
                "classifier")
SCHEDULERS = ["ddpm", "ddim", "dpm", "euler", "heun"]  # DDPM exports: ddpm, ddim, dpm; EDM: euler, heun, dpm
SCHEDULER_HELP = ("DDPM: sampler (default ddim); an EDM export (ddpm.formulation=edm) takes euler, heun or "
                  "dpm (default: the one its training grids used)")
# The command words; any other first item is a run directory, of the default command "run" (whose
# word is never typed: a run directory may be named "run")
NAMED = ("compare", "evaluate", "metrics", "serve")


# Flags of `sample.py RUN --output DIR` that only some kinds of run read: given to a run that would
# ignore them they are refused (refuse_unread_flags), so a flag on the command line always acts.
# scheduler None: the export's own sampler (gen.pipelines.diffusion.sampler_of).
FOLDER_DEFAULTS = {"num": 64, "steps": 50, "scheduler": None, "seed": None, "samples_per_input": 1,
                   "batch_size": 16, "full_size": False, "direction": None, "inference": None, "bit_depth": 8}
READS = {
    "translator": {"direction", "inference", "bit_depth"},
    "image-conditioned DDPM": {"steps", "scheduler", "seed", "samples_per_input", "full_size"},
    "unconditional DDPM": {"num", "steps", "scheduler", "seed", "batch_size"},
}


EVAL_DEFAULTS = {"steps": 50, "scheduler": None, "seed": None, "segmenter": None, "inference": None,
                 "cifar10": None}
# by the export's kind (pipeline.json): the model scored, whatever config --data names
EVAL_READS = {"translation": {"segmenter", "inference"}, "cyclegan": {"inference"},
              "unpaired_translation": {"inference"}, "segmentation": set(),
              "colorization": set(), "diffusion": {"steps", "scheduler", "seed", "segmenter", "cifar10"}}
EVAL_METHODS = ("pix2pix", "cyclegan", "cut", "segmentation", "colorization", "ddpm")


def refuse_unread_flags(args, kind: str) -> None:
    """ValueError naming every given flag that a `kind` run does not read (e.g. --batch-size for a
    translator, which translates one image at a time at its own size)."""
    unread = sorted(args.given - READS[kind])
    if unread:
        flags = ", ".join("--" + k.replace("_", "-") for k in unread)
        takes = ", ".join("--" + k.replace("_", "-") for k in sorted(READS[kind]))
        raise ValueError(f"{args.run_dir} is a {kind}: it does not read {flags} (it takes {takes})")


def check_counts(args, train_timesteps: int) -> None:
    """Sampling flags in range, named in the error (before any model work)."""
    if not 1 <= args.steps <= train_timesteps:
        raise ValueError(f"--steps {args.steps}: this model samples with 1..{train_timesteps} steps "
                         f"(it was trained with {train_timesteps} timesteps)")
    for flag, value in (("--num", args.num), ("--batch-size", args.batch_size),
                        ("--samples-per-input", args.samples_per_input)):
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")


def run(args) -> int:
    """The default command: a translator over --input, or a DDPM's samples (gen.folder_run)."""
    from gen import folder_run, pipelines

    pipe = pipelines.load(args.run_dir, direction=args.direction, inference=args.inference,
                          device=pipelines.resolve_device(args.device), precision=args.precision)
    one_channel = pipe.kind in pipelines.TRANSLATOR_KINDS and pipe.net.config.out_channels == 1
    if args.bit_depth == 16 and not one_channel:
        raise ValueError("--bit-depth 16 is for translators with single-channel outputs (e.g. depth maps)")
    if getattr(pipe, "kind", None) != "diffusion":
        refuse_unread_flags(args, "translator")
        if args.input is None:
            raise ValueError(f"{args.run_dir} translates images: pass --input DIR")
        folder_run.translate_folder(pipe, args.input, args.output, args.bit_depth, args.overwrite)
    elif pipe.condition_channels:
        refuse_unread_flags(args, "image-conditioned DDPM")
        args.scheduler = pipe.check_scheduler(args.scheduler)
        check_counts(args, pipe.scheduler.config.num_train_timesteps)
        if not args.input:
            raise ValueError(
                f"{args.run_dir} is an image-conditioned DDPM: pass --input DIR of condition images"
            )
        folder_run.sample_conditional(pipe, args.input, args.output, args.samples_per_input, args.steps,
                                      args.scheduler, args.seed, args.full_size, args.overwrite)
    else:
        refuse_unread_flags(args, "unconditional DDPM")
        args.scheduler = pipe.check_scheduler(args.scheduler)
        check_counts(args, pipe.scheduler.config.num_train_timesteps)
        if args.input:
            raise ValueError(f"{args.run_dir} is an unconditional DDPM: it takes no --input (use --num)")
        folder_run.sample_unconditional(pipe, args.output, args.num, args.batch_size, args.steps,
                                        args.scheduler, args.seed, args.overwrite)
    return 0


def evaluate(args) -> int:
    from gen import config
    from gen.evaluate import SavedOutputs, Sampling
    from gen.data.build import eval_data
    from gen.data.output_names import check_outputs
    from gen.pipelines import find_export, read_meta, resolve_device

    check_report_counts(args)
    run_dir = Path(args.run_dir)
    cfg_file = data_config(args.data) if args.data else run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found: evaluate reads the data from a run directory made "
                                "by train.py; for a converted model (python -m gen.convert) pass --data "
                                "CONFIG.yaml")
    cfg = config.load(cfg_file, args.overrides)
    if cfg.method not in EVAL_METHODS:
        raise ValueError(f"sample.py evaluate does not score method={cfg.method!r} runs; compare them with "
                         "sample.py compare")
    args.device = resolve_device(args.device)
    targets = checkpoint_targets(args, run_dir)
    out_dir = Path(args.output or run_dir / f"eval_{args.split}")
    outs = [t[1] for t in targets] or [out_dir]
    for out in outs:  # every output is checked before any export or score is written
        check_outputs([out / "metrics.json", out / "grid.png"], overwrite=args.overwrite)
        SavedOutputs(out / "outputs" if args.save_outputs else None, args.overwrite)
        if targets and args.keep_export:
            refuse_export_over(out / "export", run_dir, args.overwrite)
    with contextlib.ExitStack() as stack:
        exports = {}
        # The kind decides which flags are read: from the run's own export when it has one (every
        # checkpoint exports the same kind), else from the first checkpoint's, made in scratch and
        # moved into place only once the flags pass, so a refused command replaces no export.
        own = find_export(run_dir)
        kind = refuse_unread_eval_flags(args, run_dir, own) if own is not None or not targets else None
        if targets:
            from trainers.snapshot import export_checkpoint

            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            rebuild = [] if args.data else args.overrides  # --data's overrides are for that config
            for step, out in targets:
                made = scratch / f"step_{step}" / "export"
                exports[step] = export_checkpoint(run_dir, step, made, rebuild)
                if kind is None:
                    kind = refuse_unread_eval_flags(args, run_dir, exports[step])
                if args.keep_export:
                    exports[step] = replace_folder(made, out / "export")
                print(f"checkpoint step {step}: exported"
                      + (f" to {exports[step]}" if args.keep_export else ""))
        export = next(iter(exports.values()), None) or own
        if kind == "diffusion":
            args.scheduler = diffusion_scheduler(read_meta(export), args.scheduler, run_dir)
        data = eval_data(cfg, args.split)
        print(data.report)  # what the split found and skipped
        sampling = Sampling(1, args.steps, args.scheduler, args.seed)
        if not targets:
            saved = SavedOutputs(out_dir / "outputs" if args.save_outputs else None, args.overwrite)
            score_one(args, run_dir, data, out_dir, saved, sampling, None)
            return 0
        rows = []
        for step, out in targets:
            print(f"checkpoint step {step}:")
            saved = SavedOutputs(out / "outputs" if args.save_outputs else None, args.overwrite)
            rows.append((step, score_one(args, run_dir, data, out, saved, sampling, exports[step])))
    if len(rows) > 1:
        print(checkpoint_table(rows))
    return 0


def replace_folder(source: Path, target: Path) -> Path:
    """Move folder `source` to `target`, replacing a folder there (--overwrite was checked before);
    the old one is removed only once the new one is in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(target.name + ".replaced")
    if target.exists():
        target.rename(old)
    shutil.move(str(source), str(target))
    shutil.rmtree(old, ignore_errors=True)
    return target


def refuse_unread_eval_flags(args, run_dir: Path, export: "Path | None") -> "str | None":
    """The kind of `export` (None without one); a ValueError naming the given flags evaluate does not
    read for that kind."""
    from gen.pipelines import read_meta

    kind = read_meta(export).get("kind") if export else None
    unread = sorted(args.given - EVAL_READS.get(kind, set()))
    if unread and kind is not None:
        flags = ", ".join("--" + k.replace("_", "-") for k in unread)
        raise ValueError(f"{run_dir} holds a {kind} export: evaluate does not read {flags} for it")
    return kind


def refuse_export_over(path: Path, run_dir: Path, overwrite: bool) -> None:
    """--keep-export writes OUTPUT/export: never the run's own export, another only with --overwrite."""
    from gen.pipelines import find_export

    own = find_export(run_dir)
    if own is not None and path.resolve() == own.resolve():
        raise ValueError(f"--output {path.parent} would replace the run's own export {own}; choose another "
                         "--output")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; choose another --output or pass --overwrite")


def score_one(args, run_dir, data, out_dir, saved, sampling, export) -> dict:
    """Score one export (the run's own, or a checkpoint's) and write metrics.json and grid.png."""
    from gen.evaluate import evaluate as score

    result, grid = score(run_dir, data, args.inference, args.grid_rows, args.segmenter, args.device,
                         args.max_images, saved, sampling=sampling, precision=args.precision,
                         cifar10=args.cifar10, export=export)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    grid.save(out_dir / "grid.png")
    print(json.dumps(result, indent=1))
    print(
        f"grid and metrics.json in {out_dir}"
        + (f"; {saved.count} outputs in {saved.folder}" if saved.folder else "")
    )
    return result


def checkpoint_targets(args, run_dir: Path) -> list[tuple[int, Path]]:
    """evaluate --checkpoint STEP|all -> [(step, output folder)]; [] scores the final export.
    One step writes to --output (default RUN/eval_SPLIT_step_<STEP>); `all` to one folder per kept
    checkpoint, OUTPUT/step_<STEP> (default RUN/eval_SPLIT_step_<STEP>)."""
    from trainers.snapshot import checkpoint_path, steps

    if args.checkpoint is None:
        return []
    if args.checkpoint == "all":
        chosen = steps(run_dir)
        if not chosen:
            raise FileNotFoundError(f"{run_dir} keeps no complete checkpoint (checkpoints/step_*/meta.json)")
    else:
        try:
            chosen = [int(args.checkpoint)]
        except ValueError:
            raise ValueError(f"--checkpoint {args.checkpoint!r}: a step number (e.g. 1000) or "
                             "'all'") from None
        checkpoint_path(run_dir, chosen[0])  # a missing step is named before any data is read
    default = run_dir / f"eval_{args.split}"
    if args.output and len(chosen) == 1 and args.checkpoint != "all":
        return [(chosen[0], Path(args.output))]
    base = Path(args.output) if args.output else None
    return [(s, base / f"step_{s:08d}" if base else default.with_name(f"{default.name}_step_{s:08d}"))
            for s in chosen]


def checkpoint_table(rows: list[tuple[int, dict]]) -> str:
    """The numeric metrics of every scored checkpoint, one row per step (a Markdown table)."""
    keys = [k for k, v in rows[0][1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    lines = ["| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for step, result in rows:
        cells = [f"{result[k]:.4g}" if isinstance(result.get(k), float) else str(result.get(k, ""))
                 for k in keys]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diffusion_scheduler(meta: dict, name, run_dir) -> str:
    """The sampler of a diffusion export (pipeline.json `meta`): `name`, or None for the export's default;
    ValueError where the export's formulation (DDPM or EDM) does not take it."""
    from gen.pipelines.diffusion import sampler_of

    try:
        return sampler_of(meta.get("formulation", "ddpm"), meta.get("default_scheduler"), name)
    except ValueError as err:
        raise ValueError(f"--scheduler {name}: {run_dir}: {err}") from None


def data_config(data: str) -> Path:
    """--data: a config YAML, or a run directory whose config.yaml names the data."""
    path = Path(data)
    cfg_file = path / "config.yaml" if path.is_dir() else path
    if not cfg_file.is_file():
        raise FileNotFoundError(f"--data {data}: expected a config YAML or a run directory with config.yaml")
    return cfg_file


def check_report_counts(args) -> None:
    """--grid-rows, --max-images and (compare) --steps in range, before any model work."""
    for flag, value in (("--grid-rows", args.grid_rows), ("--max-images", args.max_images),
                        ("--samples-per-input", getattr(args, "samples_per_input", 1)),
                        ("--steps", getattr(args, "steps", 1))):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")


def compare(args) -> int:
    from gen import config
    from gen.compare import compare_runs, write_report
    from gen.methods import Sampling
    from gen.data.build import eval_data
    from gen.data.output_names import check_outputs
    from gen.pipelines import resolve_device

    check_report_counts(args)
    out_dir = Path(args.output)
    report = ("grid.png", "metrics.csv", "metrics.md", "metrics.json", "index.html")
    check_outputs([out_dir / n for n in report], overwrite=args.overwrite)
    cfg = config.load(data_config(args.data), args.overrides)
    sampling = Sampling(args.samples_per_input, args.steps, args.scheduler, args.seed)
    data = eval_data(cfg, args.split)
    print(data.report)  # what the split found and skipped
    result = compare_runs(data, [Path(r) for r in args.run_dirs], args.segmenter,
                          args.grid_rows, args.max_images, sampling, device=resolve_device(args.device),
                          precision=args.precision, cifar10=args.cifar10)
    paths = write_report(result, out_dir)
    print(paths["markdown"].read_text())
    mode = args.wandb or config.wandb_mode(cfg)
    if mode != "disabled":
        from trainers.wandb_report import log_comparison
        print(f"wandb run ({mode}) in {log_comparison(result, out_dir, mode, cfg.log.project)}")
    print(f"report: {paths['html']} (grid {paths['grid']}, {paths['csv']}, {paths['markdown']})")
    return 0


def metrics(args) -> int:
    """Summarize (and with --output plot) the metrics.jsonl of one or more runs."""
    # Only gen.curves: printing a run's metrics needs neither torch nor wandb.
    from gen.curves import METRICS_FILE, numeric_keys, plot_curves, read_metrics, select_keys, series_by_key

    rows = {}
    for run_dir in args.run_dirs:
        path = Path(run_dir) / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass run directories made by train.py (a run logs "
                                    f"every scalar to RUN_DIR/{METRICS_FILE} from its first log step)")
        name = Path(run_dir).name  # the folder's name, or its path where two runs share a name
        names = [Path(r).name for r in args.run_dirs]
        rows[name if names.count(name) == 1 else str(run_dir)] = read_metrics(path)
    keys = select_keys(list(dict.fromkeys(k for r in rows.values() for k in numeric_keys(r))), args.keys)
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise ValueError(f"--output {args.output} already exists; choose another file or pass --overwrite")
    curves = {k: {} for k in keys}
    for run, run_rows in rows.items():
        for key, line in series_by_key(run_rows, keys).items():
            curves[key][run] = line
    for key, runs in curves.items():
        for run, line in runs.items():
            finite = [(s, v) for s, v in line if v is not None]
            summary = (f"last {finite[-1][1]:.5g} (step {finite[-1][0]}), min {min(v for _, v in finite):.5g}"
                       if finite else "no finite value")
            print(f"{key:32s} {run:20s} {len(line):5d} points, steps {line[0][0]}..{line[-1][0]}: {summary}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        plot_curves(curves).save(args.output)
        print(f"curves of {len(curves)} metric(s) in {args.output}")
    return 0


def parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of each command but serve (gen.serve.cli's), by name; "run" is the default command,
    `sample.py RUN_DIR ...` with no command word. The flags of the commands that load runs come from
    one parent parser."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--device", default="auto", help=DEVICE_HELP)
    shared.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help=PRECISION_HELP)
    shared.add_argument("--overwrite", action="store_true", help="replace existing files in --output")
    sub = argparse.ArgumentParser(prog="sample.py").add_subparsers(dest="command")

    # Flags a run reads by kind default to None, so that one given to another kind is refused (READS).
    p = sub.add_parser("run", parents=[shared], prog="sample.py", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory (or its export/ folder)")
    p.add_argument("--input",
                   help="folder of input images (any size); condition images for a conditional DDPM")
    p.add_argument("--output", required=True, help="folder for the translated PNGs / samples")
    p.add_argument("--direction", choices=["AtoB", "BtoA"],
                   help="CycleGAN: which generator (default AtoB)")
    p.add_argument("--inference", choices=["paper", "eval"], help="override the exported inference mode")
    p.add_argument("--num", type=int, help="unconditional DDPM: number of samples (default 64)")
    p.add_argument("--steps", type=int,
                   help="DDPM: sampling steps (default 50; 1000 for the full DDPM chain)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help=SCHEDULER_HELP)
    p.add_argument("--seed", type=int, help="DDPM: seed of the sampling noise (default: the run's run.seed, "
                   "as its training grid); sample i, or an "
                   "input's k-th sample, is the same image whatever --batch-size or the folder's other files")
    p.add_argument("--samples-per-input", type=int, help="conditional DDPM: samples per input (default 1)")
    p.add_argument("--batch-size", type=int, help="unconditional DDPM: samples per batch (default 16)")
    p.add_argument("--full-size", action="store_true", default=None,
                   help="conditional DDPM: sample at each input's own size (default: at the training size, "
                   "resized back to the input's size)")
    p.add_argument("--bit-depth", type=int, choices=[8, 16], help="16: single-channel outputs as 16-bit "
                   "PNGs on the training data's 0..data.max_16bit scale")

    p = sub.add_parser("compare", parents=[shared], description="run every run on the same test inputs")
    p.add_argument("run_dirs", nargs="+",
                   help="runs to compare: translation, segmentation, colorization, conditional DDPM")
    p.add_argument("--data", required=True, help="a config YAML or a run directory whose data to use")
    p.add_argument("--output", required=True, help="folder for grid.png, metrics.csv/md/json, index.html")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--segmenter", help="a segmentation run: adds the FCN-score (real-photo row first)")
    p.add_argument("--grid-rows", type=int, default=6)
    p.add_argument("--max-images", type=int, help="score only the first N images of the split")
    p.add_argument("--samples-per-input", type=int, default=1,
                   help="DDPM runs: k samples per input; k > 1 adds the diversity columns")
    p.add_argument("--steps", type=int, default=50, help="DDPM runs: sampling steps")
    p.add_argument("--scheduler", choices=SCHEDULERS,
                   help="DDPM runs: sampler (default: each run's own, DDIM or EDM's Heun; EDM runs: "
                        "euler, heun or dpm)")
    p.add_argument("--seed", type=int, help="DDPM runs: sampling seed (default: each run's run.seed; an "
                   "input's noise is named by the seed and its file name)")
    p.add_argument("--wandb", choices=["offline", "online", "disabled"],
                   help="default: offline without an API key")
    p.add_argument("--cifar10", type=Path, help=CIFAR10_HELP)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides for --data")

    p = sub.add_parser("evaluate", parents=[shared], description="score a run on a split of its data")
    p.add_argument("run_dir")
    p.add_argument("--data", help="a config YAML (or run directory) whose data to score on; default: the "
                   "run's own config.yaml (required for a converted model)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--output", help="folder for metrics.json and grid.png (default RUN_DIR/eval_SPLIT)")
    p.add_argument("--grid-rows", type=int, default=8)
    p.add_argument("--inference", choices=["paper", "eval"], help="override the exported inference mode")
    p.add_argument("--segmenter", help="a segmentation run: adds the FCN-score of labels -> photo outputs")
    p.add_argument("--max-images", type=int, help="score only the first N images of the split (each domain)")
    p.add_argument("--steps", type=int, help="DDPM runs: sampling steps (default 50)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help=SCHEDULER_HELP)
    p.add_argument("--seed", type=int, help="DDPM runs: sampling seed (an input's noise is named by the "
                   "seed and its file name; default: the run's run.seed)")
    p.add_argument("--save-outputs", action="store_true",
                   help="also write every output to OUTPUT/outputs/<input stem>.png (labels -> photo: "
                        "<stem>_input.png beside it; CycleGAN: AtoB/ and BtoA/)")
    p.add_argument("--cifar10", type=Path, help=CIFAR10_HELP)
    p.add_argument("--checkpoint", metavar="STEP|all",
                   help="score the export of the run's checkpoint at STEP (or of every kept checkpoint: "
                        "the best step beside the final one) instead of its final export; written to "
                        "RUN_DIR/eval_SPLIT_step_<STEP> (or --output)")
    p.add_argument("--keep-export", action="store_true",
                   help="--checkpoint: keep each scored checkpoint's export in OUTPUT/export (to sample it; "
                        "as large as the run's export), instead of a temporary folder")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=/my/data")

    p = sub.add_parser("metrics", description="summarize and plot the metrics.jsonl of runs")
    p.add_argument("run_dirs", nargs="+", help="run directories made by train.py")
    p.add_argument("--keys", nargs="+", help="metrics to show, shell-style patterns such as 'train/*' "
                   "(quote them); default: all")
    p.add_argument("--output", help="write the curves as a PNG here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    return sub.choices


def take_given(args, defaults: dict) -> None:
    """args.given: the flags of `defaults` that the command line set (parsed with default None); the
    others take their value from `defaults`."""
    args.given = {k for k in defaults if getattr(args, k) is not None}
    for k, v in defaults.items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))


def compare_overrides(args) -> None:
    """key=value items among compare's runs are config overrides (a run directory is never named
    key=value)."""
    args.overrides += [r for r in args.run_dirs if "=" in r and not Path(r).exists()]
    args.run_dirs = [r for r in args.run_dirs if r not in args.overrides]


def evaluate_run_dir(args) -> None:
    """evaluate's run directory where an override came first: the first item that is not key=value."""
    if "=" in args.run_dir and not Path(args.run_dir).exists() and args.overrides:
        items = [args.run_dir] + args.overrides
        run_dirs = [a for a in items if "=" not in a or Path(a).exists()]
        if run_dirs:
            args.run_dir = run_dirs[0]
            args.overrides = [a for a in items if a is not args.run_dir]


def parse(argv: list[str]) -> tuple[argparse.Namespace, Callable[[argparse.Namespace], int]]:
    """The arguments of a sample.py command line and the function that runs its command."""
    command, rest = (argv[0], argv[1:]) if argv[:1] and argv[0] in NAMED else ("run", argv)
    if command == "serve":
        from gen.serve.cli import parse_args, serve  # its flags live there; gradio is imported only to serve

        return parse_args(rest), serve
    parser = parsers()[command]
    if command == "run":
        args = parser.parse_args(rest)
        take_given(args, FOLDER_DEFAULTS)
        return args, run
    # The command's parser itself, not argparse's subcommand dispatch (which parses with
    # parse_known_args): compare, evaluate and metrics take their positionals anywhere on the line.
    args = parser.parse_intermixed_args(rest)
    if command == "compare":
        compare_overrides(args)
    if command == "evaluate":
        take_given(args, EVAL_DEFAULTS)
        evaluate_run_dir(args)
    return args, {"compare": compare, "evaluate": evaluate, "metrics": metrics}[command]


def main(argv: list[str]) -> int:
    args, command = parse(argv)
    try:
        return command(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # A run owns its wandb service: one inherited from a parent that used wandb (a notebook, a test
    # runner) keeps a killed run's stream open, and the resume then fails with "run ID is in use".
    os.environ.pop("WANDB_SERVICE", None)
    sys.exit(main(sys.argv[1:]))
