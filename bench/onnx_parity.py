"""ONNX parity of full-size networks (docs/onnx.md's table): each kind at its paper / preset size,
exported with `gen.convert.onnx.export_onnx` and compared with PyTorch on onnxruntime.

    python bench/onnx_parity.py [--out DIR] [--only pix2pix,ddpm]

Weights are random (the presets' own init) with batch-norm statistics moved by a few forward passes:
parity is a property of the graph, not of training. Needs pip install -e ".[onnx]".
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import DDPMScheduler  # noqa: E402

from gen.color.bins import zhang_bins  # noqa: E402
from gen.convert.onnx import export_onnx  # noqa: E402
from gen.models import create_model  # noqa: E402
from gen.pipelines import (ColorizationPipeline, CycleGANPipeline, DiffusionSamplingPipeline,  # noqa: E402
                           SegmentationPipeline, TranslationPipeline)


def warm(net: torch.nn.Module, channels: int, size: int) -> torch.nn.Module:
    """A few training-mode passes so batch norm's running statistics are not the init's 0 / 1."""
    with torch.no_grad():
        net.train()
        for _ in range(2):
            net(torch.rand(2, channels, size, size) * 2 - 1)
    return net.eval()


def exports(folder: Path, only: set[str]) -> dict[str, tuple[Path, str]]:
    """name -> (export folder, inference) for each kind."""
    made = {}

    def want(name):
        return not only or name in only
    if want("pix2pix"):
        gen = warm(create_model("unet_256"), 3, 256)
        TranslationPipeline(gen, "pix2pix", "paper").save_pretrained(folder / "pix2pix" / "export")
        made["pix2pix unet_256, paper"] = (folder / "pix2pix", "paper")
        made["pix2pix unet_256, eval"] = (folder / "pix2pix", "eval")
    if want("cyclegan"):
        a, b = (create_model("resnet_9blocks").eval() for _ in range(2))
        CycleGANPipeline(TranslationPipeline(a, "cyclegan", "eval"),
                         TranslationPipeline(b, "cyclegan", "eval", "BtoA")).save_pretrained(
            folder / "cyclegan" / "export")
        made["CycleGAN resnet_9blocks (both directions)"] = (folder / "cyclegan", None)
    if want("colorization"):
        net = warm(create_model("unet", in_channels=1, out_channels=313, num_downs=8, out_activation="none",
                                dropout=0.0, output_stride=4), 1, 256)
        pipe = ColorizationPipeline(net, "classification", zhang_bins())
        pipe.save_pretrained(folder / "colour" / "export")
        made["colorization 313 bins, 1/4 resolution, annealed mean"] = (folder / "colour", None)
    if want("segmentation"):
        net = warm(create_model("fcn8s", out_channels=12), 3, 256)
        SegmentationPipeline(net, 12).save_pretrained(folder / "seg" / "export")
        made["segmentation FCN-8s, 12 classes"] = (folder / "seg", None)
    if want("ddpm"):
        DiffusionSamplingPipeline(create_model("ddpm_cifar10").eval(), DDPMScheduler(), 32).save_export(
            folder / "ddpm" / "export")
        made["DDPM cifar10 U-Net (35.7M)"] = (folder / "ddpm", None)
    return made


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="keep the exports and ONNX files here (default: a temporary folder)")
    p.add_argument("--only", default="",
                   help="comma-separated: pix2pix,cyclegan,colorization,segmentation,ddpm")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        print("| model | graph | inputs | multiple | max abs diff vs PyTorch | export s |")
        print("|---|---|---|---|---|---|")
        for name, (run, inference) in exports(folder, set(filter(None, args.only.split(",")))).items():
            start = time.perf_counter()
            spec = export_onnx(run, folder / "onnx" / name.split()[0] / (inference or "default"), inference,
                               overwrite=True)
            seconds = time.perf_counter() - start
            for graph, model in spec["models"].items():
                figures = ", ".join(f"{k} {v:.1e}" for k, v in model["parity"].items())
                inputs = ", ".join(model["inputs"])
                print(f"| {name} | {graph} | {inputs} | {model['multiple']} | {figures} | {seconds:.0f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
