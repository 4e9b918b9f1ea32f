"""Converted networks written as gen exports (`DIR/export/`, what sample.py and model.init_from read),
and gen DDPM exports written as plain diffusers folders."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import Iterator, Optional

from ..pipelines.diffusion import DiffusionSamplingPipeline
from ..pipelines.translation import CycleGANPipeline, TranslationPipeline, UnpairedTranslationPipeline
from .reference import Converted, convert_reference
from .torch_file import read_state_dict

DISCRIMINATOR_DIR = "discriminator"  # beside `generator/` in a translation export
NOTES_FILE = "convert.json"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing export (or any non-empty folder) unless asked."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")


@contextlib.contextmanager
def staged(final: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh folder beside `final`, then swap it into place: a failure half-way never leaves a
    half-written export, and an existing `final` is replaced only with `overwrite`."""
    check_out(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def reference_files(folder: Path, epoch: str = "latest") -> dict[str, Path]:
    """A reference `checkpoints/NAME/` folder -> {"G": ..., "D": ...} (pix2pix) or {"G_A", "G_B",
    "D_A", "D_B"} (CycleGAN), the networks present for `epoch` (latest, or an epoch number)."""
    found = {net: folder / f"{epoch}_net_{net}.pth" for net in ("G", "D", "G_A", "G_B", "D_A", "D_B")}
    found = {k: p for k, p in found.items() if p.is_file()}
    if "G" not in found and not {"G_A", "G_B"} & set(found):
        raise FileNotFoundError(
            f"{folder}: no {epoch}_net_G.pth or {epoch}_net_G_A.pth / _G_B.pth (the "
            "reference's checkpoint names); pass the generator's .pth itself"
        )
    return found


def read_train_opt(folder: Path) -> dict[str, str]:
    """The options the reference wrote to `checkpoints/NAME/train_opt.txt` ({} if absent), as
    strings: its lines read `   name: value    [default: ...]`."""
    path = folder / "train_opt.txt"
    if not path.is_file():
        return {}
    found = (re.match(r"\s*(\w+): (\S+)", line) for line in path.read_text(errors="replace").splitlines())
    return {m.group(1): m.group(2) for m in found if m}


def convert_reference_files(files: dict[str, Path], dropout: Optional[float] = None) -> dict[str, Converted]:
    """{role: .pth} -> {role: Converted}; a generator given where a discriminator belongs (or the
    reverse) is refused."""
    out = {}
    for role, path in files.items():
        conv = convert_reference(read_state_dict(path, f"reference {role} checkpoint"), str(path), dropout)
        want = "generator" if role.startswith("G") else "discriminator"
        if conv.kind != want:
            raise ValueError(f"{path}: a {conv.kind} ({conv.preset}), given as the {want} ({role})")
        channels = (conv.options["in_channels"], conv.options["out_channels"]) if want == "generator" else ()
        if any(c not in (1, 3) for c in channels):
            raise ValueError(f"{path}: a generator of {channels[0]} -> {channels[1]} channels; gen's image "
                             "translators read and write 1- or 3-channel images (the reference's "
                             "colorization model, L -> ab, is not one: train gen's colorization method)")
        out[role] = conv
    return out


def write_translation_export(
    out: Path,
    nets: dict[str, Converted],
    method: str,
    inference: str = "paper",
    direction: str = "AtoB",
    overwrite: bool = False,
    notes: Optional[dict] = None,
) -> Path:
    """`out/export/`: a pix2pix-style export from {"G"[, "D"]}, or a CycleGAN export (both directions)
    from {"G_A", "G_B"[, "D_A", "D_B"]}; the discriminators ride along for model.init_from."""
    with staged(out / "export", overwrite) as tmp:
        _write_translation(tmp, nets, method, inference, direction, notes)
    return out / "export"


def _write_translation(tmp: Path, nets: dict[str, Converted], method: str, inference: str, direction: str,
                       notes: Optional[dict]) -> None:
    if "G" in nets:
        # CUT / FastCUT: a one-direction translator scored on unpaired data
        cls = UnpairedTranslationPipeline if method in ("cut", "fastcut") else TranslationPipeline
        cls(nets["G"].net, method, inference, direction).save_pretrained(tmp)
        if "D" in nets:
            nets["D"].net.save_pretrained(tmp / DISCRIMINATOR_DIR)
    else:
        if not {"G_A", "G_B"} <= set(nets):
            raise ValueError("a CycleGAN export needs both generators (G_A and G_B)")
        pipe = CycleGANPipeline(
            TranslationPipeline(nets["G_A"].net, method, inference, "AtoB"),
            TranslationPipeline(nets["G_B"].net, method, inference, "BtoA"),
        )
        pipe.save_pretrained(tmp)
        # D_A judges domain B, i.e. G_A's outputs: it trains with the AtoB direction (reference naming).
        for role, sub in (("D_A", "AtoB"), ("D_B", "BtoA")):
            if role in nets:
                nets[role].net.save_pretrained(tmp / sub / DISCRIMINATOR_DIR)
    record = {
        "converted_from": "reference pix2pix/CycleGAN",
        "inference": inference,
        "networks": {role: c.describe() for role, c in nets.items()},
        **(notes or {}),
    }
    (tmp / NOTES_FILE).write_text(json.dumps(record, indent=1))


def write_diffusion_export(
    out: Path, unet, scheduler, sample_size: int, overwrite: bool = False, notes: Optional[dict] = None
) -> Path:
    """`out/export/`: gen's DDPM sampling export around a (converted) ddpm-style U-Net."""
    with staged(out / "export", overwrite) as tmp:
        pipe = DiffusionSamplingPipeline(unet, scheduler, sample_size=sample_size)
        pipe.save_export(tmp, method="ddpm (converted)")
        record = {"converted_from": "diffusers UNet2DModel", **(notes or {})}
        (tmp / NOTES_FILE).write_text(json.dumps(record, indent=1))
    return out / "export"


def write_diffusers_pipeline(export: Path, out: Path, overwrite: bool = False) -> Path:
    """A gen DDPM export -> `out/` as a plain diffusers DDPMPipeline folder (model_index.json, unet/
    UNet2DModel, scheduler/ DDPMScheduler) that loads with diffusers alone."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from .. import pipelines
    from .diffusers_unet import to_unet2d

    pipe = pipelines.load(export)
    if getattr(pipe, "kind", None) != "diffusion":
        raise ValueError(
            f"{export}: a {getattr(pipe, 'kind', '?')} export; only DDPM exports have a diffusers "
            "pipeline counterpart"
        )
    if pipe.formulation == "edm":
        raise ValueError(
            f"{export}: an EDM model (Karras et al. 2022: a preconditioned denoiser, its U-Net fed "
            "c_in-scaled inputs at c_noise timesteps); diffusers' DDPMPipeline feeds the U-Net x_t and "
            "integer timesteps and has no EDM counterpart, so there is no diffusers equivalent to write "
            "(sample it with sample.py)"
        )
    if pipe.condition_channels:
        raise ValueError(
            f"{export}: an image-conditioned DDPM ({pipe.condition_channels} condition channels "
            "concatenated to x_t); diffusers' DDPMPipeline has no condition input, so there is no "
            "diffusers equivalent to write (sample it with sample.py --input)"
        )
    source = Path(export).resolve()
    if out.resolve() == source or source.is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} is (or holds) the export being converted; choose another folder")
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise FileExistsError(f"{out} holds files but no diffusers pipeline (model_index.json): --overwrite "
                              "only replaces an earlier to-diffusers output; choose another --out")
    unet = to_unet2d(pipe.unet, pipe.sample_size)
    with staged(out, overwrite) as tmp:
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp)
    return out
