"""Where and how a run computes: the device choice, the CUDA speed switches, and the start-up checks
that refuse combinations which cannot train correctly, before the first step rather than at it."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from gen.config import ExperimentConfig
from gen.config import load as load_config

# Sharded strategies keep parameters split across ranks: the trainers' unwrapped forwards (frozen
# discriminators, EMA, validation) and their state_dict gathering on rank 0 assume whole replicas.
UNSUPPORTED_DISTRIBUTED = {DistributedType.FSDP: "FSDP", DistributedType.DEEPSPEED: "DeepSpeed",
                           DistributedType.MEGATRON_LM: "Megatron-LM"}


def largest(acc: Accelerator, value: float) -> float:
    """The largest `value` over the processes (every process calls it). A gather, not
    Accelerate's reduce: its "max" is recent (huggingface/accelerate#4027) and older versions sum."""
    return float(acc.gather(torch.tensor([float(value)], device=acc.device)).max())


def gpu_usable() -> bool:
    return torch.cuda.is_available()


def why_no_gpu() -> str:
    """One line: why this process sees no CUDA device."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no usable GPU (none "
        "installed, or a driver too old for this CUDA version: compare `nvidia-smi` with torch.version.cuda)"
    )


def use_cpu(cfg: ExperimentConfig) -> bool:
    """train.device -> whether Accelerate must run on the CPU; `cuda` without a usable GPU is an error."""
    want = cfg.train.device
    if want == "cuda" and not gpu_usable():
        raise ValueError(f"config key train.device=cuda, but {why_no_gpu()}; use train.device=auto or cpu")
    if want == "cpu":
        return True
    return not (gpu_usable() or torch.backends.mps.is_available())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX, as oneDNN uses them); without
    them PyTorch emulates bf16, many times slower than fp32. GEN_CPU_BF16=1 / 0 overrides the probe
    (a VM that hides the flags, or a test suite that must not depend on the machine)."""
    forced = os.environ.get("GEN_CPU_BF16")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"GEN_CPU_BF16={forced!r}: set it to 1 (native bf16) or 0 (not), or unset it")
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, and emulation would be the costly mistake
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(cfg: ExperimentConfig, cpu: bool) -> tuple[ExperimentConfig, str]:
    """train.mixed_precision=auto -> bf16 or fp32 for this machine; (config with the choice, why)."""
    if cfg.train.mixed_precision != "auto":
        return cfg, ""
    if not cpu and torch.cuda.is_available():
        native, where = torch.cuda.is_bf16_supported(), f"GPU {torch.cuda.get_device_name()}"
    else:
        native, where = cpu_has_native_bf16(), "this CPU (AVX-512 BF16 / AMX)"
        if os.environ.get("GEN_CPU_BF16") is not None:
            where = f"this CPU (as GEN_CPU_BF16={os.environ['GEN_CPU_BF16']} says)"
    choice = "bf16" if native else "fp32"
    why = f"auto: {where} {'runs' if native else 'does not run'} bf16 natively"
    train = dataclasses.replace(cfg.train, mixed_precision=choice)
    return dataclasses.replace(cfg, train=train), why


# Methods whose networks run faster in channels_last on the CPU in fp32 (bench/ddpm.py: oneDNN's NHWC
# convolutions and GroupNorm, 1.05x a training step and 1.09x a sampling step of ddpm_cifar10; same
# outputs up to float rounding). Under bf16 autocast NHWC is slower there (bench/run.py --options bf16
# bf16_nchw: 0.87x vs 1.37x of fp32), and GPUs keep NCHW until measured.
CHANNELS_LAST_ON_CPU = ("ddpm",)


def resolve_channels_last(cfg: ExperimentConfig, cpu: bool, method: str) -> ExperimentConfig:
    """train.channels_last=None (auto) -> True where measured faster: the DDPM U-Net on the CPU in fp32.
    Call after resolve_precision."""
    if cfg.train.channels_last is not None:
        return cfg
    fp32 = cfg.train.mixed_precision == "fp32"
    train = dataclasses.replace(cfg.train, channels_last=cpu and fp32 and method in CHANNELS_LAST_ON_CPU)
    return dataclasses.replace(cfg, train=train)


def keep_resumed_choices(cfg: ExperimentConfig, run_dir: Path, resuming: bool, cpu: bool
                         ) -> tuple[ExperimentConfig, str]:
    """Resuming with train.mixed_precision=auto / train.channels_last unset keeps what the run's
    config.yaml recorded, so a new default or another machine's choice does not switch a run half-way
    (fp16 is not kept on a CPU, which cannot run it). (config, note for the start line)."""
    t, saved_file = cfg.train, run_dir / "config.yaml"
    unset = t.mixed_precision == "auto" or t.channels_last is None
    if not resuming or not unset or not saved_file.is_file():
        return cfg, ""
    try:
        saved = load_config(saved_file).train
    except (ValueError, FileNotFoundError):
        return cfg, ""  # the resume check reports an unreadable config
    changes, note = {}, ""
    runnable = not (cpu and saved.mixed_precision == "fp16")
    if t.mixed_precision == "auto" and saved.mixed_precision != "auto" and runnable:
        changes["mixed_precision"] = saved.mixed_precision
        note = f"auto: kept from the run being resumed ({saved_file})"
    if t.channels_last is None and saved.channels_last is not None:
        changes["channels_last"] = saved.channels_last
    return dataclasses.replace(cfg, train=dataclasses.replace(t, **changes)), note


def check_precision(cfg: ExperimentConfig, cpu: bool) -> None:
    if cfg.train.mixed_precision == "fp16" and cpu:
        # Accelerate would silently train in fp32 here (no GradScaler, no autocast on the CPU).
        raise ValueError(
            "config key train.mixed_precision=fp16 needs a GPU (loss scaling); on the CPU use bf16 "
            "(native on CPUs with AVX-512 BF16 or AMX) or fp32"
        )


def configure_backends(cfg: ExperimentConfig, cuda: bool) -> None:
    """Deterministic kernels, cuDNN autotuning and TF32, process-wide, before the first CUDA op."""
    t = cfg.train
    if t.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Process-wide: set either way, so a later trainer in the same process does not inherit it.
    torch.use_deterministic_algorithms(t.deterministic)
    if not cuda:
        return
    # Autotuning picks kernels by timing, so it may pick different (non-bit-identical) ones per run.
    torch.backends.cudnn.benchmark = (not t.deterministic) if t.cudnn_benchmark is None else t.cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = t.tf32
    torch.backends.cuda.matmul.allow_tf32 = t.tf32


def check_distributed(acc: Accelerator) -> None:
    name = UNSUPPORTED_DISTRIBUTED.get(acc.distributed_type)
    if name is not None:
        raise ValueError(
            f"{name} is not supported: gen's trainers keep a whole replica of every network on each "
            "process (data parallelism, `accelerate launch --multi_gpu`); the networks fit on one GPU"
        )


def local_processes(default: int) -> int:
    """Processes on this machine (torchrun / accelerate set LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", default))


def data_workers(cfg: ExperimentConfig, device: torch.device, local_processes: int) -> int:
    """data.num_workers, or for None: none on the CPU (they would take its cores from the step), up to 4
    per process on a GPU (decoding and augmentation then overlap the step)."""
    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 1) // max(1, local_processes) - 1))


def describe(cfg: ExperimentConfig, acc: Accelerator, method: str, precision_note: str = "") -> str:
    """The start-up line: device, precision, processes and the effective batch."""
    dev = acc.device
    where = str(dev)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        where = f"{dev} ({props.name}, {props.total_memory / 2 ** 30:.0f} GiB)"
    t = cfg.train
    batch = t.batch_size * t.grad_accum * acc.num_processes
    note = f" ({precision_note})" if precision_note else ""
    note += ", channels_last" if t.channels_last else ""
    line = (f"{method}: device {where}, precision {t.mixed_precision}{note}, "
            f"{acc.num_processes} process(es), "
            f"{batch} images per step ({t.batch_size} x {t.grad_accum} accumulation x {acc.num_processes})")
    if dev.type == "cpu" and t.device == "auto" and torch.version.cuda is not None:
        line += f"\n  note: training on the CPU: {why_no_gpu()}; train.device=cuda makes this an error"
    return line + one_process_launch_note(acc.num_processes)


# Environment variables through which a launcher tells a process its world size (torchrun; MPI).
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def one_process_launch_note(num_processes: int) -> str:
    """A warning line when `accelerate launch` asked for several processes or machines started its
    plain launcher (with --cpu, or without --multi_gpu on a machine with fewer than 2 GPUs): that
    launcher sets MASTER_ADDR but no world size and starts ONE process per machine (only an MPI
    hostfile spreads CPU processes), so this process trains alone. "" otherwise."""
    env = os.environ
    plain_launcher = "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env  # set by no other launcher
    if num_processes > 1 or not plain_launcher or any(v in env for v in WORLD_SIZE_VARS):
        return ""
    return ("\n  WARNING: `accelerate launch` started ONE process here although --num_processes or "
            "--num_machines asked for more (its --cpu / single-device launcher does that): this process "
            "trains alone. For several processes use `accelerate launch --multi_gpu --num_processes N` "
            "(on a machine without GPUs it runs N CPU processes over gloo) or `torchrun --nproc_per_node "
            "N`; see docs/multi_gpu.md")
