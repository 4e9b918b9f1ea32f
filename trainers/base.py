"""The training loop every method shares, on Hugging Face Accelerate.

The base class owns the loop: setup, the steps, the cadences (log / validate / checkpoint), resume
and the final export. What happens at each cadence lives beside it: checkpoint.py (atomic
checkpoints, resume), nonfinite.py (the non-finite guard), runlog.py (metrics.jsonl, wandb, the
summary). A method subclass owns its networks and its optimizer steps: `build()` and
`train_step(batch)`.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gen import config as config_lib
from gen.config import ExperimentConfig
from gen.data import ResumableSampler, collate, data_report
from gen.data.build import build_datasets
from gen.methods import validation
from gen.models.layers import pad_to_multiple
from gen.models.sync_batchnorm import use_torch_kernels

from . import checkpoint, devices, faults, nonfinite, runlog
from .budget import LRPlan, TimeBudget, worth_replanning
from .builders import adam
from .nonfinite import LossMonitor, SkipGuard
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
        # Private: Accelerate has no public reset, and a 2nd trainer in a process may want another precision
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
        self.step = self.start_step = 0
        self.end = cfg.train.max_steps  # lowered by the time budget or its fitted LR plan
        t = cfg.train
        self.lr_plan = LRPlan(t.max_steps, t.lr_decay_start, t.warmup_steps)  # every optimizer's schedule
        self.clock = time.monotonic  # what the time budget reads (tests give it a clock of their own)
        self.budget = TimeBudget(None, 0)  # train.time_budget_minutes, from setup() on
        self.budget_warned = False
        self.started = time.monotonic()
        self.samples_seen = 0  # training samples drawn over all processes (the sampler's position)
        self.run_lock: Optional[RunLock] = None
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self.loader: Optional[Iterator[dict]] = None
        self.bar: Optional[tqdm] = None
        self.step_lrs: dict[str, float] = {}  # the LR of each optimizer at the last step taken
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.monitor = LossMonitor(self.device)
        self.skips = SkipGuard(cfg.train.nonfinite == "skip", self.ckpt_root, cfg.train.lr)
        self.amp_skipped = 0  # fp16 steps the GradScaler skipped (overflow), over every optimizer
        self.config_changes: dict[str, tuple[Any, Any]] = {}  # what a resume changed: {key: (old, new)}
        self.tracked: dict[str, tuple[Any, bool]] = {"lr_plan": (self.lr_plan, False)}
        self.last_validation: tuple[int, dict[str, float]] | None = None  # (step, metrics) for the summary
        self.tracking = runlog.Tracking(self.accelerator, self.run_dir, self.wandb_mode)

    # ---- hooks for methods -------------------------------------------------------------------
    def build_data(self) -> None:
        """The train/val datasets of the configured data.kind (gen.data.build: one builder for all)."""
        self.train_set, self.val_set = build_datasets(self.cfg.data, self.cfg.run.seed)

    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_device(self) -> None:
        """Move state the step reads besides the prepared models (EMA weights, image pools, tables) to
        `self.device`; called after `prepare()` and again after a resume loaded it on the CPU."""

    def validate(self, step: int) -> dict[str, Any]:
        """The method's scoring (gen/methods) of the export's pipeline on the validation items:
        {"grid": PIL image, metric: float}, what `sample.py evaluate` reports for them."""
        if self.val_set is None:
            return {}
        return validation(self.pipeline(), self.val_set, self.validation_items())

    def pipeline(self):
        """The export's pipeline on a copy of the current weights (gen.pipelines.export_copy)."""
        raise NotImplementedError

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
        """train.lr x the run's LR plan (trainers/budget.py), one plan for every optimizer."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_plan.factor)

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
            # An overflow step is one whose update lowered the scale: the fused Adam kernels skip such
            # steps themselves, unseen by Accelerate's step_was_skipped. get_scale() syncs (fp16 only).
            before = scaler.get_scale()
            opt.step()
            self.amp_skipped += int(scaler.get_scale() < before)
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

    # ---- checkpoints (checkpoint.py) ----------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        """Write checkpoint `step` (every process calls it); see checkpoint.save for a failed write."""
        self.tracking.sync()  # the steps a checkpoint covers are on disk before it is
        checkpoint.save(self.accelerator, self.ckpt_root, step, self.models, self.optimizers,
                        samples=self.samples_seen, extra=self.extra_state(), rank_state=self.rank_state(),
                        keep=self.cfg.train.keep_checkpoints)

    def scalers(self) -> dict[str, Any]:
        """Each optimizer's fp16 GradScaler (empty without fp16)."""
        return checkpoint.scalers(self.optimizers)

    def resume(self) -> int:
        """Continue from the newest whole checkpoint in run.dir, if any: weights, optimizers, loss
        scales, RNG, tracked state, the sampler's position, and the LR schedules rebuilt at its step
        from the current config. Returns that step (0 without a checkpoint)."""
        acc = self.accelerator
        loaded = checkpoint.load_latest(self.ckpt_root, acc.process_index)
        if loaded is None:
            return 0
        self.config_changes = checkpoint.check_resume_config(self.cfg, self.run_dir, loaded, acc.print)
        nets = {name: self.unwrap(name) for name in self.models}
        checkpoint.restore(loaded, nets, self.optimizers, acc.process_index)
        self.load_extra_state(loaded.state.get("extra", {}))  # the LR plan first: the schedules read it
        self.resume_plan(loaded.step)
        self.schedulers = checkpoint.schedules_at(self.schedulers, self.cfg.train.lr, loaded.step)
        self.load_rank_state(loaded.rng.get("rank_state", {}) if loaded.rng is not None else {})
        # Checkpoints written before the count was saved: the batch size they ran with is the best guess.
        self.samples_seen = loaded.state.get("samples", loaded.step * self.samples_per_step())
        acc.print(f"resumed from {loaded.path} (step {loaded.step}, {self.samples_seen} training samples "
                  "drawn)")
        return loaded.step

    def resume_plan(self, step: int) -> None:
        """A plan never re-planned is the current config's (a changed train.max_steps applies); one
        fitted to a time budget keeps its knots, and without a fitting budget now (none, or
        budget_schedule=cut) it runs on from its current LR to 0 at max_steps."""
        t = self.cfg.train
        if not self.lr_plan.replanned:
            self.lr_plan.knots = [(0, t.max_steps)]
            return
        fitting = t.time_budget_minutes and t.budget_schedule == "fit"
        if not fitting and step < self.lr_plan.horizon != t.max_steps and step < t.max_steps:
            self.lr_plan.replan(step, t.max_steps)
            why = "train.budget_schedule=cut" if t.time_budget_minutes else "no train.time_budget_minutes"
            self.accelerator.print(f"{why} now: the LR decays from here to 0 at "
                                   f"train.max_steps={t.max_steps}")

    def plan_complete(self) -> bool:
        """A schedule fitted to a time budget reached its end: LR 0, nothing left to train."""
        return self.lr_plan.replanned and self.step >= self.lr_plan.horizon

    def follow_budget(self) -> None:
        """After a step: stop when the budget is spent; with budget_schedule=fit, re-plan the LR
        schedule to end at the step the rest of the budget reaches (several processes agree on the
        smallest estimate, at log cadence)."""
        budget, t = self.budget, self.cfg.train
        if not budget.active:
            return
        budget.observe(self.step)
        if self.out_of_time():
            self.end = self.step  # the budget is spent: finish this step like the last one
            return
        many = self.accelerator.num_processes > 1
        if many and self.step % t.log_every:
            return
        estimate = budget.last_step(self.step)
        if many:
            # the smallest estimate; one not made yet (None, as -1) makes none for all
            reduced = -int(devices.largest(self.accelerator, -(estimate if estimate is not None else -1)))
            estimate = None if estimate is None or reduced < 0 else reduced
        if estimate is None:
            return
        estimate = max(self.step + 1, min(t.max_steps, estimate))
        if t.budget_schedule == "cut":
            if estimate < t.max_steps and not self.budget_warned:
                self.budget_warned = True
                self.accelerator.print(
                    f"train.time_budget_minutes={t.time_budget_minutes} will stop this run near step "
                    f"{estimate} of train.max_steps={t.max_steps}, so its LR decay (from step "
                    f"{self.lr_plan.decay_from()}) will not run; train.budget_schedule=fit fits the "
                    "schedule to the budget")
            return
        if not worth_replanning(self.lr_plan.horizon, estimate):
            return
        first = not self.lr_plan.replanned
        self.lr_plan.replan(self.step, estimate)
        self.end = self.lr_plan.horizon
        self.bar.total = self.end
        self.log_scalars({"train/planned_steps": self.end}, self.step)
        if first or not self.budget_warned:
            self.budget_warned = True
            rate, decay = budget.seconds_per_step(self.step), self.lr_plan.decay_from()
            shape = f"decaying from step {decay}" if decay < self.end else "train.lr_decay_start=1: no decay"
            self.accelerator.print(
                f"train.time_budget_minutes={t.time_budget_minutes}: {rate:.3g} s/step, so the LR schedule "
                f"is fitted to {self.end} steps (of train.max_steps={t.max_steps}), {shape}; re-estimated "
                "as the run goes (train.budget_schedule=cut keeps max_steps' schedule)")
            if t.warmup_steps >= self.end:
                warnings.warn(f"train.warmup_steps={t.warmup_steps} is longer than the {self.end} steps "
                              "the time budget allows: the LR never reaches train.lr")

    # ---- logging (runlog.py) -----------------------------------------------------------------
    def log_scalars(self, values: dict[str, Any], step: int) -> None:
        """To RUN_DIR/metrics.jsonl (main process) and the trackers."""
        self.tracking.scalars(values, step)

    def log_images(self, images: dict[str, Image.Image], step: int) -> None:
        """To RUN_DIR/samples/NAME_STEP.png and wandb."""
        self.tracking.images(images, step)

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
        means = self.monitor.pop_means(lambda t: self.accelerator.reduce(t, reduction="sum"))
        means.update(self.pop_log_extras())
        logged = self.tracking.losses(means, self.step, self.step_lrs,
                                      skipped=self.skipped_updates if self.skips.enabled else None,
                                      overflows=self.amp_skipped if self.scalers() else None)
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
        # Under fp16 the scaler already skips non-finite updates, and must see them to back off.
        self.skips.watch([o for o in self.optimizers.values() if getattr(o, "scaler", None) is None],
                         [self.unwrap(name) for name in self.models])

    @property
    def skipped_updates(self) -> int:
        """Optimizer updates skipped for non-finite gradients so far (train.nonfinite=skip)."""
        return self.skips.skipped

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
            if devices.largest(acc, bool(refused)) and not refused:
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
        self.tracking.start(self.cfg, self.step, bool(self.config_changes))
        self.loader = iter(self.train_loader(self.train_set, self.samples_seen))
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.method,
                        disable=not acc.is_local_main_process, dynamic_ncols=True)
        self.budget = TimeBudget(cfg.time_budget_minutes, self.step, self.clock)
        self.end = min(cfg.max_steps, self.lr_plan.horizon)
        self.bar.total = self.end
        if self.plan_complete():
            acc.print(f"this run's LR schedule, fitted to a time budget, ended at step {self.step}: it is "
                      "complete (to train on, start a new run.dir with model.init_from=" f"{self.run_dir})")
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
        self.skips.begin()
        for _ in range(cfg.grad_accum):
            batch = self.to_device(next(self.loader))
            with self.accelerator.accumulate(*self.models.values()):
                losses = self.train_step(batch)
            self.monitor.add(losses, self.step + 1, 1 / cfg.grad_accum)  # on device; read at log cadence
        self.skips.end(self.step + 1)  # a skipped step leaves no trace; a diverged run stops
        faults.maybe_kill("during_step", self.step + 1)  # weights updated, schedules and counters not yet
        self.step += 1
        self.samples_seen += self.samples_per_step()
        # The LR this step ran with, logged at its step: after sched.step() it is the next step's.
        self.step_lrs = {k: s.get_last_lr()[0] for k, s in self.schedulers.items()}
        for sched in self.schedulers.values():
            sched.step()
        faults.maybe_kill("after_step", self.step)
        self.bar.update(1)
        self.follow_budget()

    def after_step(self) -> None:
        """The cadences: check + log, validate, checkpoint (the last step does all three)."""
        cfg = self.cfg.train

        def due(every: int) -> bool:
            return self.step % every == 0 or self.step == self.end
        if (due(cfg.log_every) or due(cfg.ckpt_every)) and cfg.nonfinite != "skip":
            nonfinite.check_finite(self.monitor, self.accelerator, self.ckpt_root)
        if due(cfg.log_every):
            self.log_losses()
        if due(cfg.validate_every):
            start = time.monotonic()
            self.run_validation(self.step)
            self.budget.timed("validation", time.monotonic() - start)
        if due(cfg.ckpt_every):
            start = time.monotonic()
            self.save_checkpoint(self.step)
            self.budget.timed("checkpoint", time.monotonic() - start)

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
        wandb_dir = self.tracking.close()  # the whole history is on disk when fit() returns
        if acc.is_main_process:
            acc.print(self.summary(export_dir, wandb_dir))
        t = self.cfg.train
        if self.plan_complete():
            acc.print(f"the LR schedule was fitted to train.time_budget_minutes={t.time_budget_minutes}: "
                      f"decay from step {self.lr_plan.decay_from()} to 0 at step {self.step} (of "
                      f"train.max_steps={t.max_steps}); the run is complete")
        elif self.end < t.max_steps:
            lr = self.lr_plan.factor(self.step)
            acc.print(
                f"stopped by train.time_budget_minutes={t.time_budget_minutes} at step "
                f"{self.step} of {min(t.max_steps, self.lr_plan.horizon)} with the LR at {lr:.0%} of "
                "train.lr (checkpoint and export written); run the same command again to continue from there"
            )
        return export_dir

    def summary(self, export_dir: Path, wandb_dir: Optional[Path]) -> str:
        """What a run leaves and how well it did, printed at its end."""
        where = f" of {len(self.val_set)}" if self.val_set is not None else ""
        return self.tracking.summary(
            f"{self.method}, steps {self.start_step}..{self.step}", time.monotonic() - self.started,
            self.last_validation, f"up to train.eval_batches={self.cfg.train.eval_batches}{where}",
            export_dir, self.sample_flags(), wandb_dir)

    def out_of_time(self) -> bool:
        """Every process must stop at the same step: the first one out of time stops them all. One
        process needs no collective; several agree at log cadence only, so no step waits on a
        host-device sync for it (the budget may overrun by up to train.log_every steps)."""
        if not self.budget.active:
            return False
        if self.accelerator.num_processes == 1:
            return self.budget.spent()
        if self.step % self.cfg.train.log_every:
            return False
        return bool(devices.largest(self.accelerator, self.budget.spent()))

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
