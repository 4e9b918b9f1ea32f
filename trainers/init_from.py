"""model.init_from: start a run from the weights of another run's export, a converted reference
checkpoint (python -m gen.convert reference) or, for DDPM, a diffusers UNet2DModel folder.

Only the weights are taken: optimizers, schedules and the step start fresh (fine-tuning). Every
tensor is checked against the configured network first; a mismatch names the layer and both shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file
from torch import nn

from gen.config import DDPM_SCHEDULE_KEYS, override_value
from gen.pipelines import find_export
from gen.pipelines.base import PIPELINE_FILE

WEIGHTS = "diffusion_pytorch_model.safetensors"
# Settings that change what a network computes without changing a tensor's shape (instance norm and
# 'none' have the same tensors; so do the decoders' upsamplers, dropout placement aside).
SAME_SHAPES_OTHER_FUNCTION = ("norm", "norm_groups", "out_activation", "upsample", "block_style", "norm_eps",
                              "time_flip_sin_to_cos", "time_freq_shift", "downsample_padding",
                              "attention_head_dim", "n_blocks", "variant")
DISCRIMINATORS = ("discriminator", "D_A", "D_B")
# One function, two ways of training it: a batch-norm network fine-tunes with sync_batch and back.
BATCH_NORMS = {"batch", "sync_batch"}
# U-Net settings that follow the source weights' conventions rather than the experiment (a converted
# diffusers U-Net keeps its time embedding layout and padding); shapes do not show them.
DDPM_LAYOUT = ("norm_groups", 
    "norm_eps",
    "time_flip_sin_to_cos",
    "time_freq_shift",
    "downsample_padding",
    "attention_head_dim",
)


def export_root(source: str | Path) -> Path:
    """A run directory or its export/ folder -> the export folder; FileNotFoundError otherwise."""
    found = find_export(source)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"model.init_from={source}: no gen export there ({PIPELINE_FILE} missing); give a "
        "run directory, its export/, or the --out folder of python -m gen.convert"
    )


def export_meta(source: str | Path) -> dict:
    return json.loads((export_root(source) / PIPELINE_FILE).read_text())


def load_weights(net: nn.Module, folder: Path, role: str, source: str) -> int:
    """Copy `folder`'s saved weights into `net` after checking every name and shape; returns the
    number of tensors. ValueError names the first mismatching layers."""
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"model.init_from={source}: no {role} weights at {weights}")
    cfg_file = folder / "config.json"
    saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return copy_checked(net, load_file(str(weights)), saved, role, source)


def copy_checked(net: nn.Module, state: dict[str, torch.Tensor], saved: dict, role: str, source: str) -> int:
    """Copy `state` into `net` after checking every name and shape and the settings `saved` (the
    source's config) that change the function without changing a shape; returns the tensor count."""
    target = net.state_dict()
    saved = json.loads(json.dumps(saved))  # plain JSON values, as a config.json holds them
    ours = dict(getattr(net, "config", {}))
    differs = {k: (v, ours[k]) for k, v in saved.items() if not k.startswith("_") and k in ours
               and json.loads(json.dumps(ours[k])) != v}
    shape = [
        f"{k}: source {tuple(v.shape)} vs this run {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if shape or missing or unexpected:
        raise ValueError(
            f"model.init_from={source}: the {role} does not fit this run's network: "
            + "; ".join(
                filter(
                    None,
                    [
                        f"shapes differ at {shape[:3]}" if shape else "",
                        f"missing {missing[:4]}" if missing else "",
                        f"unexpected {unexpected[:4]}" if unexpected else "",
                    ],
                )
            )
            + f". Source vs this run: {differs or 'same settings, different class'}; set model.generator / "
            "model.ngf / model.norm (model.ndf / model.d_layers / model.d_norm for a discriminator) to match"
        )
    function = {k: v for k, v in differs.items() if k in SAME_SHAPES_OTHER_FUNCTION
                and not (k == "norm" and set(v) <= BATCH_NORMS)}
    if function:
        raise ValueError(
            f"model.init_from={source}: the {role} has the shapes of this run's network but computes another "
            f"function: source vs this run {function}; set the matching model.* keys (e.g. model.norm, "
            "model.d_norm, model.upsample) to the source's values")
    with torch.no_grad():
        for k, v in state.items():
            target[k].copy_(v)
    return len(state)


def load_translation(source: str, nets: dict[str, Optional[nn.Module]], layout: dict[str, str],
                     say: Callable[[str], None], kind: Optional[str] = None) -> None:
    """nets: {role: network or None}; layout: {role: subfolder of the export}; kind: the export kind
    the run needs (translation, colorization, cyclegan). Generators are required; a discriminator the
    source lacks stays freshly initialised (said so)."""
    root = export_root(source)
    found = export_meta(source).get("kind")
    if kind is not None and found != kind:
        raise ValueError(f"model.init_from={source}: a {found} export, but this run starts from a {kind} "
                         "export (a CycleGAN export starts a CycleGAN run; convert a single direction "
                         "with gen.convert to fine-tune it as pix2pix)")
    for role, net in nets.items():
        if net is None:
            continue
        folder = root / layout[role]
        if not (folder / WEIGHTS).is_file() and role in DISCRIMINATORS:
            say(f"model.init_from: {source} has no {role} ({folder} missing): it starts from a fresh init")
            continue
        n = load_weights(net, folder, role, source)
        say(f"model.init_from: {role} <- {folder} ({n} tensors)")


def ddpm_source(source: str) -> tuple[Optional[nn.Module], dict]:
    """(the source as a gen U-Net if it is a diffusers folder, else None; its layout settings)."""
    if find_export(source) is not None:
        cfg = json.loads((export_root(source) / "unet" / "config.json").read_text())
        return None, {k: cfg[k] for k in DDPM_LAYOUT if k in cfg}
    from gen.convert.diffusers_unet import from_unet2d, load_unet2d

    model, folder = load_unet2d(source)
    net = from_unet2d(model, f"model.init_from={source} (the UNet2DModel in {folder})")
    return net, {k: net.config[k] for k in DDPM_LAYOUT}


def load_ddpm(
    source: str, net: nn.Module, converted: Optional[nn.Module], say: Callable[[str], None]
) -> None:
    if converted is None:
        folder = export_root(source) / "unet"
        say(f"model.init_from: unet <- {folder} ({load_weights(net, folder, 'unet', source)} tensors)")
        return
    n = copy_checked(net, converted.state_dict(), dict(converted.config), "unet", source)
    say(f"model.init_from: unet <- diffusers UNet2DModel {source} ({n} tensors)")


def source_schedule(source: str) -> tuple[Optional[dict], str]:
    """(the source's saved scheduler config or None, its formulation: ddpm | edm) for a gen export or a
    diffusers folder (scheduler_config.json beside the U-Net, or in scheduler/)."""
    if find_export(source) is not None:
        root = export_root(source)
        files = [root / "scheduler" / "scheduler_config.json"]
        formulation = export_meta(source).get("formulation", "ddpm")
    else:
        from gen.convert.diffusers_unet import find_unet2d_folder

        folder = find_unet2d_folder(source)
        files = [folder / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json",
                 folder.parent / "scheduler" / "scheduler_config.json"]
        formulation = "ddpm"
    found = next((f for f in files if f.is_file()), None)
    return (json.loads(found.read_text()) if found else None), formulation


def check_ddpm_objective(source: str, scheduler, formulation: str, say: Callable[[str], None]) -> None:
    """Refuse (ValueError naming the keys and the source's values) a DDPM source trained toward another
    target than this run's `scheduler` (its prediction type, zero terminal SNR, beta schedule, timesteps)
    or in another formulation: fine-tuning would start from a network whose outputs mean something
    else. A source that records no schedule is said so."""
    saved, source_formulation = source_schedule(source)
    if source_formulation != formulation:
        raise ValueError(f"model.init_from={source} is a ddpm.formulation={source_formulation} model; "
                         f"this run is {formulation}: its outputs mean something else. Set ddpm.formulation="
                         f"{source_formulation}")
    if formulation == "edm":
        sigma = (saved or {}).get("sigma_data")
        if sigma is not None and abs(sigma - scheduler.config.sigma_data) > 1e-9:
            raise ValueError(f"model.init_from={source} was trained with ddpm.edm_sigma_data={sigma}; "
                             f"this run has {scheduler.config.sigma_data}: set ddpm.edm_sigma_data={sigma}")
        return
    if saved is None:
        say(f"model.init_from: {source} records no noise schedule (no scheduler_config.json); this run "
            f"trains it toward {scheduler.config.prediction_type} on its own schedule")
        return
    theirs = type(scheduler).from_config(saved).config  # diffusers' defaults for the keys it leaves out
    differ = {key: theirs[k] for k, key in DDPM_SCHEDULE_KEYS.items()
              if (theirs[k] != scheduler.config[k] if not isinstance(theirs[k], float)
                  else abs(theirs[k] - scheduler.config[k]) > 1e-12)}
    if differ:
        keep = " ".join(f"{k}={override_value(v)}" for k, v in differ.items())
        raise ValueError(f"model.init_from={source} was trained toward another target than this run's "
                         f"noise schedule; to fine-tune it, match its values: {keep}")
