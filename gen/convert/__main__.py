"""python -m gen.convert reference PATH --out DIR       pix2pix/CycleGAN/CUT reference .pth (or its folder)
python -m gen.convert diffusers SOURCE --out DIR      UNet2DModel folder or cached hub id -> gen DDPM
python -m gen.convert to-diffusers RUN --out DIR      gen DDPM export -> diffusers DDPMPipeline folder
python -m gen.convert onnx RUN --out DIR              gen export -> DIR/NAME.onnx + onnx.json (docs/onnx.md)

DIR/export/ is a normal gen export: sample.py DIR, sample.py evaluate DIR --data CONFIG, sample.py compare
and model.init_from=DIR use it like a trained run. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def reference(args) -> int:
    from .exports import convert_reference_files, read_train_opt, reference_files, write_translation_export

    path = Path(args.path)
    opts = read_train_opt(path) if path.is_dir() else {}
    files = reference_files(path, args.epoch) if path.is_dir() else {"G": path}
    cyclegan_folder = "G_A" in files or "G_B" in files
    notes = []
    if opts.get("model") == "cut" and "D" in files:
        files.pop("D")  # its PatchGAN blurs after each strided conv: no gen counterpart
        notes.append("CUT's anti-aliased discriminator is not converted (gen has no such PatchGAN); "
                     "model.init_from starts a fresh one")
    if args.discriminator:
        if cyclegan_folder:
            raise ValueError(f"{path} holds CycleGAN networks (G_A, G_B): their discriminators are read from "
                             "the folder; --discriminator is for a pix2pix generator")
        files["D"] = Path(args.discriminator)
    for role, extra in (("G_B", args.generator_b), ("D_B", args.discriminator_b)):
        if extra:
            files[role] = Path(extra)
    if "D_B" in files and "G_B" not in files:
        raise ValueError("--discriminator-b belongs to a CycleGAN pair: give --generator-b too")
    if "G_B" in files and "G" in files:  # G given as a file plus --generator-b: a CycleGAN pair
        files["G_A"] = files.pop("G")
        if "D" in files:
            files["D_A"] = files.pop("D")
    cyclegan = "G_A" in files or "G_B" in files
    dropout = args.dropout
    if dropout is None and "no_dropout" in opts:
        dropout = 0.0 if opts["no_dropout"] == "True" else 0.5
        notes.append(f"dropout {dropout} from {path / 'train_opt.txt'} (no_dropout: {opts['no_dropout']})")
    elif dropout is None and cyclegan:
        dropout = 0.0  # the reference's CycleGAN sets no_dropout=True by default
        notes.append("dropout 0 (the reference trains CycleGAN without dropout; --dropout 0.5 if yours did)")
    direction = args.direction or opts.get("direction") or "AtoB"
    if ("G_A" in files) != ("G_B" in files):  # one CycleGAN direction only: a single translator
        side = "A" if "G_A" in files else "B"
        direction = "AtoB" if side == "A" else "BtoA"
        files = {r: files[f"{r}_{side}"] for r in ("G", "D") if f"{r}_{side}" in files}
    nets = convert_reference_files(files, dropout)
    both = "G_A" in nets
    g = nets["G_A" if both else "G"]
    cut_mode = "fastcut" if opts.get("CUT_mode", "").lower() == "fastcut" else "cut"
    methods = {"cycle_gan": "cyclegan", "pix2pix": "pix2pix", "cut": cut_mode}
    method = args.method or methods.get(opts.get("model", ""))
    if method is None and g.preset.endswith("_antialias"):
        method = "cut"  # the weights' hint: only CUT's ResNet blurs its resampling
    if method is None:  # the weights' hint: CycleGAN's ResNet has instance norm and no dropout
        resnet_cyclegan = g.preset.startswith("resnet") and g.options["norm"] == "instance" and not g.options[
            "dropout"]
        method = "cyclegan" if cyclegan or resnet_cyclegan else "pix2pix"
    export = write_translation_export(Path(args.out), nets, method, args.inference, direction, args.overwrite,
                                      {"source": {r: str(p) for r, p in files.items()}, "notes": notes})
    for role, conv in sorted(nets.items()):
        print(f"{role} {files[role]}: {conv.describe()}")
    for note in notes:
        print(f"  - {note}")
    how = ("dropout on and batch statistics of each test image, as the reference's test.py without --eval"
           if args.inference == "paper" else "dropout off, running statistics, as the reference's --eval")
    print(f"inference: {args.inference} ({how}); change it per call with sample.py --inference")
    print(f"wrote {'a CycleGAN' if both else 'a ' + method + ' ' + direction} export to {export}")
    return 0


def diffusers_in(args) -> int:
    from diffusers import DDPMScheduler

    from .diffusers_unet import find_scheduler_config, from_unet2d, load_unet2d
    from .exports import write_diffusion_export

    model, folder = load_unet2d(args.source)
    unet = from_unet2d(model, f"the UNet2DModel in {folder}")
    sched_file = find_scheduler_config(folder)
    if sched_file is not None:
        scheduler = DDPMScheduler.from_config(json.loads(sched_file.read_text()))
        note = f"noise schedule from {sched_file}"
    else:
        scheduler = DDPMScheduler()
        note = "no scheduler config beside the U-Net: Ho et al.'s linear schedule (1e-4..0.02, 1000 steps)"
    size = args.sample_size or model.config.sample_size
    if not isinstance(size, int):
        raise ValueError(f"sample_size {size!r}: pass --sample-size N (square samples)")
    export = write_diffusion_export(
        Path(args.out), unet, scheduler, size, args.overwrite, {"source": str(folder), "scheduler": note}
    )
    n = sum(p.numel() for p in unet.parameters())
    print(
        f"{folder}: UNet2DModel -> gen ddpm UNet, {n:,} parameters, channels {list(unet.config.channels)}, "
        f"attention at levels {list(unet.config.attention_levels)}; {note}"
    )
    print(f"wrote a DDPM export ({size}x{size} samples) to {export}")
    return 0


def to_diffusers(args) -> int:
    from .exports import write_diffusers_pipeline

    out = write_diffusers_pipeline(Path(args.run), Path(args.out), args.overwrite)
    print(
        f"wrote a diffusers DDPMPipeline folder to {out}: "
        f"DDPMPipeline.from_pretrained({str(out)!r}) loads it with diffusers alone"
    )
    return 0


def onnx(args) -> int:
    from .onnx import PARITY_LIMIT, export_onnx

    spec = export_onnx(args.run, args.out, args.inference, args.overwrite, args.opset)
    over = []
    for name, model in spec["models"].items():
        measured = model["parity"]
        figures = ("onnxruntime not installed: parity not measured" if measured is None else
                   ", ".join(f"{k} {v:.2e}" + (" of pixels differ" if k == "labels" else " max |diff|")
                             for k, v in measured.items()))
        over += [f"{name} {k}" for k, v in (measured or {}).items() if k != "labels" and v > PARITY_LIMIT]
        print(f"{Path(args.out) / model['file']}: inputs {', '.join(model['inputs'])}, H and W multiples of "
              f"{model['multiple']}, {model['inference']} inference; vs PyTorch: {figures}")
    print(f"wrote {len(spec['models'])} ONNX model(s) and {Path(args.out) / 'onnx.json'}")
    if over:
        print(f"error: {', '.join(over)} differ from PyTorch by more than {PARITY_LIMIT:g}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gen.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reference", help="reference pix2pix/CycleGAN checkpoints -> gen export")
    r.add_argument("path", help="a *_net_G.pth file, or a reference checkpoints/NAME/ folder")
    r.add_argument("--out", required=True, help="run directory to write (DIR/export/)")
    r.add_argument("--discriminator", help="the matching *_net_D.pth (kept for fine-tuning)")
    r.add_argument("--generator-b", help="CycleGAN: *_net_G_B.pth (PATH is then G_A)")
    r.add_argument("--discriminator-b", help="CycleGAN: *_net_D_B.pth")
    r.add_argument("--epoch", default="latest", help="folder PATH: which epoch's files (default latest)")
    r.add_argument(
        "--method", choices=["pix2pix", "cyclegan", "cut", "fastcut"],
        help="the label reports show (default: inferred); cut / fastcut write a CUT export (unpaired scoring)"
    )
    r.add_argument(
        "--direction", choices=["AtoB", "BtoA"],
        help="single generator: what it maps (default: train_opt.txt's direction, else AtoB)"
    )
    r.add_argument(
        "--inference",
        choices=["paper", "eval"],
        default="paper",
        help="paper (default, the reference test.py): dropout on, batch statistics; eval: --eval",
    )
    r.add_argument(
        "--dropout",
        type=float,
        help="U-Net generators: 0 if trained with --no_dropout (default 0.5; weights cannot show it)",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing DIR/export")
    d = sub.add_parser("diffusers", help="diffusers UNet2DModel -> gen DDPM export")
    d.add_argument(
        "source", help="a folder with config.json + weights (or unet/), or a hub id in the local cache"
    )
    d.add_argument("--out", required=True, help="run directory to write (DIR/export/)")
    d.add_argument("--sample-size", type=int, help="default: the UNet2DModel's sample_size")
    d.add_argument("--overwrite", action="store_true", help="replace an existing DIR/export")
    t = sub.add_parser("to-diffusers", help="gen DDPM export -> diffusers DDPMPipeline folder")
    t.add_argument("run", help="a DDPM run directory or its export/")
    t.add_argument("--out", required=True, help="folder to write (model_index.json, unet/, scheduler/)")
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    o = sub.add_parser("onnx", help="gen export -> ONNX models (dynamic batch, height and width)")
    o.add_argument("run", help="a run directory or its export/: translator, colorization, segmentation, DDPM")
    o.add_argument("--out", required=True, help="folder for NAME.onnx and onnx.json")
    o.add_argument("--inference", choices=["paper", "eval"],
                   help="translators: default the export's own mode; paper adds dropout noise inputs")
    o.add_argument("--opset", type=int, help="ONNX opset (default: torch.onnx's)")
    o.add_argument("--overwrite", action="store_true", help="replace existing NAME.onnx / onnx.json in --out")
    args = p.parse_args(argv)
    run = {"reference": reference, "diffusers": diffusers_in, "to-diffusers": to_diffusers,
           "onnx": onnx}[args.command]
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
