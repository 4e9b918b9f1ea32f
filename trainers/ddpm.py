"""DDPM (Ho et al. 2020) on the shared U-Net, unconditional or image-conditioned (Palette-style).

data.kind=images: unconditional, x0 is the image. Any paired kind (paired, segmentation, builtin):
x0 is the target and the input image is concatenated to x_t as the condition. diffusers'
DDPMScheduler adds the noise; the network predicts epsilon (or v); the loss is the MSE. An EMA of
the weights (diffusers' EMAModel) makes the sample grids and the export.

ddpm.formulation=edm: Karras et al. 2022 on the same U-Net (gen.losses.edm): log-normal noise levels,
the preconditioned denoiser, the loss on the network's own output (EDM's lambda-weighted one), and an
EDMEulerScheduler holding the Karras sigmas for sampling (euler, heun, dpm: gen.pipelines.edm).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import DDPMScheduler, EDMEulerScheduler
from diffusers.training_utils import EMAModel

from gen.data.build import channels
from gen.losses.diffusion import min_snr_weights, snr_table
from gen.losses.edm import f_target, log_sigma_quartile, precondition, sample_sigmas, unet_timestep
from gen.methods import Sampling, validation
from gen.models import create_model
from gen.pipelines import export_copy
from gen.pipelines.diffusion import DiffusionSamplingPipeline
from gen.visualize import image_grid

from .base import Trainer
from .builders import check_crop_fits, label_input
from .init_from import check_ddpm_objective, ddpm_source, load_ddpm

QUARTILES = 4


class DDPMTrainer(Trainer):
    method = "ddpm"

    @property
    def conditional(self) -> bool:
        return self.cfg.data.kind != "images"

    @property
    def edm(self) -> bool:
        return self.cfg.ddpm.formulation == "edm"

    def build(self) -> None:
        c = self.cfg.ddpm
        if self.edm:  # the Karras schedule the samplers read (training draws its own sigmas)
            self.noise_scheduler = EDMEulerScheduler(
                sigma_min=c.edm_sigma_min, sigma_max=c.edm_sigma_max, sigma_data=c.edm_sigma_data,
                rho=c.edm_rho, num_train_timesteps=c.num_train_timesteps)
        else:
            self.noise_scheduler = DDPMScheduler(
                num_train_timesteps=c.num_train_timesteps,
                beta_schedule=c.beta_schedule,
                beta_start=c.beta_start,
                beta_end=c.beta_end,
                prediction_type=c.prediction_type,
                timestep_spacing=c.timestep_spacing,
                rescale_betas_zero_snr=c.zero_terminal_snr,
            )
        if self.conditional:
            self.cond_c, self.out_c = channels(self.cfg.data)
        else:
            self.cond_c, self.out_c = 0, self.cfg.data.channels_b
        m = self.cfg.model
        if not m.generator.startswith("ddpm"):
            raise ValueError(
                f"method=ddpm needs a ddpm-style U-Net (model.generator=ddpm_small, ddpm_cifar10, "
                f"ddpm_tiny or ddpm_unet), got {m.generator!r}"
            )
        width = {"ngf": c.ngf} if c.ngf else {}
        converted, layout = ddpm_source(m.init_from) if m.init_from else (None, {})
        try:
            net = create_model(m.generator, in_channels=self.out_c + self.cond_c, out_channels=self.out_c,
                               dropout=c.dropout, **width, **layout)
        except ValueError as err:
            raise ValueError(f"config keys model.generator={m.generator!r}, ddpm.ngf={c.ngf} (the base "
                             f"width; null: the preset's): {err}") from None
        check_crop_fits(self.cfg, net.multiple)
        if m.init_from:  # before the EMA copies the weights: its shadow starts from the loaded ones
            check_ddpm_objective(m.init_from, self.noise_scheduler, c.formulation, self.accelerator.print)
            load_ddpm(m.init_from, net, converted, self.accelerator.print)
        self.use_single_model("unet", net)
        self.ema = EMAModel(net.parameters(), decay=c.ema_decay, foreach=True)
        self.track("ema", self.ema)
        self._reset_quartiles()
        # SNR(t) of every timestep, on the device (looked up per sample, no host copy per step)
        self.snr = None if self.edm else snr_table(self.noise_scheduler.alphas_cumprod).to(self.device)

    def _reset_quartiles(self) -> None:
        self.q_sum = torch.zeros(QUARTILES, device=self.device)
        self.q_count = torch.zeros(QUARTILES, device=self.device)

    def edm_losses(self, y: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Karras et al. 2022 eq. 8 on clean images y (B, C, H, W): per-sample mean squared error of F
        against its target (= lambda(sigma) ||D - y||^2 / pixels), (B,), and each sigma's quartile (B,)."""
        c, net = self.cfg.ddpm, self.models["unet"]
        sigma = sample_sigmas(y.shape[0], c.edm_p_mean, c.edm_p_std, y.device)  # (B,)
        noise = torch.randn_like(y)
        s = sigma.view(-1, 1, 1, 1)
        _, _, c_in, _ = precondition(s, c.edm_sigma_data)
        model_in = c_in * (y + s * noise)
        if cond is not None:  # concatenated unscaled, as the DDPM concatenates it to x_t
            model_in = torch.cat([model_in, cond], dim=1)
        out = net(model_in, unet_timestep(sigma)).float()
        per_sample = (out - f_target(y, noise, sigma, c.edm_sigma_data)).pow(2).mean(dim=(1, 2, 3))
        return per_sample, log_sigma_quartile(sigma, c.edm_p_mean, c.edm_p_std)

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["target"] if self.conditional else batch["image"]  # (B, C, H, W) in [-1, 1]
        if self.edm:
            per_sample, q = self.edm_losses(x0, batch["input"] if self.conditional else None)
            losses = {"MSE": per_sample.mean()}
            return self._update(losses["MSE"], losses, per_sample, q)
        noise = torch.randn_like(x0)
        t = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device
        )
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        model_in = torch.cat([x_t, batch["input"]], dim=1) if self.conditional else x_t
        if self.cfg.ddpm.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        net = self.models["unet"]
        per_sample = (net(model_in, t).float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
        losses = {"MSE": per_sample.mean()}  # unweighted: comparable across runs and weightings
        loss = losses["MSE"]
        if self.cfg.ddpm.snr_gamma is not None:
            weights = min_snr_weights(self.snr[t], self.cfg.ddpm.snr_gamma, self.cfg.ddpm.prediction_type)
            loss = losses["loss"] = (weights * per_sample).mean()
        q = (t * QUARTILES // self.noise_scheduler.config.num_train_timesteps).long()
        return self._update(loss, losses, per_sample, q)

    def _update(self, loss: torch.Tensor, losses: dict, per_sample: torch.Tensor, q: torch.Tensor) -> dict:
        """Backward, optimizer and EMA step; the per-sample losses (B,) into their quartiles q (B,)."""
        self.backward(loss, "unet")
        skipped = self.skipped_updates
        self.step_optimizer("unet")
        if (
            self.accelerator.sync_gradients and self.skipped_updates == skipped
        ):  # a skipped update moves no EMA
            self.ema.step(self.unwrap("unet").parameters())
        self.q_sum.index_add_(0, q, per_sample.detach())
        self.q_count.index_add_(0, q, torch.ones_like(per_sample))
        return losses

    def pop_log_extras(self) -> dict[str, float]:
        totals = self.accelerator.reduce(
            torch.stack([self.q_sum, self.q_count]), reduction="sum"
        )  # all processes
        sums, counts = totals.tolist()
        self._reset_quartiles()
        key = "MSE_sigma_q" if self.edm else "MSE_t_q"  # q0: the least noise
        return {f"{key}{i}": s / n for i, (s, n) in enumerate(zip(sums, counts)) if n}

    def pipeline(self) -> DiffusionSamplingPipeline:
        """The sampling pipeline on a copy of the U-Net (gen.pipelines.export_copy) holding the EMA
        weights, what validation samples and the export saves; the live network is untouched."""
        scheduler = type(self.noise_scheduler).from_config(self.noise_scheduler.config)
        net = export_copy(self.unwrap("unet"))
        self.ema.copy_to(net.parameters())
        pipe = DiffusionSamplingPipeline(net, scheduler)
        pipe.sample_size = self.pipeline_sample_size()
        pipe.label_input = label_input(self.cfg.data)
        pipe.seed, pipe.max_16bit = self.cfg.run.seed, self.cfg.data.max_16bit
        pipe.default_scheduler = self.cfg.ddpm.sampler  # sample.py, evaluate, compare: the grids' sampler
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def validate(self, step: int) -> dict:
        c, pipe = self.cfg.ddpm, self.pipeline()
        if self.conditional:
            if self.val_set is None:
                return {}
            return validation(pipe, self.val_set, self.validation_items(),
                              sampling=Sampling(1, c.sample_steps, c.sampler))  # the run's seed
        # sample.py RUN --num num_samples --seed run.seed draws the same images
        x = pipe.sample_numbers(range(c.num_samples), c.sample_steps, c.sampler, None)  # run.seed
        side = max(1, int(math.sqrt(c.num_samples)))
        out = {"grid": image_grid([list(x[i:i + side]) for i in range(0, len(x), side)])}
        for i, (mu, sd) in enumerate(zip(x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist())):
            out[f"sample_mean_c{i}"], out[f"sample_std_c{i}"] = mu, sd
        return out

    def on_device(self) -> None:
        # EMAModel copies the parameters where they are when it is built (before prepare() moves the
        # network), and load_state_dict puts them on the CPU: both must follow the network.
        self.ema.to(self.device)
        self.q_sum, self.q_count = self.q_sum.to(self.device), self.q_count.to(self.device)
        if self.snr is not None:
            self.snr = self.snr.to(self.device)

    def sample_flags(self) -> str:
        return "--input DIR" if self.conditional else f"--num {self.cfg.ddpm.num_samples}"

    def export(self, path: Path) -> None:
        self.pipeline().save_export(path, self.method)

    def pipeline_sample_size(self) -> int:
        d = self.cfg.data
        return d.builtin_size if d.kind == "builtin" else d.crop_size
