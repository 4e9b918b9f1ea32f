"""The encoder of a segmenter architecture (U-Net or FCN): what rotation pre-training learns
(trainers/rotation.py) and what a segmenter starts from or freezes (trainers/segmentation.py,
model.init_from / model.freeze=encoder).
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from gen.models import UNet
from gen.models.fcn import FCN

# Each architecture's encoder parameters, by prefix (what load_pretrained_encoder copies).
ENCODER_PREFIX = {UNet: "downs.", FCN: "stages."}


def encoder_of(net: nn.Module) -> nn.ModuleList:
    """The encoder levels of a U-Net (`downs`) or an FCN (`stages`, the VGG-like conv blocks);
    ValueError for any other network (a DDPM-style U-Net included)."""
    if isinstance(net, FCN):
        return net.stages
    if isinstance(net, UNet) and net.block_style == "pix2pix":
        return net.downs
    raise ValueError(f"{type(net).__name__} has no encoder gen can pre-train or freeze (U-Net or FCN only)")


def encoder_prefix(net: nn.Module) -> str:
    return next((p for cls, p in ENCODER_PREFIX.items() if isinstance(net, cls)), "downs.")


def load_pretrained_encoder(net: UNet | FCN, run_dir: str | Path) -> int:
    """Copy the encoder levels of a rotation run's export (RUN_DIR/export/encoder or an export's
    encoder/) into `net` (same architecture); returns the tensors copied. FileNotFoundError without
    the weights; ValueError when a tensor is missing or of another shape."""
    path = Path(run_dir)
    path = path / "export" / "encoder" if (path / "export" / "encoder").is_dir() else path / "encoder"
    weights = path / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"model.init_from={run_dir}: no rotation-pretrained encoder at {weights}")
    prefix = encoder_prefix(net)
    source = {k: v for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
    target = net.state_dict()
    bad = [k for k, v in source.items() if k not in target or target[k].shape != v.shape]
    if bad or not source:
        kind = "FCN" if isinstance(net, FCN) else "U-Net"
        raise ValueError(f"model.init_from={run_dir}: its encoder does not fit this {kind} "
                         f"(e.g. {bad[:3] or 'no ' + prefix + '* tensors'}); use the same model.generator "
                         "family (U-Net or FCN), model.ngf and model.upsample for both runs")
    net.load_state_dict(source, strict=False)
    return len(source)
