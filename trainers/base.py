"""The training loop every method shares, on Hugging Face Accelerate.

The base class owns the loop, cadences (log / validate / checkpoint), wandb logging through
Accelerate's tracker, atomic checkpoints with automatic resume, and the final export. A method
subclass owns its networks and its optimizer steps: `build()` and `train_step(batch)`.
"""
from __future__ import annotations

import copy
import math
import os
import secrets
import time
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gen import config as config_lib
from gen.config import ExperimentConfig
from gen.data import ResumableSampler, build_paired, collate, data_report
from gen.models.layers import pad_to_multiple
from gen.models.sync_batchnorm import use_torch_kernels

from . import checkpoint, devices, faults, runlog
from .builders import adam
from .nonfinite import LossMonitor, guard_optimizer
from .runlock import RunDirLocked, RunLock


def probe_writable(run_dir: Path) -> None:
    """Fail before training if the run directory cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_probe"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"run directory {run_dir} is not writable ({err}); set run.dir to a "
                              "writable folder") from None


def linear_decay(max_steps: int, decay_start: float, warmup_steps: int = 0):
    """LR factor: linear from 0 over warmup_steps, 1 until decay_start * max_steps, then linear to 0
    at max_steps (Isola et al.)."""
    start = int(max_steps * decay_start)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step < start:
            return 1.0
        return max(0.0, (max_steps - step) / max(1, max_steps - start))
    return factor



def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory format. A
    checkpoint written in NCHW resumed with channels_last (or the reverse: train.channels_last's auto
    choice differs between CPU and GPU) would otherwise feed fused Adam mismatched strides, which it
    does not check: the update would be silently wrong."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

class Trainer:
    """Subclasses set `self.models`, `self.optimizers`, `self.schedulers` in `build()` and return a
    dict of scalar loss tensors from `train_step(batch)`, where every update is
    `self.backward(loss, name)` then `self.step_optimizer(name)`."""

    method = "base"

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.wandb_mode = config_lib.wandb_mode(cfg)
        if self.wandb_mode != "disabled":
            os.environ.setdefault("WANDB_MODE", self.wandb_mode)
        cpu = devices.use_cpu(cfg)
        # The resolved choice replaces "auto" in the config, so config.yaml records what ran; a resumed
        # run keeps the choice it was started with.
        resuming = bool(checkpoint.checkpoint_dirs(self.ckpt_root))
        cfg, kept = devices.keep_resumed_choices(cfg, self.run_dir, resuming, cpu)
        cfg, self.precision_note = devices.resolve_precision(cfg, cpu)
        self.precision_note = self.precision_note or kept
        cfg = devices.resolve_channels_last(cfg, cpu, self.method)
        self.cfg = cfg
        devices.check_precision(cfg, cpu)
        devices.configure_backends(cfg, cuda=not cpu and devices.gpu_usable())
        # Accelerate keeps process-wide state; a second trainer in one process (a notebook, the tests)
        # may ask for another precision. The distributed part (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision="no" if cfg.train.mixed_precision == "fp32" else cfg.train.mixed_precision,
            gradient_accumulation_steps=cfg.train.grad_accum,
            log_with="wandb" if self.wandb_mode != "disabled" else None,
            project_dir=str(self.run_dir),
        )
        devices.check_distributed(self.accelerator)
        if self.accelerator.is_main_process:
            probe_writable(self.run_dir)
        self.accelerator.wait_for_everyone()
        # Distinct per-rank noise (dropout, pools); weights are identical because DDP broadcasts rank 0's.
        set_seed(cfg.run.seed + self.accelerator.process_index)
        self.step = 0
        self.samples_seen = 0  # training samples drawn over all processes (the sampler's position)
        self.run_lock: Optional[RunLock] = None
        self.step_lrs: dict[str, float] = {}  # the LR of each optimizer at the last step taken
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.skipped_updates = self.amp_skipped = 0
        self.tracked: dict[str, tuple[Any, bool]] = {}
        self.last_validation: tuple[int, dict[str, float]] | None = None  # (step, metrics) for the summary
        self.last_grids: list[Path] = []
        self.runlog = runlog.RunLog()  # opened by init_tracking (main process only)

    # ---- hooks for methods -------------------------------------------------------------------
    def build_data(self) -> None:
        """Paired train/val splits (pix2pix, segmentation, rotation); unpaired methods override."""
        d = self.cfg.data
        self.train_set = build_paired(d, "train", train=True, seed=self.cfg.run.seed)
        self.val_set = build_paired(d, "val", train=False) if d.val else None

    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_device(self) -> None:
        """Move state the step reads besides the prepared models (EMA weights, image pools, tables) to
        `self.device`; called after `prepare()` and again after a resume loaded it on the CPU."""

    def validate(self, step: int) -> dict[str, Any]:
        """Score the validation items with the export's pipeline: {"grid": PIL image, metric: float}."""
        return {}

    def export(self, path: Path) -> None:
        raise NotImplementedError

    def sample_flags(self) -> str:
        """What `sample.py RUN ... --output DIR` needs besides the run to use this export."""
        return "--input DIR"

    def track(self, name: str, obj: Any, per_rank: bool = False) -> None:
        """Checkpoint `obj` (anything with state_dict / load_state_dict: an EMA, an image pool) under
        `name`: one call is all a method adds for a new piece of state. `per_rank`: each process keeps
        its own (image pools); otherwise rank 0's is saved and every process loads it."""
        self.tracked[name] = (obj, per_rank)

    def extra_state(self) -> dict[str, Any]:
        """The tracked state shared by all processes (rank 0 saves it)."""
        return {k: obj.state_dict() for k, (obj, per_rank) in self.tracked.items() if not per_rank}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, (obj, per_rank) in self.tracked.items():
            if not per_rank and k in state:
                obj.load_state_dict(state[k])

    def pop_log_extras(self) -> dict[str, float]:
        """Extra scalars read (and reset) at log cadence, e.g. DDPM's loss per timestep quartile."""
        return {}

    def rank_state(self) -> dict[str, Any]:
        """The tracked state that differs between processes (image pools), saved per rank."""
        return {k: obj.state_dict() for k, (obj, per_rank) in self.tracked.items() if per_rank}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        for k, (obj, per_rank) in self.tracked.items():
            if per_rank and k in state:
                obj.load_state_dict(state[k])  # on the CPU; on_device() follows every resume

    # ---- helpers -----------------------------------------------------------------------------
    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        t = self.cfg.train
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_decay(t.max_steps, t.lr_decay_start, t.warmup_steps)
        )

    def use_single_model(self, name: str, net: nn.Module) -> None:
        """One network, one Adam, one schedule: the single-loss methods."""
        opt = adam(self.cfg, net)
        self.models, self.optimizers, self.schedulers = (
            {name: net},
            {name: opt},
            {name: self.lr_schedule(opt)},
        )

    def backward(self, loss: torch.Tensor, optimizer: str) -> None:
        """Backward of the loss that optimizer `optimizer` will step on, scaled by that optimizer's own
        GradScaler under fp16 (a GAN's D and G losses overflow at different scales, and one shared
        scale changed by D's update would mix scales in G's accumulated gradients)."""
        scaler = getattr(self.optimizers[optimizer], "scaler", None)
        loss = loss / self.cfg.train.grad_accum  # accumulation averages, as Accelerate's backward does
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def step_optimizer(self, name: str) -> None:
        """Unscale (fp16), clip to train.max_grad_norm, step optimizer `name` and zero its gradients;
        between accumulation micro-steps nothing happens, so the gradients keep accumulating (a zero
        before each forward would drop all but the last micro-batch). fp16 overflow steps are skipped
        by the scaler, which then backs off."""
        if not self.accelerator.sync_gradients:
            return
        opt, max_norm = self.optimizers[name], self.cfg.train.max_grad_norm
        scaler = getattr(opt, "scaler", None)
        if max_norm:
            if scaler is not None:
                scaler.unscale_(opt.optimizer)
            params = [p for group in opt.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        if scaler is None:
            opt.step()
        else:
            # An overflow step is one whose update lowered the scale; compared on the device, because
            # the fused Adam kernels skip such steps themselves, without the host seeing found_inf.
            before = scaler._scale.clone()
            opt.step()
            self.amp_skipped = self.amp_skipped + (scaler._scale < before).sum()
        opt.zero_grad(set_to_none=True)

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """models[name](x) through the prepared (DDP) module, so its gradients are all-reduced; with
        data.preprocess=none (any size) padded to the network's multiple and cropped back."""
        net = self.models[name]
        if self.cfg.data.preprocess != "none":
            return net(x)
        padded, (h, w) = pad_to_multiple(x, self.unwrap(name).multiple)
        return net(padded)[..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def unwrap(self, name: str) -> nn.Module:
        return self.accelerator.unwrap_model(self.models[name])

    def samples_per_step(self) -> int:
        """Training samples one optimizer step draws over all processes."""
        t = self.cfg.train
        return t.batch_size * t.grad_accum * self.accelerator.num_processes

    def train_loader(self, dataset, start_sample: int) -> DataLoader:
        """Batches from sample `start_sample` of the run's global sample stream: a resume continues
        where the run stopped whatever the batch size, accumulation or process count is now."""
        cfg, acc = self.cfg.train, self.accelerator
        sampler = ResumableSampler(len(dataset), seed=self.cfg.run.seed, rank=acc.process_index,
                                   world_size=acc.num_processes, start=start_sample)
        workers = devices.data_workers(self.cfg, self.device, devices.local_processes(acc.num_processes))
        # Its own generator: starting an iterator draws a seed, which must not shift the global RNG
        # stream a resumed run restores (noise, timesteps, dropout).
        seeds = torch.Generator().manual_seed(self.cfg.run.seed + acc.process_index)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=workers, persistent_workers=workers > 0, generator=seeds,
                          pin_memory=self.device.type == "cuda", drop_last=True)

    def to_device(self, batch: dict) -> dict:
        fmt = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format

        def move(v):
            if not torch.is_tensor(v):
                return v
            v = v.to(self.device, non_blocking=True)
            return v.contiguous(memory_format=fmt) if v.ndim == 4 else v
        return {k: move(v) for k, v in batch.items()}

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        """Write checkpoint `step`; a failed write (disk full, permissions) removes the partial copy
        and raises an OSError that names the checkpoint and the whole one it leaves in place."""
        self.runlog.sync()  # the steps a checkpoint covers are on disk before it is
        try:
            self._write_checkpoint(step)
        except OSError as err:
            shutil.rmtree(checkpoint.tmp_dir(self.ckpt_root, step), ignore_errors=True)
            last = checkpoint.checkpoint_dirs(self.ckpt_root)
            raise OSError(
                f"could not write checkpoint step {step} in {self.ckpt_root} ({err.strerror or err}); "
                f"the newest whole checkpoint is {last[0] if last else 'none'} and training can resume "
                "from it once there is space"
            ) from None

    def scalers(self) -> dict[str, Any]:
        """Each optimizer's fp16 GradScaler (empty without fp16)."""
        return {k: o.scaler for k, o in self.optimizers.items() if getattr(o, "scaler", None) is not None}

    def _write_checkpoint(self, step: int) -> None:
        acc = self.accelerator
        tmp = checkpoint.tmp_dir(self.ckpt_root, step)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        files: list[str] = []
        if acc.is_main_process:
            state = {"step": step, "samples": self.samples_seen,
                     "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                     "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                     "scalers": {k: s.state_dict() for k, s in self.scalers().items()},
                     "extra": self.extra_state()}
            models = {k: acc.get_state_dict(m) for k, m in self.models.items()}
            files = checkpoint.write_models_and_state(tmp, models, state)
        faults.maybe_kill("during_checkpoint", step)
        checkpoint.write_rng(tmp, acc.process_index, self.rank_state())
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.finalize(
                self.ckpt_root, step, files, acc.num_processes, self.cfg.train.keep_checkpoints
            )
        acc.wait_for_everyone()
        faults.maybe_kill("after_checkpoint", step)

    def check_resume_config(self, step: int, ckpt: Path) -> None:
        """Before loading a checkpoint: refuse a config whose networks differ from the run's (naming
        the keys), refuse max_steps below the checkpoint, and say what else changed."""
        saved = self.run_dir / "config.yaml"
        self.config_changes: dict[str, tuple[Any, Any]] = {}
        if saved.is_file():
            try:
                old = config_lib.load(saved)
            except (ValueError, FileNotFoundError) as err:
                warnings.warn(
                    f"cannot compare with the run's saved config ({err}); resuming without the check"
                )
                old = None
            if old is not None:
                diff = {k: v for k, v in config_lib.differences(old, self.cfg).items() if k != "run.dir"}
                # batch <-> sync_batch is the same network trained over more processes (1 GPU -> 8)
                same_net = {k for k, v in diff.items() if k in ("model.norm", "model.d_norm")
                            and set(v) == {"batch", "sync_batch"}}
                arch = {k: v for k, v in diff.items()
                        if config_lib.is_architecture_key(k) and k not in same_net}
                if arch:
                    changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in arch.items())
                    keep = " ".join(f"{k}={a}" for k, (a, b) in arch.items())
                    raise ValueError(
                        f"run.dir {self.run_dir} holds a run whose networks were built differently "
                        f"({changes}); its checkpoint {ckpt} cannot be loaded into them. Use a new "
                        f"run.dir for the new architecture, or continue this run with {keep}"
                    )
                self.config_changes = diff
        if self.cfg.train.max_steps < step:
            raise ValueError(
                f"config key train.max_steps={self.cfg.train.max_steps} is below the step of the "
                f"checkpoint in run.dir ({ckpt}, step {step}); raise train.max_steps to continue, or "
                "use a new run.dir"
            )
        for k, (a, b) in self.config_changes.items():
            note = (
                " (the LR schedule follows the new value from this step on)"
                if k in config_lib.SCHEDULE_KEYS
                else ""
            )
            self.accelerator.print(f"resume: {k} changed {a!r} -> {b!r}{note}")

    def restart_schedules(self) -> None:
        """LRs from the current config and step: train.lr and the schedule's factor at the resumed step
        (not the LR the optimizer held when saved, which for a finished run is 0)."""
        lr = self.cfg.train.lr
        for sched in self.schedulers.values():
            sched.base_lrs = [lr] * len(sched.base_lrs)
            for group, factor in zip(sched.optimizer.param_groups, sched.lr_lambdas):
                group["initial_lr"], group["lr"] = lr, lr * factor(sched.last_epoch)
            sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def load_weights(self, name: str, sd: dict[str, torch.Tensor], source: Path) -> None:
        """Load into model `name`; a shape or key mismatch becomes one message naming the layers."""
        net, target = self.unwrap(name), self.unwrap(name).state_dict()
        missing, unexpected = sorted(set(target) - set(sd)), sorted(set(sd) - set(target))
        shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in sd
                  if k in target and sd[k].shape != target[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{source}: the weights of {name!r} do not fit the network this config builds "
                f"(shapes differ: {shapes[:3]}, missing: {missing[:3]}, unexpected: {unexpected[:3]}); "
                "use the run's original model settings or a new run.dir"
            )
        net.load_state_dict(sd)

    def resume(self) -> int:
        loaded = checkpoint.load_latest(self.ckpt_root, self.accelerator.process_index)
        if loaded is None:
            return 0
        self.check_resume_config(loaded.step, loaded.path)
        for name, sd in loaded.models.items():
            if name not in self.models:
                raise ValueError(f"checkpoint {loaded.path} has model {name!r} that this run does not build "
                                 f"({sorted(self.models)}); was run.dir used for another config?")
            self.load_weights(name, sd, loaded.path)
        for name, sd in loaded.state["optimizers"].items():
            self.optimizers[name].load_state_dict(sd)
            match_state_layout(self.optimizers[name])
        for name, sd in loaded.state["schedulers"].items():
            self.schedulers[name].load_state_dict(sd)
        self.restart_schedules()
        scalers, saved = self.scalers(), loaded.state.get("scalers", {})
        if scalers and not saved:
            warnings.warn(
                f"{loaded.path} holds no fp16 loss scale (saved without fp16); starting the scale afresh"
            )
        for name, sd in saved.items():
            if name in scalers:
                scalers[name].load_state_dict(sd)
        self.load_extra_state(loaded.state.get("extra", {}))
        if loaded.rng is not None:
            checkpoint.set_rng_state(loaded.rng)
            self.load_rank_state(loaded.rng.get("rank_state", {}))
        else:
            warnings.warn(f"{loaded.path} has no RNG state for rank {self.accelerator.process_index} "
                          "(different number of processes?); continuing with fresh RNG")
        # Checkpoints written before the count was saved: the batch size they ran with is the best guess.
        self.samples_seen = loaded.state.get("samples", loaded.step * self.samples_per_step())
        self.accelerator.print(f"resumed from {loaded.path} (step {loaded.step}, {self.samples_seen} "
                               "training samples drawn)")
        return loaded.step

    # ---- logging -----------------------------------------------------------------------------
    def init_tracking(self) -> None:
        acc = self.accelerator
        saved = self.run_dir / "config.yaml"
        if acc.is_main_process:
            if getattr(self, "config_changes", None) and saved.is_file():
                shutil.copyfile(saved, self.run_dir / f"config_until_step_{self.step:08d}.yaml")  # kept
            runlog.write_atomic(saved, config_lib.to_yaml(self.cfg))  # a kill leaves the old or the new
            self.runlog = runlog.RunLog(self.run_dir, self.step)
        if self.wandb_mode == "disabled":
            return
        id_file = self.run_dir / "wandb_id.txt"
        if acc.is_main_process and not (id_file.is_file() and id_file.read_text().strip()):
            # A stable id lets a resumed run continue the same wandb run; written whole or not at all.
            runlog.write_atomic(id_file, secrets.token_hex(4))
        acc.wait_for_everyone()
        kwargs = {"dir": str(self.run_dir), "mode": self.wandb_mode, "id": id_file.read_text().strip(),
                  "resume": "allow", "name": self.cfg.log.name or self.run_dir.name}
        acc.init_trackers(
            self.cfg.log.project, config=config_lib.to_dict(self.cfg), init_kwargs={"wandb": kwargs}
        )
        if acc.is_main_process and self.step:
            run = acc.get_tracker("wandb", unwrap=True)
            replayed = runlog.replay_into_wandb(run, self.run_dir, self.step)
            if replayed:
                acc.print(f"wandb: logged again {len(replayed)} step(s) up to step {self.step} from "
                          f"{runlog.METRICS_FILE} that an interrupted segment's wandb file had lost")

    def log_scalars(self, values: dict[str, Any], step: int) -> None:
        """To RUN_DIR/metrics.jsonl (main process) and the trackers."""
        if self.accelerator.is_main_process:
            self.runlog.log(values, step)
        self.accelerator.log(values, step=step)

    def log_images(self, images: dict[str, Image.Image], step: int) -> None:
        samples = self.run_dir / "samples"
        samples.mkdir(exist_ok=True)
        for name, img in images.items():
            img.save(samples / f"{name}_{step:08d}.png")
        self.last_grids = [samples / f"{name}_{step:08d}.png" for name in images]
        if self.wandb_mode != "disabled":
            import wandb
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            run.log({f"samples/{k}": wandb.Image(v) for k, v in images.items()}, step=step)

    def validation_items(self, per_batch: int = 1) -> list[int]:
        """Indices of the held-out items every validation scores: the first train.eval_batches x
        `per_batch`, the same ones each time and for every method, so `sample.py evaluate --max-images`
        with that count reproduces the logged figures."""
        return list(range(min(len(self.val_set), self.cfg.train.eval_batches * per_batch)))

    def run_validation(self, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        devices_ = [self.device] if self.device.type == "cuda" else []
        # Sampling must not consume training randomness: a resumed run would diverge otherwise.
        with torch.random.fork_rng(devices=devices_):
            torch.manual_seed(self.cfg.run.seed)
            out = self.validate(step)
        images = {k: v for k, v in out.items() if isinstance(v, Image.Image)}
        metrics = {f"val/{k}": v for k, v in out.items() if not isinstance(v, Image.Image)}
        if images:
            self.log_images(images, step)
        if metrics:
            self.log_scalars(metrics, step)
        self.last_validation = (step, {k: v for k, v in out.items() if isinstance(v, (int, float))})

    def log_losses(self) -> None:
        """train/<term>: the mean over the steps since the last log and over every process."""
        logged = self.monitor.pop_means(lambda t: self.accelerator.reduce(t, reduction="sum"))
        logged.update(self.pop_log_extras())
        if self.cfg.train.nonfinite == "skip":
            logged["skipped_updates"] = self.skipped_updates
        if self.scalers():
            logged["fp16_overflow_steps"] = int(
                self.amp_skipped
            )  # the scaler's own back-offs, not bad updates
        logged.update({f"lr/{k}": lr for k, lr in self.step_lrs.items()})
        self.log_scalars({f"train/{k}": v for k, v in logged.items()}, self.step)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if not k.startswith("lr/")})

    # ---- the loop ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Wrap models (DDP, autocast) and optimizers; an optimizer may span several models."""
        def wrap(objects: dict) -> dict:
            prepared = self.accelerator.prepare(*objects.values())
            return dict(zip(objects, prepared if isinstance(prepared, tuple) else (prepared,)))
        t = self.cfg.train
        for net in self.models.values():
            if self.device.type == "cuda":
                use_torch_kernels(net)  # model.norm=sync_batch: torch's fused SyncBatchNorm on GPUs
            if t.channels_last:
                net.to(memory_format=torch.channels_last)
            if t.compile:
                net.compile()  # in place: state_dict keys (checkpoints, exports) stay unchanged
        template = self.accelerator.scaler
        self.models, self.optimizers = wrap(self.models), wrap(self.optimizers)
        if template is not None:
            for opt in self.optimizers.values():
                opt.scaler = copy.deepcopy(template)  # one loss scale per optimizer (see backward)
        for opt in self.optimizers.values():
            # Under fp16 the scaler already skips non-finite updates, and must see them to back off.
            if t.nonfinite == "skip" and getattr(opt, "scaler", None) is None:
                guard_optimizer(opt, self._count_skip)

    def _count_skip(self) -> None:
        self.skipped_updates += 1

    SKIP_WINDOW = 10  # steps; skip mode stops when more than half of the last ones were skipped

    def check_skips(self, skipped: bool) -> None:
        """Skip mode tolerates a rare bad batch, not a diverged run: when most recent steps were
        skipped, stop (the weights are still those of the last good update) instead of exporting a
        model that learned nothing since."""
        if self.cfg.train.nonfinite != "skip":
            return
        self.recent_skips = (getattr(self, "recent_skips", []) + [skipped])[-self.SKIP_WINDOW:]
        if len(self.recent_skips) == self.SKIP_WINDOW and sum(self.recent_skips) > self.SKIP_WINDOW // 2:
            last = checkpoint.checkpoint_dirs(self.ckpt_root)
            raise FloatingPointError(
                f"train.nonfinite=skip: {sum(self.recent_skips)} of the last {self.SKIP_WINDOW} steps had "
                f"non-finite gradients (up to step {self.step + 1}); the run has diverged, so it stops here "
                f"without saving. Last good checkpoint: {last[0] if last else 'none'}. Lower train.lr (now "
                f"{self.cfg.train.lr:g}) "
                "or set train.max_grad_norm"
            )

    def snapshot_buffers(self) -> list[torch.Tensor] | None:
        """Copies of every model buffer (norm running statistics) in skip mode, else None."""
        if self.cfg.train.nonfinite != "skip":
            return None
        return [b.detach().clone() for name in self.models for b in self.unwrap(name).buffers()]

    def restore_buffers(self, saved: list[torch.Tensor] | None) -> None:
        if saved is None:
            return
        with torch.no_grad():
            for b, old in zip((b for name in self.models for b in self.unwrap(name).buffers()), saved):
                b.copy_(old)

    def lock_run_dir(self) -> None:
        """One writer per run directory (trainers/runlock.py): the main process takes the lock and every
        process learns the outcome, so all stop together when another live run holds it."""
        acc = self.accelerator
        self.run_lock = RunLock(self.run_dir)
        refused = ""
        if acc.is_main_process:
            try:
                self.run_lock.acquire()
            except RunDirLocked as err:
                refused = str(err)
        if acc.num_processes > 1:
            flag = torch.tensor([float(bool(refused))], device=self.device)
            if acc.reduce(flag, reduction="max").item() and not refused:
                refused = f"run.dir {self.run_dir} is in use by another run (see the main process's message)"
        if refused:
            raise RunDirLocked(refused)
        held = self.run_lock.took_over
        if held:
            acc.print(f"run.dir lock: taking over from PID {held.get('pid')} on {held.get('host')} "
                      f"(started {held.get('started')}), which ended without releasing it")

    def release_run_dir(self) -> None:
        if self.run_lock is not None:
            self.run_lock.release()

    def setup(self) -> None:
        """Data, networks, devices, resume, tracking: everything before the first step."""
        self.lock_run_dir()
        try:
            self._setup()
        except BaseException:
            self.release_run_dir()
            raise

    def _setup(self) -> None:
        cfg, acc = self.cfg.train, self.accelerator
        acc.print(devices.describe(self.cfg, acc, self.method, self.precision_note))
        self.build_data()
        acc.print(data_report({"train": self.train_set, "val": self.val_set}))  # found + skipped, by reason
        self.build()
        self.prepare()
        self.on_device()
        self.step = self.start_step = self.resume()
        self.on_device()  # a resume loads method state (EMA, pools) on the CPU
        self.init_tracking()
        self.loader = iter(self.train_loader(self.train_set, self.samples_seen))
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.method,
                        disable=not acc.is_local_main_process, dynamic_ncols=True)
        self.monitor = LossMonitor(self.device)
        self.deadline = (
            time.monotonic() + 60 * cfg.time_budget_minutes if cfg.time_budget_minutes else math.inf
        )
        self.end = cfg.max_steps
        self.started = time.monotonic()

    def fit(self) -> Path:
        self.setup()
        try:
            while self.step < self.end:
                self.train_one_step()
                self.after_step()
            return self.finish()
        finally:
            self.release_run_dir()

    def train_one_step(self) -> None:
        """One optimizer step of every network: train.grad_accum micro-batches, then the LR schedules."""
        cfg = self.cfg.train
        skipped_before, buffers = self.skipped_updates, self.snapshot_buffers()
        for _ in range(cfg.grad_accum):
            batch = self.to_device(next(self.loader))
            with self.accelerator.accumulate(*self.models.values()):
                losses = self.train_step(batch)
            self.monitor.add(losses, self.step + 1, 1 / cfg.grad_accum)  # on device; read at log cadence
        skipped = self.skipped_updates > skipped_before
        if skipped:  # a skipped step leaves no trace, running stats included
            self.restore_buffers(buffers)
        self.check_skips(skipped)
        faults.maybe_kill("during_step", self.step + 1)  # weights updated, schedules and counters not yet
        self.step += 1
        self.samples_seen += self.samples_per_step()
        # The LR this step ran with, logged at its step: after sched.step() it is the next step's.
        self.step_lrs = {k: s.get_last_lr()[0] for k, s in self.schedulers.items()}
        for sched in self.schedulers.values():
            sched.step()
        faults.maybe_kill("after_step", self.step)
        self.bar.update(1)
        if self.out_of_time():
            self.end = self.step  # the budget is spent: finish this step like the last one

    def after_step(self) -> None:
        """The cadences: check + log, validate, checkpoint (the last step does all three)."""
        cfg = self.cfg.train

        def due(every: int) -> bool:
            return self.step % every == 0 or self.step == self.end
        if due(cfg.log_every) or due(cfg.ckpt_every):
            self.check_finite()
        if due(cfg.log_every):
            self.log_losses()
        if due(cfg.validate_every):
            self.run_validation(self.step)
        if due(cfg.ckpt_every):
            self.save_checkpoint(self.step)

    def finish(self) -> Path:
        """Export, close the trackers, say what ended the run; returns the export folder."""
        acc = self.accelerator
        self.bar.close()
        if self.val_set is not None and self.step > self.start_step and (
                self.last_validation is None or self.last_validation[0] != self.step):
            self.run_validation(self.step)  # the summary and the last grid show the exported weights
        export_dir = self.run_dir / "export"
        if acc.is_main_process:
            self.write_export(export_dir)
        acc.wait_for_everyone()
        wandb_dir = self.wandb_folder()
        acc.end_training()
        self.runlog.close()
        if acc.is_main_process and wandb_dir is not None:
            runlog.wait_written(wandb_dir)  # the whole history is on disk when fit() returns
        if acc.is_main_process:
            acc.print(self.summary(export_dir, wandb_dir))
        if self.end < self.cfg.train.max_steps:
            acc.print(
                f"stopped by train.time_budget_minutes={self.cfg.train.time_budget_minutes} at step "
                f"{self.step} of {self.cfg.train.max_steps} (checkpoint and export written); run the same "
                "command again to continue from there"
            )
        return export_dir

    def wandb_folder(self) -> Optional[Path]:
        if self.wandb_mode == "disabled":
            return None
        try:
            return Path(self.accelerator.get_tracker("wandb", unwrap=True).dir).parent
        except (ValueError, AttributeError, TypeError):
            return None

    def summary(self, export_dir: Path, wandb_dir: Optional[Path]) -> str:
        """What a run leaves and how well it did, printed at its end."""
        minutes, seconds = divmod(round(time.monotonic() - self.started), 60)
        lines = [f"summary: {self.method}, steps {self.start_step}..{self.step} in {minutes}m{seconds:02d}s"]
        if self.last_validation is not None:
            step, metrics = self.last_validation
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            where = f" of {len(self.val_set)}" if self.val_set is not None else ""
            lines.append(f"  validation at step {step} (held-out items: up to train.eval_batches="
                         f"{self.cfg.train.eval_batches}{where}): {shown or 'grid only'}")
        for grid in self.last_grids:
            lines.append(f"  grid:   {grid}")
        lines.append(f"  export: {export_dir}  (python sample.py {self.run_dir} {self.sample_flags()} "
                     "--output DIR)")
        if wandb_dir is not None:
            # A resumed run has one folder per segment; syncing only the last would drop the history
            # before the resume (the shell's sorted glob syncs them oldest first).
            segments = len(runlog.wandb_logs(self.run_dir))
            target = wandb_dir if segments <= 1 else f"{wandb_dir.parent}/offline-run-*"
            sync = f"  (wandb sync {target})" if self.wandb_mode == "offline" else ""
            lines.append(f"  wandb:  {wandb_dir}{sync}")
        return "\n".join(lines)

    def out_of_time(self) -> bool:
        """Every process must stop at the same step: the first one out of time stops them all. One
        process needs no collective; several agree at log cadence only, so no step waits on a
        host-device sync for it (the budget may overrun by up to train.log_every steps)."""
        if self.deadline == math.inf:
            return False
        if self.accelerator.num_processes == 1:
            return time.monotonic() > self.deadline
        if self.step % self.cfg.train.log_every:
            return False
        flag = torch.tensor([float(time.monotonic() > self.deadline)], device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="max").item())

    def check_finite(self) -> None:
        """Stop (train.nonfinite=stop) before anything non-finite is logged as fine or checkpointed."""
        if self.cfg.train.nonfinite == "skip":
            return
        bad = self.monitor.first_bad()
        if self.accelerator.num_processes > 1:  # every process stops together, not one while the rest wait
            flag = torch.tensor([float(bad is not None)], device=self.device)
            if bool(self.accelerator.reduce(flag, reduction="max").item()) and bad is None:
                raise FloatingPointError(
                    "non-finite loss on another process; see its message. Lower train.lr, "
                    "try train.mixed_precision=fp32, or set train.nonfinite=skip"
                )
        if bad is not None:
            last = checkpoint.checkpoint_dirs(self.ckpt_root)
            raise FloatingPointError(
                f"non-finite loss {', '.join(bad[1])} at step {bad[0]}; last good checkpoint: "
                f"{last[0] if last else 'none'} (nothing after it was saved). Lower train.lr, try "
                "train.mixed_precision=fp32, or set train.nonfinite=skip to skip such updates")

    def write_export(self, export_dir: Path) -> None:
        """Export atomically: write beside, then swap, so a crash never leaves a half export."""
        tmp = export_dir.with_name(".export_tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.export(tmp)
        faults.maybe_kill("during_export", self.step)
        old = export_dir.with_name(".export_old")
        shutil.rmtree(old, ignore_errors=True)
        if export_dir.exists():
            os.replace(export_dir, old)
        os.replace(tmp, export_dir)
        shutil.rmtree(old, ignore_errors=True)
