"""Image-to-image translation with an exported generator (pix2pix, each direction of CycleGAN).

Export layout (`run_dir/export/`): `generator/` in diffusers save_pretrained form (config.json +
diffusion_pytorch_model.safetensors) and `pipeline.json` with the method and inference settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from ..data.labels import label_image_to_tensor
from ..data.transforms import from_pil, to_pil
from ..models.inference import inference_semantics
from ..models.resnet_generator import ResnetGenerator
from ..models.unet import UNet

GENERATOR_CLASSES = {"UNet": UNet, "ResnetGenerator": ResnetGenerator}

PIPELINE_FILE = "pipeline.json"


def read_export(path: Path, subfolder: str, class_key: str, classes: dict) -> tuple[dict, torch.nn.Module]:
    """(pipeline.json contents, the network in `subfolder`, of the class the JSON names under `class_key`)."""
    meta = json.loads((path / PIPELINE_FILE).read_text())
    cls_name = meta.get(class_key, "UNet")
    if cls_name not in classes:
        raise ValueError(
            f"{path / PIPELINE_FILE}: unknown {class_key} {cls_name!r}; known: {sorted(classes)}"
        )
    return meta, classes[cls_name].from_pretrained(local_folder(path / subfolder))


def local_folder(folder: Path, config: str = "config.json") -> Path:
    """A saved network's folder, checked here: diffusers would read a missing local path as a Hugging
    Face hub id and try the network."""
    if not (folder / config).is_file():
        raise FileNotFoundError(f"{folder / config} not found: the export is incomplete (re-export the "
                                "run, or convert the checkpoint again)")
    return folder


def require_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """x, or FloatingPointError if any value is NaN or inf: such weights would otherwise be written
    as black (or one-class) images that look like results."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"the model produced non-finite {what} (NaN or inf): its weights are broken; "
            "retrain, or use an earlier checkpoint's export"
        )
    return x


class NetworkPipeline:
    """What every one-network pipeline shares: its network in `self.net`, device placement."""

    net: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device):
        self.net.to(device)
        return self


class TranslationPipeline(NetworkPipeline):
    """x: (B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W) in [-1, 1], any H, W."""

    kind = "translation"

    def __init__(self, generator: UNet | ResnetGenerator, method: str = "pix2pix", inference: str = "paper",
                 direction: str = "AtoB", seed: Optional[int] = 0, max_16bit: Optional[float] = None,
                 label_input: Optional[dict] = None):
        self.net, self.method, self.inference = generator, method, inference
        self.direction, self.seed, self.max_16bit = direction, seed, max_16bit
        # {"num_classes": K, "first_label": f} when the input is a class-index label map (labels -> photo)
        self.label_input = label_input

    @property
    def in_channels(self) -> int:
        return self.net.config.in_channels

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Dropout as noise draws from a seeded RNG so the same input gives the same output.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), inference_semantics(self.net, self.inference):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            return require_finite(self.net.forward_any_size(x.to(self.device)), "outputs")

    def translate_image(self, img: Image.Image, bit_depth: int = 8) -> Image.Image:
        """Any PIL image -> translated PIL image of the same size; 16-bit inputs and (bit_depth 16,
        one channel) outputs on the training data's 0..data.max_16bit scale."""
        return to_pil(self(self.input_from_image(img))[0], bit_depth, self.max_16bit)

    def input_from_image(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> (1, C, H, W) input in [-1, 1], rendered as in training (label maps by class id)."""
        if self.label_input:
            k, first = self.label_input["num_classes"], self.label_input["first_label"]
            return label_image_to_tensor(img, k, first, self.label_input.get("ignore_label"))
        return from_pil(img, self.in_channels, self.max_16bit)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.net.save_pretrained(path / "generator")
        meta = {"kind": self.kind, "method": self.method, "inference": self.inference,
                "direction": self.direction, "seed": self.seed, "generator_class": type(self.net).__name__,
                "max_16bit": self.max_16bit, "label_input": self.label_input}
        (path / PIPELINE_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def from_pretrained(cls, path: str | Path, inference: Optional[str] = None) -> "TranslationPipeline":
        meta, generator = read_export(Path(path), "generator", "generator_class", GENERATOR_CLASSES)
        return cls(generator, meta["method"], inference or meta["inference"], meta.get("direction", "AtoB"),
                   meta.get("seed", 0), meta.get("max_16bit"), meta.get("label_input"))


class CycleGANPipeline:
    """Both CycleGAN directions: `export/AtoB/` (G_A) and `export/BtoA/` (G_B), each a TranslationPipeline."""

    kind = "cyclegan"

    def __init__(self, a_to_b: TranslationPipeline, b_to_a: TranslationPipeline):
        self.directions = {"AtoB": a_to_b, "BtoA": b_to_a}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        for name, pipe in self.directions.items():
            pipe.save_pretrained(path / name)
        (path / PIPELINE_FILE).write_text(json.dumps({"kind": self.kind, "method": "cyclegan",
                                                      "directions": sorted(self.directions)}, indent=1))

    @classmethod
    def from_pretrained(cls, path: str | Path, inference: Optional[str] = None) -> "CycleGANPipeline":
        path = Path(path)
        return cls(*(TranslationPipeline.from_pretrained(path / d, inference) for d in ("AtoB", "BtoA")))
