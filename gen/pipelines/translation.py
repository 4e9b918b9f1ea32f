"""Image-to-image translation with an exported generator (pix2pix, each direction of CycleGAN).

Export layout (`run_dir/export/`): `generator/` in diffusers save_pretrained form (config.json +
diffusion_pytorch_model.safetensors) and `pipeline.json` with the method and inference settings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from ..data.labels import label_image_to_tensor
from ..data.transforms import from_pil, to_pil
from ..models.inference import inference_semantics
from ..models.resnet_generator import ResnetGenerator
from ..models.unet import UNET_CLASSES, UNet
from .base import CLASS_KEY, NetworkPipeline, read_export, require_finite, write_meta

GENERATOR_CLASSES = {**UNET_CLASSES, "ResnetGenerator": ResnetGenerator}


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
        """Image by image: paper inference normalises each image by its own statistics (the
        reference tests at batch size 1) and draws its dropout noise from a generator seeded with
        `seed` alone, so an output never depends on the batch it came in or on its position."""
        if self.inference != "paper":
            with inference_semantics(self.net, self.inference):
                return require_finite(self.forward(x), "outputs")
        # torch.manual_seed reseeds every GPU: all of them are put back (not only the pipeline's)
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        outs = []
        with torch.random.fork_rng(devices=devices), inference_semantics(self.net, self.inference):
            for image in x.split(1):
                if self.seed is not None:
                    torch.manual_seed(self.seed)
                outs.append(require_finite(self.forward(image), "outputs"))
        return torch.cat(outs)

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
        write_meta(path, self.kind, self.method, inference=self.inference, direction=self.direction,
                   seed=self.seed, max_16bit=self.max_16bit, label_input=self.label_input,
                   **{CLASS_KEY: type(self.net).__name__})

    @classmethod
    def from_pretrained(cls, path: str | Path, inference: Optional[str] = None) -> "TranslationPipeline":
        meta, generator = read_export(Path(path), "generator", GENERATOR_CLASSES)
        return cls(generator, meta["method"], inference or meta["inference"], meta.get("direction", "AtoB"),
                   meta.get("seed", 0), meta.get("max_16bit"), meta.get("label_input"))


class UnpairedTranslationPipeline(TranslationPipeline):
    """A one-direction translator trained on unpaired data (CUT, FastCUT): the same network, files and
    inference as TranslationPipeline, its own kind, so evaluation scores it on unpaired splits
    (gen.methods.unpaired)."""

    kind = "unpaired_translation"


# The export kinds whose pipeline is a TranslationPipeline (one generator, image in, image out)
TRANSLATOR_KINDS = ("translation", "unpaired_translation")


class CycleGANPipeline:
    """Both CycleGAN directions: `export/AtoB/` (G_A) and `export/BtoA/` (G_B), each a TranslationPipeline."""

    kind = "cyclegan"
    method = "cyclegan"

    def __init__(self, a_to_b: TranslationPipeline, b_to_a: TranslationPipeline):
        self.directions = {"AtoB": a_to_b, "BtoA": b_to_a}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        for name, pipe in self.directions.items():
            pipe.save_pretrained(path / name)
        write_meta(path, self.kind, "cyclegan", directions=sorted(self.directions))

    def to(self, device) -> "CycleGANPipeline":
        for pipe in self.directions.values():
            pipe.to(device)
        return self

    def with_precision(self, precision: Optional[str]) -> "CycleGANPipeline":
        for pipe in self.directions.values():
            pipe.with_precision(precision)
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, inference: Optional[str] = None) -> "CycleGANPipeline":
        path = Path(path)
        return cls(*(TranslationPipeline.from_pretrained(path / d, inference) for d in ("AtoB", "BtoA")))
