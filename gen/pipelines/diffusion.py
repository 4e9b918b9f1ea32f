"""Sampling a trained DDPM: a diffusers `DiffusionPipeline` around the shared U-Net (EMA weights).

Export layout (`run_dir/export/`): diffusers' `model_index.json`, `unet/` and `scheduler/` (the
training noise schedule), plus gen's `pipeline.json` (kind diffusion, sample size, condition
channels). Any step count with DDPM, DDIM or DPM-Solver++; image-conditioned models (Palette-style,
condition concatenated to x_t) take `condition`. EDM exports (Karras et al. 2022) hold an
EDMEulerScheduler (their Karras sigma schedule) and sample with euler, heun or dpm (gen.pipelines.edm).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import (DDIMScheduler, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler,
                       EDMEulerScheduler)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..data.labels import label_image_to_tensor
from ..data.transforms import from_pil
from ..models.layers import pad_to_multiple
from ..models.unet import UNet
from ..seeding import generators
from .base import (check_precision, inference_precision, load_network, local_folder, read_meta,
                   require_finite, write_meta)
from ..losses.edm import TIME_SCALE
from .edm import EDM_SCHEDULERS, heun_step, is_edm_config, make_edm_scheduler

SCHEDULERS = ("ddpm", "ddim", "dpm")  # of DDPM exports; EDM exports take EDM_SCHEDULERS


def sampler_of(formulation: str, default: Optional[str], name: Optional[str]) -> str:
    """The sampler an export of `formulation` (ddpm | edm) runs: `name`, else its saved `default`,
    else ddim (DDPM) or heun (EDM); ValueError when the formulation cannot sample with it. The one
    rule for the pipeline, sample.py (from pipeline.json, before loading) and compare."""
    allowed = EDM_SCHEDULERS if formulation == "edm" else SCHEDULERS
    name = name or default or ("heun" if formulation == "edm" else "ddim")
    if name not in allowed:
        raise ValueError(f"scheduler {name!r} does not sample this {formulation.upper()} model; choose one "
                         f"of {list(allowed)}")
    return name


def make_scheduler(name: str, config, steps: Optional[int] = None):
    """The sampler `name` on the noise schedule `config` the model was trained with, with the
    timestep spacing that config states (passed explicitly: diffusers' from_config would otherwise
    give each sampler class its own default spacing, so a scheduler built in memory and one loaded
    from the export would visit different timesteps)."""
    # Every key explicit, as in a config read back from the export's JSON (in memory, diffusers marks
    # defaults in `_use_default_values`, and from_config then hands them the target class's defaults).
    if is_edm_config(config):
        if name not in EDM_SCHEDULERS:
            raise ValueError(f"scheduler {name!r} samples DDPM models; this is an EDM model (Karras et al. "
                             f"2022): choose one of {list(EDM_SCHEDULERS)}")
        return make_edm_scheduler(name, config)
    if name in EDM_SCHEDULERS and name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} samples EDM models; this is a DDPM model: choose one of "
                         f"{list(SCHEDULERS)}")
    config = {k: v for k, v in dict(config).items() if k != "_use_default_values"}
    spacing = config.get("timestep_spacing", "leading")
    if steps is not None and steps == config["num_train_timesteps"]:
        spacing = "trailing"  # every timestep either way; DPM-Solver's leading/linspace break at T steps
    if name == "ddpm":
        return DDPMScheduler.from_config(config, timestep_spacing=spacing)
    if name == "ddim":
        return DDIMScheduler.from_config(config, timestep_spacing=spacing)
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", timestep_spacing=spacing
        )
    raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)}")


def check_sampling(num_inference_steps: int, train_timesteps: int, batch_size: int = 1) -> None:
    """1 <= steps <= the training timesteps, batch >= 1; ValueError naming the value otherwise."""
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= train_timesteps:
        raise ValueError(
            f"num_inference_steps={num_inference_steps!r}: sampling takes 1..{train_timesteps} steps "
            f"(the model was trained with {train_timesteps} timesteps)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: at least one sample")


class DiffusionSamplingPipeline(DiffusionPipeline):
    """unet: a ddpm-style UNet with in_channels = out_channels + condition channels."""

    kind = "diffusion"
    model_cpu_offload_seq = "unet"
    # channels_last on the CPU (bench/ddpm.py: the U-Net's sampling step is faster there), contiguous
    # elsewhere: decided here for every caller, training's validation included
    precision = "fp32"  # or bf16: see gen/pipelines/base.py
    seed = 0  # the run's seed (pipeline.json): what sampling uses when no seed is given
    max_16bit: Optional[float] = None  # 16-bit conditions on the training data's 0..max_16bit scale
    _default_scheduler: Optional[str] = None  # pipeline.json's; None: ddim (DDPM), heun (EDM)

    def __init__(self, unet: UNet, scheduler: DDPMScheduler, sample_size: int = 32, label_classes: int = 0,
                 first_label: int = 0, ignore_label: int = -1):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        # In the pipeline's own config (model_index.json), so from_pretrained restores them too
        # (ints only: diffusers reads a null there as a missing component; -1 = no ignored label).
        self.register_to_config(sample_size=sample_size, label_classes=label_classes, first_label=first_label,
                                ignore_label=ignore_label)

    @property
    def sample_size(self) -> int:
        """The training size: unconditional samples default to it, conditions are resized to it."""
        return self.config.sample_size

    @sample_size.setter
    def sample_size(self, size: int) -> None:
        self.register_to_config(sample_size=int(size))

    @property
    def label_input(self) -> Optional[dict]:
        """{"num_classes", "first_label", "ignore_label"} when the condition is a class-index label
        map, else None."""
        k = self.config.get("label_classes", 0)
        if not k:
            return None
        ignore = self.config.get("ignore_label", -1)
        return {"num_classes": k, "first_label": self.config.get("first_label", 0),
                "ignore_label": None if ignore < 0 else ignore}

    @label_input.setter
    def label_input(self, value: Optional[dict]) -> None:
        value = value or {"num_classes": 0, "first_label": 0}
        ignore = value.get("ignore_label")
        self.register_to_config(label_classes=value["num_classes"], first_label=value["first_label"],
                                ignore_label=-1 if ignore is None else ignore)

    @property
    def condition_channels(self) -> int:
        return self.unet.config.in_channels - self.unet.config.out_channels

    @property
    def formulation(self) -> str:
        """ddpm (a DDPMScheduler's betas) or edm (Karras et al. 2022: an EDMEulerScheduler's sigmas)."""
        return "edm" if is_edm_config(self.scheduler.config) else "ddpm"

    @property
    def time_scale(self) -> float:
        """U-Net timestep = time_scale * the sampler's: 1 (DDPM), gen.losses.edm.TIME_SCALE (EDM's
        c_noise, scaled to the span of DDPM's timesteps)."""
        return TIME_SCALE if self.formulation == "edm" else 1.0

    @property
    def default_scheduler(self) -> str:
        """The sampler when none is named: the one training's validation used (saved with the
        export), else ddim (DDPM) or heun (EDM) for exports that saved none."""
        return sampler_of(self.formulation, self._default_scheduler, None)

    @default_scheduler.setter
    def default_scheduler(self, name: Optional[str]) -> None:
        self._default_scheduler = name

    @property
    def schedulers(self) -> tuple[str, ...]:
        """The samplers this export takes."""
        return EDM_SCHEDULERS if self.formulation == "edm" else SCHEDULERS

    def check_scheduler(self, name: Optional[str]) -> str:
        """name (None: default_scheduler) if this export samples with it, else ValueError naming both."""
        return sampler_of(self.formulation, self._default_scheduler, name)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, num_inference_steps: int = 50, scheduler: Optional[str] = None,
                 generator: Optional[torch.Generator | list[torch.Generator]] = None,
                 condition: Optional[torch.Tensor] = None, size: Optional[tuple[int, int]] = None,
                 progress: bool = True) -> torch.Tensor:
        """-> (B, out_channels, H, W) in [-1, 1]. condition: (B, Cc, H, W) in [-1, 1], any H, W (the
        batch size then follows the condition); otherwise `size` (default sample_size square).
        scheduler None: the export's default_scheduler."""
        check_sampling(num_inference_steps, self.scheduler.config.num_train_timesteps,
                       batch_size if condition is None else condition.shape[0])
        scheduler = self.check_scheduler(scheduler)
        sampler = make_scheduler(scheduler, self.scheduler.config, num_inference_steps)
        device, dtype = self.unet.device, self.unet.dtype
        fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.unet.to(memory_format=fmt)  # a no-op when it is already in that format
        if self.condition_channels:
            if condition is None or condition.shape[1] != self.condition_channels:
                got = None if condition is None else tuple(condition.shape)
                raise ValueError(f"this model is conditioned on a {self.condition_channels}-channel image; "
                                 f"pass condition of shape (B, {self.condition_channels}, H, W), got {got}")
            batch_size, (h, w) = condition.shape[0], condition.shape[-2:]
        elif condition is not None:
            raise ValueError("this model is unconditional: it takes no condition image")
        else:
            h, w = size or (self.sample_size, self.sample_size)
        m = self.unet.multiple
        ph, pw = -h % m, -w % m  # any size: replicate-pad to the U-Net's multiple, crop back at the end
        if condition is not None:
            condition = pad_to_multiple(condition.to(device, dtype), m)[0]
        shape = (batch_size, self.unet.config.out_channels, h + ph, w + pw)
        sampler.set_timesteps(num_inference_steps, device=device)
        edm = self.formulation == "edm"
        # EDM: x ~ N(0, sigma_max^2 I), Karras Algorithm 1 line 1 (gen.pipelines.edm)
        scale = float(sampler.sigmas[0]) if edm else sampler.init_noise_sigma
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * scale

        def model(model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            """The U-Net's output for the sampler's scaled input and timestep (EDM: F, at c_noise)."""
            if condition is not None:
                model_in = torch.cat([model_in, condition], dim=1)
            model_in = model_in.contiguous(memory_format=fmt)
            with inference_precision(device, self.precision):
                return self.unet(model_in, t * self.time_scale if edm else t).float()

        if scheduler == "heun":
            def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # EDM's D(x; sigma)
                out = model(sampler.precondition_inputs(x, sigma), sampler.precondition_noise(sigma))
                return sampler.precondition_outputs(x, out, sigma)

            steps = range(len(sampler.sigmas) - 1)
            for i in self.progress_bar(steps) if progress else steps:
                x = heun_step(denoise, x, sampler.sigmas[i], sampler.sigmas[i + 1])
        else:
            for t in self.progress_bar(sampler.timesteps) if progress else sampler.timesteps:
                out = model(sampler.scale_model_input(x, t), t)
                x = sampler.step(out, t, x, generator=generator).prev_sample
        what = "EDM samples" if edm else "DDPM samples"
        return require_finite(x[..., :h, :w], what).clamp(-1, 1)

    def with_precision(self, precision: Optional[str]) -> "DiffusionSamplingPipeline":
        """Run the U-Net in `precision` from now on (None: unchanged); returns self."""
        if precision is not None:
            self.precision = check_precision(precision)
        return self

    def sample_numbers(self, numbers: range, num_inference_steps: int, scheduler: Optional[str],
                       seed: Optional[int], progress: bool = False) -> torch.Tensor:
        """Unconditional samples `numbers` (sample i is `sample_{i:05d}.png`) of the run sampled with
        `seed` -> (len(numbers), C, H, W) on the CPU. Sample i draws all its noise from its own
        generator (gen.seeding), so it is the same image whatever the batch it is drawn in. seed None:
        the run's own (self.seed), as training's validation grid samples."""
        gens = generators(self.seed if seed is None else seed, list(numbers), 1, self.unet.device)
        return self(len(gens), num_inference_steps, scheduler, gens, progress=progress).cpu()

    def sample_for(self, condition: torch.Tensor, k: int, num_inference_steps: int, scheduler: Optional[str],
                   seed: Optional[int], name: str, full_size: bool = False) -> torch.Tensor:
        """k samples for one condition (1, Cc, H, W) -> (k, C_out, H, W) on the CPU, in [-1, 1]. Sample
        j of the input named `name` (its path without extension, see gen.seeding) draws its noise
        from a generator seeded by (seed, name, j): the same image whatever folder, batch or k.
        Sampled at the training size by default (the scale the model learned; nearest resize keeps
        label colours pure) and resized back: a full-size map costs (H*W / size^2) times as much.
        seed None: the run's own (self.seed)."""
        generator = generators(self.seed if seed is None else seed, [name], k, self.unet.device)
        h, w = condition.shape[-2:]
        size = self.sample_size
        small = not full_size and (h, w) != (size, size)
        cond = F.interpolate(condition, size=(size, size), mode="nearest-exact") if small else condition
        out = self(num_inference_steps=num_inference_steps, scheduler=scheduler, generator=generator,
                   condition=cond.expand(k, -1, -1, -1), progress=False).cpu().float()
        if small:
            out = F.interpolate(out, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            out = out.clamp(-1, 1)
        return out

    def condition_from_image(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> (1, Cc, H, W) condition in [-1, 1], rendered as in training (label maps by id)."""
        label = self.label_input
        if label:
            k, first, ignore = label["num_classes"], label["first_label"], label["ignore_label"]
            return label_image_to_tensor(img, k, first, ignore)
        return from_pil(img, self.condition_channels, self.max_16bit)

    def save_export(self, path: str | Path, method: str = "ddpm", seed: Optional[int] = None) -> None:
        """The export (diffusers save_pretrained + pipeline.json); seed: the run's (default self.seed)."""
        path, seed = Path(path), self.seed if seed is None else seed
        self.save_pretrained(path)
        write_meta(path, self.kind, method, sample_size=self.sample_size,
                   condition_channels=self.condition_channels, seed=seed, label_input=self.label_input,
                   max_16bit=self.max_16bit, formulation=self.formulation,
                   default_scheduler=self.default_scheduler, time_scale=self.time_scale)

    @classmethod
    def from_export(cls, path: str | Path) -> "DiffusionSamplingPipeline":
        path = Path(path)
        meta = read_meta(path)
        folder = local_folder(path / "scheduler", "scheduler_config.json")
        edm = meta.get("formulation", "ddpm") == "edm"
        scheduler = (EDMEulerScheduler if edm else DDPMScheduler).from_pretrained(folder)
        pipe = cls(load_network(UNet, local_folder(path / "unet")), scheduler)
        pipe.sample_size, pipe.method = meta.get("sample_size", 32), meta.get("method", "ddpm")
        pipe.label_input = meta.get("label_input")
        pipe.seed, pipe.max_16bit = meta.get("seed", 0), meta.get("max_16bit")
        pipe.default_scheduler = meta.get("default_scheduler")
        if meta.get("time_scale", pipe.time_scale) != pipe.time_scale:
            raise ValueError(f"{path / 'pipeline.json'}: time_scale {meta['time_scale']} is not this gen's "
                             f"{pipe.time_scale} for a {pipe.formulation} model; sample it with the gen "
                             "version that wrote it")
        return pipe
