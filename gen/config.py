"""Typed experiment configuration: a dataclass schema, YAML files and dotted overrides.

`load("configs/x.yaml", ["train.max_steps=10"])` returns a frozen `ExperimentConfig`. OmegaConf
does the merging and type checks; unknown keys, wrong types and out-of-range values become a
`ValueError` that names the key and what is accepted.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

METHODS = ("pix2pix", "cyclegan", "cut", "segmentation", "rotation", "ddpm", "colorization")


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/default"  # run directory: config, checkpoints, samples, export, wandb
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    kind: str = "paired"
    pattern: str = (
        "**/*"  # images: glob under root/<split> (recursive by default; "*.jpg" for facades photos)
    )
    root: Optional[str] = None
    layout: str = "aligned"  # paired only: aligned (A|B in one file) | folders (A/ and B/ subfolders)
    train: str = "train"  # split = folder under root, optionally sliced: "extended[:100]"
    val: Optional[str] = "val"
    test: Optional[str] = "test"
    direction: str = "AtoB"  # AtoB | BtoA; for segmentation A = label map, B = photo
    preprocess: str = "resize_and_crop"  # resize_and_crop | crop | scale_width | none
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    channels_a: int = 3  # 1 (grayscale) or 3 (RGB); inputs are converted to this
    channels_b: int = 3
    max_16bit: Optional[float] = (
        None  # 16-bit images: the value shown as white (None: 65535), e.g. 4000 for mm depth
    )
    num_classes: int = 0  # segmentation: number of classes
    first_label: int = 0  # segmentation: raw label value of class 0 (CMP facades use 1)
    ignore_label: Optional[int] = None  # segmentation: raw value ignored by losses and metrics
    num_workers: Optional[int] = None  # DataLoader workers; None: 0 on the CPU, up to 4 per process on a GPU
    serial_b: bool = False  # unpaired: B[i mod |B|] instead of a random B for each A
    builtin_task: str = "edges2photo"  # builtin: gray2photo (the quickstart) | edges2photo
    builtin_size: int = 64  # builtin: side of the generated training crops
    builtin_count: int = 256  # builtin: number of generated training pairs


@dataclass(frozen=True)
class ModelConfig:
    generator: str = "unet_256"
    ngf: int = 64
    # batch | sync_batch (statistics over all processes; docs/multi_gpu.md) | instance | group | none
    norm: str = "batch"
    dropout: float = 0.5
    num_downs: Optional[int] = None  # only for generator "unet": number of stride-2 levels
    # Start from another run's weights (fine-tuning): a run dir / export, a `python -m gen.convert`
    # output (reference pix2pix/CycleGAN checkpoints), a diffusers UNet2DModel folder (ddpm); for
    # segmentation, a rotation run whose encoder starts the U-Net.
    init_from: Optional[str] = None
    freeze: str = "none"  # segmentation: none | encoder (fixed as initialised; needs model.init_from)
    # U-Net decoder: transposed | bilinear (fixed, + learned conv) | unpool (switches);
    # FCN head: transposed (learned, bilinear init) | bilinear (fixed)
    upsample: str = "transposed"
    discriminator: str = "patchgan"  # patchgan | pixelgan
    ndf: int = 64
    d_layers: int = 3
    d_norm: str = "batch"
    init_gain: float = 0.02
    # normal: N(0, init_gain) (pix2pix / CycleGAN's reference) | xavier: Glorot normal x init_gain
    # (CUT's reference); None: the method's reference (xavier for cut, else normal)
    init_type: Optional[str] = None


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_start: float = 0.5  # fraction of max_steps at constant LR before linear decay to 0
    # auto (default): bf16 autocast where the hardware runs it natively (CUDA with bf16; CPUs with
    # AVX-512 BF16 or AMX), else fp32; the run records the choice | fp32 | bf16 | fp16 ("no" would read
    # as a YAML boolean). bf16 reached fp32's validation figures on facades pix2pix and DDPM (README).
    mixed_precision: str = "auto"
    # GAN methods: DiffAugment of every discriminator input (Zhao et al. 2020), e.g.
    # "color,translation,cutout"; None: off
    diffaugment: Optional[str] = None
    # GAN methods: an EMA of the generator's weights with this decay (e.g. 0.999) is what validation,
    # the export and sample.py use; None: the live weights
    ema_decay: Optional[float] = None
    grad_accum: int = 1
    log_every: int = 10
    validate_every: int = 200  # steps between validations (grid + metrics on the val items)
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    eval_batches: int = 4  # val batches scored at each sample step (L1, PSNR)
    time_budget_minutes: Optional[float] = None  # stop (checkpoint + export) after this much wall time
    # With a time budget: fit = the LR schedule (decay included) is fitted to the steps the budget
    # allows, re-estimated from the measured step time; cut = max_steps' schedule, cut where time runs out
    budget_schedule: str = "fit"
    warmup_steps: int = 0  # linear LR warm-up from 0 (DDPM: 5000 in Ho et al.)
    max_grad_norm: Optional[float] = None  # clip the gradient norm (DDPM: 1.0)
    optimizer_impl: str = "auto"  # Adam kernel: auto (= fused) | for_loop | foreach | fused
    # NHWC memory format for models and batches; None or auto: where measured faster (bench/ddpm.py):
    # the DDPM U-Net on the CPU in fp32
    channels_last: Optional[bool] = None
    compile: bool = False  # torch.compile the networks
    deterministic: bool = False
    device: str = "auto"
    cudnn_benchmark: Optional[bool] = None
    tf32: bool = True
    nonfinite: str = (
        "stop"  # stop: a NaN/inf loss ends the run, naming step and term | skip: skip such updates
    )


@dataclass(frozen=True)
class Pix2PixConfig:
    gan_mode: str = "vanilla"  # vanilla | lsgan | none (L1-only dense regression baseline)
    lambda_l1: float = 100.0
    lambda_gan: float = 1.0
    inference: str = "paper"  # paper: dropout on, batch-norm batch statistics (Isola et al. 3.3) | eval


@dataclass(frozen=True)
class CycleGANConfig:
    gan_mode: str = "lsgan"  # lsgan | vanilla
    lambda_a: float = 10.0  # cycle loss A -> B -> A
    lambda_b: float = 10.0  # cycle loss B -> A -> B
    lambda_identity: float = 0.5  # identity loss weight, relative to the cycle weights; 0 switches it off
    pool_size: int = 50
    inference: str = "eval"  # eval | paper


# CUT's two recipes (the reference's --CUT_mode): the values of the keys a cut.* section leaves unset
CUT_MODES = {"cut": {"lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False},
             "fastcut": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}}


@dataclass(frozen=True)
class CUTConfig:
    mode: str = "cut"  # cut | fastcut (Park et al. 2020): sets the three keys below that are left unset
    lambda_nce: Optional[float] = None  # PatchNCE weight; None: the mode's (cut 1, fastcut 10)
    # the identity PatchNCE term NCE(y, G(y)) on domain-B images, averaged with the main one; None: mode's
    nce_idt: Optional[bool] = None
    # FastCUT: translate a randomly flipped input and flip its features back; None: the mode's
    flip_equivariance: Optional[bool] = None
    lambda_gan: float = 1.0
    gan_mode: str = "lsgan"  # lsgan | vanilla
    # generator layers tapped for PatchNCE, e.g. "0,4,8,12,16"; None: the generator's default (ResNet:
    # the reference's 0,4,8,12,16; U-Net: the input and encoder levels 1-4)
    nce_layers: Optional[str] = None
    num_patches: int = 256  # locations sampled per layer and image
    nce_t: float = 0.07  # temperature
    head_width: int = 256  # units of each 2-layer MLP projection head (the reference's netF_nc)
    inference: str = "eval"  # eval | paper

    def resolved(self, key: str):
        """A mode-dependent key's value: as set, else the mode's (CUT_MODES)."""
        value = getattr(self, key)
        return CUT_MODES[self.mode][key] if value is None else value


def parse_nce_layers(text: str) -> tuple[int, ...]:
    """'0,4,8,12,16' -> (0, 4, 8, 12, 16); ValueError naming cut.nce_layers unless increasing ints >= 0."""
    try:
        layers = tuple(int(p) for p in text.split(","))
    except ValueError:
        layers = ()
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
        raise ValueError(f"config key cut.nce_layers={text!r}: comma-separated increasing layer indices "
                         ">= 0, e.g. 0,4,8,12,16")
    return layers


@dataclass(frozen=True)
class DDPMConfig:
    prediction_type: str = "epsilon"  # epsilon | v_prediction
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear | scaled_linear | squaredcos_cap_v2 (diffusers' names)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    ema_decay: float = 0.9999  # diffusers' EMAModel; its decay warms up as (1 + step) / (10 + step)
    # the sampler of the sample grids during training and the export's default: ddpm | ddim | dpm (DDPM),
    # euler | heun | dpm (EDM); None: ddim for DDPM, heun for EDM
    sample_scheduler: Optional[str] = None
    # Which timesteps a K-step sampler visits (saved with the export, used by every sampler):
    # trailing starts at T-1 (works for DDPM, DDIM and DPM-Solver at every K); leading | linspace.
    timestep_spacing: str = "trailing"
    sample_steps: int = 50
    num_samples: int = 16  # images in an unconditional sample grid

    @property
    def sampler(self) -> str:
        """ddpm.sample_scheduler, or the formulation's default when unset (ddim; EDM: heun)."""
        if self.sample_scheduler is not None:
            return self.sample_scheduler
        return "heun" if self.formulation == "edm" else "ddim"
    dropout: float = 0.1  # in every residual block (Ho et al.: 0.1 on CIFAR-10)
    ngf: Optional[int] = None  # base width; None keeps the preset's (ddpm_small 32, ddpm_cifar10 128)
    # min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper); None: uniform (Ho et al.)
    snr_gamma: Optional[float] = None
    # Lin et al. 2024: rescale the betas so the last timestep has SNR 0 (pure noise, as sampling starts);
    # needs v-prediction and trailing timesteps; saved with the export's scheduler for every sampler
    zero_terminal_snr: bool = False
    # ddpm (Ho et al.) | edm (Karras et al. 2022: preconditioned denoiser, log-normal sigmas, samplers
    # euler | heun | dpm on Karras sigmas; docs/ddpm.md). The edm_* keys are EDM's, with its defaults.
    formulation: str = "ddpm"
    edm_sigma_data: float = 0.5
    edm_p_mean: float = -1.2  # ln(sigma) ~ N(p_mean, p_std^2) in training
    edm_p_std: float = 1.2
    edm_sigma_min: float = 0.002  # the sampling schedule (eq. 5), saved with the export
    edm_sigma_max: float = 80.0
    edm_rho: float = 7.0


@dataclass(frozen=True)
class ColorizationConfig:
    # classification (Zhang et al.) | l2 | l1 (ab regression) | gan (pix2pix-style L -> ab)
    loss: str = "classification"
    bins: str = (
        "zhang313"  # zhang313 (the paper's 313 centres, shipped) | gamut (derived in code at bin_grid)
    )
    bin_grid: int = 10
    neighbours: int = 5  # soft-encoding: nearest bins per pixel
    sigma: float = 5.0  # soft-encoding and prior smoothing Gaussian, in ab units
    rebalance: bool = True  # class rebalancing (Zhang eq. 4)
    prior: str = (
        "data"  # data (empirical prior of the training set, cached in run_dir) | imagenet (the paper's)
    )
    prior_images: int = 2000  # training images read for the empirical prior
    mix: float = 0.5  # lambda: weight of the uniform distribution mixed into the prior
    temperature: float = 0.38  # annealed-mean decoding; -> 0 mode, 1 mean
    # classification: logits at 1/output_stride of the input (Zhang et al.: 4), decoded there and the ab
    # upsampled bilinearly; 1 = full resolution
    output_stride: int = 1
    lambda_l1: float = 100.0  # loss=gan: L1 weight beside the cGAN term
    lambda_gan: float = 1.0  # loss=gan: weight of the cGAN term
    gan_mode: str = "vanilla"  # loss=gan: vanilla | lsgan


@dataclass(frozen=True)
class LogConfig:
    wandb: Optional[str] = None  # offline | online | disabled; None: online if WANDB_API_KEY is set
    project: str = "gen"
    name: Optional[str] = None


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = "pix2pix"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pix2pix: Pix2PixConfig = field(default_factory=Pix2PixConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)
    cut: CUTConfig = field(default_factory=CUTConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    colorization: ColorizationConfig = field(default_factory=ColorizationConfig)
    log: LogConfig = field(default_factory=LogConfig)


CHOICES = {
    "method": METHODS,
    "data.kind": ("paired", "segmentation", "builtin", "unpaired", "images"),
    "data.builtin_task": ("gray2photo", "edges2photo"),
    "model.freeze": ("none", "encoder"),
    "data.layout": ("aligned", "folders"),
    "data.direction": ("AtoB", "BtoA"),
    "data.preprocess": ("resize_and_crop", "crop", "scale_width", "none"),
    "data.channels_a": (1, 3),
    "data.channels_b": (1, 3),
    "model.norm": ("batch", "sync_batch", "instance", "group", "none"),
    "model.upsample": ("transposed", "bilinear", "unpool"),
    "model.d_norm": ("batch", "sync_batch", "instance", "group", "none"),
    "model.discriminator": ("patchgan", "pixelgan"),
    "train.mixed_precision": ("fp32", "bf16", "fp16", "auto"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.nonfinite": ("stop", "skip"),
    "train.budget_schedule": ("fit", "cut"),
    "model.init_type": (None, "normal", "xavier"),
    "train.optimizer_impl": ("auto", "for_loop", "foreach", "fused"),
    "pix2pix.gan_mode": ("vanilla", "lsgan", "none"),
    "pix2pix.inference": ("paper", "eval"),
    "cyclegan.gan_mode": ("vanilla", "lsgan"),
    "cyclegan.inference": ("paper", "eval"),
    "cut.mode": tuple(CUT_MODES),
    "cut.gan_mode": ("vanilla", "lsgan"),
    "cut.inference": ("paper", "eval"),
    "ddpm.prediction_type": ("epsilon", "v_prediction"),
    "ddpm.beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "ddpm.sample_scheduler": (None, "ddpm", "ddim", "dpm", "euler", "heun"),
    "ddpm.formulation": ("ddpm", "edm"),
    "ddpm.timestep_spacing": ("trailing", "leading", "linspace"),
    "colorization.loss": ("classification", "l2", "l1", "gan"),
    "colorization.gan_mode": ("vanilla", "lsgan"),
    "colorization.bins": ("zhang313", "gamut"),
    "colorization.prior": ("data", "imagenet"),
    "colorization.output_stride": (1, 2, 4, 8),
    "log.wandb": (None, "offline", "online", "disabled"),
}
POSITIVE = ("data.load_size", "data.crop_size", "data.builtin_size", "data.builtin_count",
            "model.ngf", "model.ndf", "model.d_layers", "train.max_steps", "train.batch_size",
            "train.lr", "train.grad_accum", "train.log_every", "train.validate_every",
            "train.ckpt_every", "train.keep_checkpoints", "ddpm.num_train_timesteps", "ddpm.beta_start",
            "ddpm.beta_end", "ddpm.sample_steps", "ddpm.num_samples", "ddpm.edm_sigma_data", "ddpm.edm_p_std",
            "ddpm.edm_sigma_min", "ddpm.edm_sigma_max", "ddpm.edm_rho", "colorization.bin_grid",
            "colorization.neighbours", "colorization.sigma", "colorization.prior_images",
            "colorization.temperature", "cut.num_patches", "cut.nce_t", "cut.head_width")
NON_NEGATIVE = (
    "data.num_workers",
    "data.num_classes",
    "train.eval_batches",
    "pix2pix.lambda_l1",
    "pix2pix.lambda_gan",
    "model.init_gain",
    "cyclegan.lambda_a",
    "cyclegan.lambda_b",
    "cyclegan.lambda_identity",
    "cyclegan.pool_size",
    "train.warmup_steps",
    "colorization.lambda_l1",
    "colorization.lambda_gan",
    "cut.lambda_gan",
)
OPTIONAL = ("data.num_workers",)  # None means "choose for the device"
NON_NEGATIVE_OR_NONE = ("cut.lambda_nce",)
POSITIVE_OR_NONE = ("data.max_16bit", "train.time_budget_minutes", "train.max_grad_norm", "ddpm.ngf",
                    "ddpm.snr_gamma")
UNIT_INTERVAL = ("model.dropout", "train.lr_decay_start", "train.beta1", "train.beta2", "ddpm.ema_decay",
                 "ddpm.dropout", "colorization.mix")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


def parse_diffaugment(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> its parts (gen.losses.diffaugment), ValueError naming an unknown one."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    if not parts or any(p not in DIFFAUGMENT_POLICIES for p in parts):
        raise ValueError(f"config key train.diffaugment={policy!r}: a comma-separated list of "
                         f"{list(DIFFAUGMENT_POLICIES)}")
    return parts


EDM_SAMPLERS = ("euler", "heun", "dpm")
EDM_KEYS = ("edm_sigma_data", "edm_p_mean", "edm_p_std", "edm_sigma_min", "edm_sigma_max", "edm_rho")
NOT_EDM_KEYS = {  # DDPM's noise-schedule keys, which an EDM run has no use for (Karras sigmas instead)
    "prediction_type": "EDM's network output is fixed by its preconditioning (F, Karras et al. Table 1)",
    "zero_terminal_snr": "EDM samples from sigma_max (ddpm.edm_sigma_max), not from a beta schedule",
    "snr_gamma": "EDM weights its loss by lambda(sigma) = 1 / c_out^2 (Karras et al. eq. 8)",
    "beta_schedule": "EDM has no betas: its noise levels are ddpm.edm_p_mean / edm_p_std (training) "
                     "and edm_sigma_min / edm_sigma_max / edm_rho (sampling)",
    "beta_start": "EDM has no betas", "beta_end": "EDM has no betas",
    "timestep_spacing": "EDM samples on Karras sigmas (ddpm.edm_rho), not on discrete timesteps",
    "num_train_timesteps": "EDM's noise levels are continuous",
}


def check_formulation(d: DDPMConfig) -> None:
    """ddpm.formulation against the keys only one formulation reads; ValueError naming the key."""
    default = DDPMConfig()
    if d.formulation == "ddpm":
        for key in EDM_KEYS:
            if getattr(d, key) != getattr(default, key):
                raise ValueError(f"config key ddpm.{key}={getattr(d, key)} is EDM's: set "
                                 "ddpm.formulation=edm or leave it at its default")
        if d.sample_scheduler in ("euler", "heun"):
            raise ValueError(f"config key ddpm.sample_scheduler={d.sample_scheduler!r} samples EDM models; "
                             "with ddpm.formulation=ddpm choose ddpm, ddim or dpm")
        return
    # all at once: a DDPM config switched to EDM sets several (cifar10.yaml: four with its sampler)
    wrong = [k for k in NOT_EDM_KEYS if getattr(d, k) != getattr(default, k)]
    said = [f"ddpm.{k}={getattr(d, k)!r} ({NOT_EDM_KEYS[k]})" for k in wrong]
    reset = [f"ddpm.{k}={override_value(getattr(default, k))}" for k in wrong]
    if d.sample_scheduler is not None and d.sample_scheduler not in EDM_SAMPLERS:
        said.append(f"ddpm.sample_scheduler={d.sample_scheduler!r} (samples DDPM models; EDM's are "
                    f"{list(EDM_SAMPLERS)}, heun Karras et al.'s)")
        reset.append("ddpm.sample_scheduler=heun")
    if said:
        raise ValueError(f"config keys that do not apply with ddpm.formulation=edm: {'; '.join(said)}; "
                         f"leave them at their defaults: {' '.join(reset)}")
    if d.edm_sigma_min >= d.edm_sigma_max:
        raise ValueError(f"config key ddpm.edm_sigma_min={d.edm_sigma_min} must be below "
                         f"ddpm.edm_sigma_max={d.edm_sigma_max}")


def validate(cfg: ExperimentConfig) -> None:
    """Raise ValueError naming the first key whose value is out of range."""
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ValueError(
                f"config key {key}={_get(cfg, key)!r} is not allowed; choose one of {list(allowed)}"
            )
    for key in POSITIVE + NON_NEGATIVE + UNIT_INTERVAL:
        value = _get(cfg, key)
        if value is None and key in OPTIONAL:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config key {key}={value} is not a finite number")
        if key in POSITIVE and value <= 0:
            raise ValueError(f"config key {key}={value} must be > 0")
        if key in NON_NEGATIVE and value < 0:
            raise ValueError(f"config key {key}={value} must be >= 0")
        if key in UNIT_INTERVAL and not 0 <= value <= 1:
            raise ValueError(f"config key {key}={value} must be in [0, 1]")
    for key in NON_NEGATIVE_OR_NONE:
        value = _get(cfg, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"config key {key}={value} must be a number >= 0 or null")
    for key in POSITIVE_OR_NONE:
        value = _get(cfg, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"config key {key}={value} must be a positive number or null")
    if cfg.data.preprocess in ("resize_and_crop", "scale_width") and cfg.data.crop_size > cfg.data.load_size:
        raise ValueError(f"config key data.crop_size={cfg.data.crop_size} is larger than "
                         f"data.load_size={cfg.data.load_size}; the crop must fit in the resized image")
    if cfg.data.kind == "segmentation" and cfg.data.num_classes < 1:
        raise ValueError("config key data.num_classes must be >= 1 for data.kind=segmentation")
    if (cfg.data.kind == "images") != (cfg.method == "colorization") and cfg.method != "ddpm":
        raise ValueError(
            f"method={cfg.method!r} does not read data.kind={cfg.data.kind!r}: data.kind=images (photos "
            "without targets) is read by method=colorization (always) and method=ddpm (unconditional)"
        )
    if cfg.method == "ddpm" and cfg.data.preprocess == "none":
        raise ValueError("method=ddpm trains on fixed-size crops (the noise covers the whole image): set "
                         "data.preprocess=resize_and_crop or crop; sampling then takes any size")
    if cfg.method == "ddpm" and cfg.ddpm.sample_steps > cfg.ddpm.num_train_timesteps:
        raise ValueError(
            f"config key ddpm.sample_steps={cfg.ddpm.sample_steps} exceeds ddpm.num_train_timesteps="
            f"{cfg.ddpm.num_train_timesteps}: a sampler takes 1..{cfg.ddpm.num_train_timesteps} steps"
        )
    gan = {"pix2pix": cfg.pix2pix.gan_mode != "none" and cfg.pix2pix.lambda_gan > 0, "cyclegan": True,
           "cut": True, "colorization": cfg.colorization.loss == "gan"}.get(cfg.method, False)
    if cfg.train.ema_decay is not None and not (0 < cfg.train.ema_decay < 1):
        raise ValueError(f"config key train.ema_decay={cfg.train.ema_decay} must be in (0, 1), e.g. 0.999")
    if cfg.train.ema_decay is not None and cfg.method not in ("pix2pix", "cyclegan", "cut", "colorization"):
        hint = " (DDPM: ddpm.ema_decay)" if cfg.method == "ddpm" else ""
        raise ValueError(f"config key train.ema_decay averages a GAN method's generator; for method="
                         f"{cfg.method} it does nothing{hint}")
    if cfg.train.diffaugment is not None:
        parse_diffaugment(cfg.train.diffaugment)
        if not gan:
            raise ValueError(f"config key train.diffaugment={cfg.train.diffaugment!r} augments a "
                             f"discriminator's inputs; this method={cfg.method} run has no discriminator")
    if cfg.method == "ddpm":
        check_formulation(cfg.ddpm)
    if cfg.method == "ddpm" and cfg.ddpm.zero_terminal_snr and cfg.ddpm.prediction_type == "epsilon":
        raise ValueError(
            "config key ddpm.zero_terminal_snr=true needs ddpm.prediction_type=v_prediction: at the last "
            "timestep the input is pure noise, so an epsilon target equals the input and says nothing of "
            "the image (Lin et al. 2024). configs/ddpm/cifar10.yaml and facades_conditional.yaml set it: "
            "for Ho et al.'s recipe add ddpm.zero_terminal_snr=false ddpm.snr_gamma=null, or use "
            "configs/ddpm/cifar10_paper.yaml")
    if cfg.method == "ddpm" and cfg.ddpm.zero_terminal_snr and cfg.ddpm.timestep_spacing != "trailing":
        raise ValueError(
            f"config key ddpm.zero_terminal_snr=true needs ddpm.timestep_spacing=trailing (got "
            f"{cfg.ddpm.timestep_spacing!r}): samplers must start at the last timestep, where SNR is 0")
    if cfg.method == "ddpm" and cfg.ddpm.beta_start >= cfg.ddpm.beta_end:
        raise ValueError(
            f"config key ddpm.beta_start={cfg.ddpm.beta_start} must be below "
            f"ddpm.beta_end={cfg.ddpm.beta_end}"
        )
    if (cfg.method in ("cyclegan", "cut")) != (cfg.data.kind == "unpaired"):
        raise ValueError(f"method={cfg.method!r} does not read data.kind={cfg.data.kind!r}; CycleGAN and CUT "
                         "read data.kind=unpaired and the paired methods read paired, segmentation or "
                         "builtin")
    if cfg.method == "cut":
        check_cut(cfg)
    if cfg.method == "segmentation" and (cfg.data.kind != "segmentation" or cfg.data.direction != "BtoA"):
        raise ValueError(
            "method=segmentation reads photo -> labels: set data.kind=segmentation and "
            f"data.direction=BtoA (got kind={cfg.data.kind!r}, direction={cfg.data.direction!r})"
        )
    if cfg.method == "rotation":
        if cfg.data.kind == "segmentation" and cfg.data.direction != "BtoA":
            raise ValueError(
                "method=rotation learns from photos: with data.kind=segmentation set data.direction=BtoA"
            )
        if cfg.data.preprocess not in ("resize_and_crop", "crop") and cfg.data.kind != "builtin":
            raise ValueError("method=rotation needs square crops: data.preprocess=resize_and_crop or crop")
    check_ignored_keys(cfg)
    if cfg.data.kind != "builtin" and not cfg.data.root:
        raise ValueError(f"config key data.root is required for data.kind={cfg.data.kind!r}")


def check_cut(cfg: ExperimentConfig) -> None:
    """CUT keys that cannot work together, named (the layers' range is checked against the generator
    when the trainer builds it)."""
    c = cfg.cut
    if c.nce_layers is not None:
        parse_nce_layers(c.nce_layers)
    if c.resolved("lambda_nce") == 0 and c.lambda_gan == 0:
        raise ValueError("config keys cut.lambda_nce=0 and cut.lambda_gan=0: the generator would learn "
                         "nothing")
    if c.resolved("nce_idt") and c.resolved("lambda_nce") == 0:
        raise ValueError("config key cut.nce_idt=true needs cut.lambda_nce > 0 (the identity term is a "
                         "PatchNCE term)")
    if c.resolved("lambda_nce") > 0 and cfg.data.channels_a != cfg.data.channels_b:
        raise ValueError(f"config keys data.channels_a={cfg.data.channels_a} and data.channels_b="
                         f"{cfg.data.channels_b}: PatchNCE encodes the translation (domain B) with the "
                         "generator's encoder, which reads domain A's channels, so CUT and FastCUT need "
                         "equal channels (or cut.lambda_nce=0 with cut.nce_idt=false: a GAN-only translator)")


# Keys a method never reads; a value other than the default would be silently ignored, so it is an error.
_D_KEYS = ("model.discriminator", "model.ndf", "model.d_layers", "model.d_norm")
IGNORED_BY = {
    "ddpm": ("model.ngf", "model.norm", "model.dropout", "model.num_downs", "model.upsample",
             "model.freeze", "model.init_type") + _D_KEYS,
    "segmentation": _D_KEYS, "rotation": _D_KEYS + ("model.init_from", "model.freeze"),
    "pix2pix": ("model.freeze",), "cyclegan": ("model.freeze",), "cut": ("model.freeze",),
    "colorization": ("model.freeze",),
}
HINTS = {"model.ngf": "ddpm.ngf", "model.dropout": "ddpm.dropout"}


def check_ignored_keys(cfg: ExperimentConfig) -> None:
    """Refuse settings the configured method would not read (method sections of other methods,
    model keys outside its networks), naming the key."""
    defaults, values = flatten(ExperimentConfig()), flatten(cfg)
    sections = {"pix2pix", "cyclegan", "cut", "ddpm", "colorization"} - {cfg.method}
    # (A GAN variant's discriminator keys stay allowed when the variant is off: configs carry them for it.)
    ignored = [k for k in values if k.split(".")[0] in sections] + list(IGNORED_BY.get(cfg.method, ()))
    for key in ignored:
        if values[key] != defaults[key]:
            hint = f" (for method=ddpm use {HINTS[key]})" if cfg.method == "ddpm" and key in HINTS else ""
            raise ValueError(f"config key {key}={values[key]!r} is not read by method={cfg.method!r}{hint}; "
                             "remove it (it would be silently ignored)")


def _allowed_keys(schema: Any, prefix: str) -> list[str]:
    return [f"{prefix}{f.name}" for f in dataclasses.fields(schema)]


def _friendly(err: OmegaConfBaseException, source: str) -> ValueError:
    key = getattr(err, "full_key", None) or "?"
    msg = (getattr(err, "msg", None) or str(err) or type(err).__name__).split("\n")[0]
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        parent, _, leaf = key.rpartition(".")
        schema = ExperimentConfig
        try:
            for part in parent.split(".") if parent else []:
                schema = {f.name: f.type for f in dataclasses.fields(schema)}[part]
                schema = globals()[schema] if isinstance(schema, str) else schema
            allowed = ", ".join(_allowed_keys(schema, f"{parent}." if parent else ""))
        except (KeyError, TypeError):
            allowed = "see gen/config.py"
        return ValueError(f"unknown config key {key!r} in {source}; allowed keys here: {allowed}")
    return ValueError(f"bad value for config key {key!r} in {source}: {msg}")


# Optional[bool] keys whose unset value means "decide for this machine": `auto` is read as unset.
AUTO_MEANS_UNSET = ("train.channels_last", "train.cudnn_benchmark")


def _auto_to_unset(conf) -> None:
    for key in AUTO_MEANS_UNSET:
        if OmegaConf.select(conf, key, default=None) == "auto":
            OmegaConf.update(conf, key, None)


def _field_type(dotted: str) -> Any:
    """The schema type of a dotted key (str, Optional[str], int, ...); None for an unknown key."""
    schema: Any = ExperimentConfig
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(schema):
            return None
        hints = typing.get_type_hints(schema)
        if part not in hints:
            return None
        schema = hints[part]
    return schema


def _string_typed(dotted: str) -> tuple[bool, bool]:
    """(is a string key, may be null)."""
    t = _field_type(dotted)
    if t is str:
        return True, False
    args = typing.get_args(t)
    return (str in args and type(None) in args, True) if args else (False, False)


def _as_string(text: str, nullable: bool) -> Optional[str]:
    """A string key's value as written: glob characters (* @ { [ ! ...) and YAML words (yes, 0123)
    stay text; `null` (or `~`) unsets an optional key; a quoted value loses its quotes."""
    if nullable and text in ("null", "~"):
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            unquoted = yaml.safe_load(text)
        except yaml.YAMLError:
            unquoted = None
        if isinstance(unquoted, str):
            return unquoted
    return text.replace("${", "\\${")  # literal: no OmegaConf interpolation inside a file pattern


def _nested(dotted: str, value: Any) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _parse_override(item: str):
    """`key=value` -> an OmegaConf node. String-typed keys take the text as written; other values are
    read as YAML (numbers, booleans, null), and text YAML cannot read is an error naming the override."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value, e.g. train.max_steps=100")
    key, _, text = item.partition("=")
    key = key.strip()
    is_str, nullable = _string_typed(key)
    if is_str or _field_type(key) is None:  # unknown keys: the merge names them with the allowed keys
        return OmegaConf.create(_nested(key, _as_string(text, nullable)))
    try:
        return OmegaConf.from_dotlist([f"{key}={text}"])
    except yaml.YAMLError as err:
        expected = getattr(_field_type(key), "__name__", str(_field_type(key)))
        raise ValueError(f"override {item!r}: {text!r} is not a value of config key {key} "
                         f"(expected {expected}; {str(err).splitlines()[0]})") from None


def _yaml_error(path: Path, err: yaml.YAMLError) -> ValueError:
    """A YAML file that does not parse: the file, the line, and what to quote."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where, shown = "", ""
    if mark is not None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        lines = path.read_text(errors="replace").splitlines()
        if mark.line < len(lines):
            shown = f" ({lines[mark.line].strip()!r})"
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ValueError(
        f"config file {path} is not valid YAML{where}{shown}: {problem}. A value that starts with "
        "* & @ ` { [ ! % | > or contains ': ' must be quoted, e.g. pattern: \"*.jpg\""
    )


def _plain_string(node: yaml.Node, key: str, value: Any) -> Any:
    """The text as written where YAML converted an unquoted value (yes -> True, 0123 -> 83, 1e3 ->
    1000.0) at a string-typed key; `null` still unsets an optional one."""
    if isinstance(node, yaml.ScalarNode) and node.style is None and not isinstance(value, str):
        is_str, nullable = _string_typed(key)
        if is_str and not (nullable and value is None):
            return node.value
    return value


def _keep_strings(node: yaml.Node, data: Any, prefix: str = "") -> Any:
    """Walk the composed node tree beside the loaded data, applying _plain_string at every leaf."""
    if not (isinstance(node, yaml.MappingNode) and isinstance(data, dict)):
        return _plain_string(node, prefix, data)
    for key_node, value_node in node.value:
        key = key_node.value
        if key in data:
            data[key] = _keep_strings(value_node, data[key], f"{prefix}.{key}" if prefix else key)
    return data


def _load_yaml(path: Path):
    """A YAML config file as an OmegaConf node; errors name the file and the line."""
    try:
        text = path.read_text()
        data, node = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text ({err.reason})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of config keys (e.g. 'method: pix2pix'), "
                         f"not a {type(data).__name__}")
    return OmegaConf.create(_keep_strings(node, data))


# Keys that were renamed: {old: new}. A value set at an old key is a ValueError naming the new one.
RENAMED = {"train.sample_every": "train.validate_every"}


def _renamed(conf, source: str) -> None:
    """Refuse a value at an old key of RENAMED; drop an unset one, which every run's config.yaml
    written before the rename holds (`sample_every: null`), so those runs still resume and sample."""
    for old, new in RENAMED.items():
        parent, _, leaf = old.rpartition(".")
        section = OmegaConf.select(conf, parent, default=None)
        if not isinstance(section, DictConfig) or leaf not in section:
            continue
        if section[leaf] is not None:
            raise ValueError(f"config key {old} in {source} was renamed: use {new}")
        del section[leaf]


def load(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Merge schema defaults <- YAML file <- `key=value` overrides; validate; return frozen config."""
    merged = OmegaConf.structured(ExperimentConfig)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = _load_yaml(path)
        _renamed(loaded, f"config file {path}")
        try:
            _auto_to_unset(loaded)
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as err:
            raise _friendly(err, str(path)) from None
    for item in overrides:
        item_conf = _parse_override(item)
        _renamed(item_conf, f"override {item!r}")
        try:
            _auto_to_unset(item_conf)
            merged = OmegaConf.merge(merged, item_conf)
        except OmegaConfBaseException as err:
            raise _friendly(err, f"override {item!r}") from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _friendly(err, "the merged config") from None
    validate(cfg)
    return cfg


# Keys that change what the networks are (their layers or shapes): a checkpoint made with other values
# cannot be loaded. Every model.* key counts except the two that only say where weights start.
ARCHITECTURE_KEYS = (
    "method",
    "data.channels_a",
    "data.channels_b",
    "data.num_classes",
    "data.kind",
    "pix2pix.gan_mode",
    "colorization.loss",
    "colorization.bins",
    "colorization.bin_grid",
    "colorization.output_stride",
    "ddpm.ngf",
    "ddpm.formulation",
    "cut.nce_layers",
    "cut.head_width",
)
NOT_ARCHITECTURE = ("model.init_from", "model.init_gain", "model.init_type")
# What a trained network's output means (a DDPM's target and noise schedule, EDM's sigma_data): a run
# resumed with another value would train one network toward two targets, and its export would say
# only the last.
# The DDPM ones as diffusers' scheduler config names them (a saved scheduler_config.json) -> gen's key
DDPM_SCHEDULE_KEYS = {"prediction_type": "ddpm.prediction_type",
                      "rescale_betas_zero_snr": "ddpm.zero_terminal_snr",
                      "beta_schedule": "ddpm.beta_schedule", "beta_start": "ddpm.beta_start",
                      "beta_end": "ddpm.beta_end", "num_train_timesteps": "ddpm.num_train_timesteps"}
OBJECTIVE_KEYS = (*DDPM_SCHEDULE_KEYS.values(), "ddpm.edm_sigma_data")
SCHEDULE_KEYS = ("train.max_steps", "train.lr", "train.lr_decay_start", "train.warmup_steps")


def flatten(cfg: ExperimentConfig) -> dict[str, Any]:
    """{"section.key": value} for every key."""
    return {f"{section}.{k}" if isinstance(values, dict) else section: v
            for section, values in dataclasses.asdict(cfg).items()
            for k, v in (values.items() if isinstance(values, dict) else [(None, values)])}


def differences(old: ExperimentConfig, new: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (old value, new value)} for every key whose value differs."""
    a, b = flatten(old), flatten(new)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def override_value(value: Any) -> str:
    """`value` as a key=value override spells it (null, true/false, numbers and strings as they are)."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def is_architecture_key(key: str) -> bool:
    return key in ARCHITECTURE_KEYS or (key.startswith("model.") and key not in NOT_ARCHITECTURE)


def to_yaml(cfg: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)


def wandb_mode(cfg: ExperimentConfig) -> str:
    """offline unless an API key is present; an explicit log.wandb always wins."""
    if cfg.log.wandb is not None:
        return cfg.log.wandb
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"
