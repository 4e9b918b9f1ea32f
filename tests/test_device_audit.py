"""Device audit: GPU faults caught on a CPU-only machine.

Every method (and the options that change its step: any-size pix2pix, the unpool decoder, synchronized
batch norm, the ResNet generator, the GAN colorizer, conditional DDPM, FCN) trains two steps with the
accelerator's device set to PyTorch's `meta` device: fresh, and again after resuming from a real CPU
checkpoint. A meta tensor refuses to meet a CPU tensor in an op and refuses to be read on the host, so
this catches:
- state created or reloaded on the CPU beside weights on the device (EMA, image pools, tables);
- host reads in a step (`.item()`, `bool(tensor)`: a blocking sync per step on a GPU);
and a dispatch recorder around the second step catches
- host-to-device copies in a step (constants rebuilt from the host on every call);
- aten kernels with no deterministic CUDA implementation (train.deterministic=true would raise).
What it cannot catch: numerics of CUDA kernels, fused-Adam / fp16 / NCCL paths (the audit uses
foreach Adam and fp32), and anything outside the training step (validation, export).
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from accelerate import Accelerator
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gen import config
from trainers import TRAINERS
from conftest import tiny_overrides, write_aligned
from test_colorization import colorization_overrides, write_banded
from test_cut import cut_overrides
from test_cyclegan import cyclegan_overrides, write_unpaired
from test_ddpm import ddpm_overrides, write_conditional, write_toy
from test_segmentation import overrides as segmentation_overrides, write_colour_classes

# torch.use_deterministic_algorithms raises for these aten kernels on CUDA (its docstring's list, as
# the kernels a training step of gen could reach).
NONDETERMINISTIC_ON_CUDA = {
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "max_unpool2d", "max_unpool3d", "nll_loss_forward", "nll_loss2d_forward",
    "_adaptive_avg_pool2d_backward", "adaptive_max_pool2d_backward", "avg_pool3d_backward",
    "upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward", "grid_sampler_2d_backward", "histc", "median", "put_",
    "fractional_max_pool2d_backward", "embedding_bag", "_embedding_bag_backward",
}
COPIES = {"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize"}


class StepRecorder(TorchDispatchMode):
    """Records every aten kernel a step runs, and every copy from the CPU onto the device."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()
        self.host_copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops.add(name)
        if name in COPIES:
            ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if any(t.device.type == "cpu" for t in ins) and any(t.device.type == "meta" for t in outs):
                self.host_copies.append(f"{name} {[tuple(t.shape) for t in ins]}")
        return out


def _pix2pix(tmp, **extra):
    write_aligned(tmp / "data" / "train", 4, seed=0)
    return tiny_overrides(tmp / "run", tmp / "data", **{"data.val": "null", **extra})


def _cyclegan(tmp, **extra):
    return cyclegan_overrides(tmp / "run", write_unpaired(tmp / "data", n=4), **{"data.val": "null", **extra})


def _colorization(tmp, **extra):
    write_banded(tmp / "data" / "train", 4)
    return colorization_overrides(
        tmp / "run", tmp / "data", **{"data.val": "null", "colorization.prior": "imagenet", **extra}
    )


def _ddpm(tmp, **extra):
    return ddpm_overrides(
        tmp / "run", write_toy(tmp / "data" / "train", n=16).parent, **{"train.batch_size": 4, **extra}
    )


def _ddpm_conditional(tmp, **extra):
    root = write_conditional(tmp / "data", n=8)
    return ddpm_overrides(tmp / "run", root, **{**extra, "data.kind": "paired", "data.layout": "folders",
                                                "train.batch_size": 4})


def _segmentation(tmp, **extra):
    write_colour_classes(tmp / "data" / "train", 4)
    return segmentation_overrides(tmp, **{"data.val": "null", **extra})


CASES = {
    "pix2pix": lambda t: _pix2pix(t),
    "pix2pix-any-size": lambda t: _pix2pix(t, **{"data.preprocess": "none", "train.batch_size": 1}),
    "pix2pix-unpool": lambda t: _pix2pix(t, **{"model.upsample": "unpool"}),
    "pix2pix-augment-ema": lambda t: _pix2pix(t, **{"train.diffaugment": "color,translation,cutout",
                                                     "train.ema_decay": 0.999}),
    "cyclegan-ema": lambda t: _cyclegan(t, **{"train.ema_decay": 0.999}),
    # CUT with DiffAugment and the EMA; FastCUT's flips on the anti-aliased ResNet (blur layers)
    "cut-augment-ema": lambda t: cut_overrides(t / "run", write_unpaired(t / "data", n=4), **{
        "data.val": "null", "train.diffaugment": "color,translation,cutout", "train.ema_decay": 0.999}),
    "fastcut-resnet-antialias": lambda t: cut_overrides(t / "run", write_unpaired(t / "data", n=4), **{
        "data.val": "null", "cut.mode": "fastcut", "model.generator": "resnet_6blocks_antialias",
        "model.num_downs": "null"}),
    # a time budget follows the clock outside the step: nothing of it may reach the device in a step
    "pix2pix-budget-fit": lambda t: _pix2pix(t, **{"train.time_budget_minutes": 60}),
    # One process: the batch-norm path of the layer; on a GPU (test_gpu.py) torch's SyncBatchNorm.
    "pix2pix-sync_batch": lambda t: _pix2pix(t, **{"model.norm": "sync_batch", "model.d_norm": "sync_batch"}),
    "cyclegan-resnet": lambda t: _cyclegan(
        t, **{"model.generator": "resnet_6blocks", "model.num_downs": "null"}
    ),
    "colorization": lambda t: _colorization(t),
    # the shared GAN step with colorization's own mode and weight
    "colorization-gan": lambda t: _colorization(t, **{"colorization.loss": "gan",
                                                    "colorization.gan_mode": "lsgan",
                                                    "colorization.lambda_gan": 0.5}),
    "ddpm": lambda t: _ddpm(t),
    # v-prediction with zero terminal SNR and the min-SNR-gamma weighting
    "ddpm-snr": lambda t: _ddpm(t, **{"ddpm.snr_gamma": 5.0, "ddpm.prediction_type": "v_prediction",
                                      "ddpm.zero_terminal_snr": True}),
    "ddpm-conditional": _ddpm_conditional,
    # EDM (Karras et al. 2022): log-normal sigmas, preconditioned U-Net, heun / euler samplers
    "ddpm-edm": lambda t: _ddpm(t, **{"ddpm.formulation": "edm", "ddpm.sample_scheduler": "heun"}),
    "ddpm-edm-conditional": lambda t: _ddpm_conditional(t, **{"ddpm.formulation": "edm",
                                                              "ddpm.sample_scheduler": "euler"}),
    "segmentation": lambda t: _segmentation(t),
    "segmentation-fcn8s-bilinear": lambda t: _segmentation(
        t, **{"model.generator": "fcn8s", "model.num_downs": "null", "model.upsample": "bilinear"}
    ),
    "rotation": lambda t: _segmentation(t, **{"method": "rotation"}),
}
AUDIT = {"train.max_steps": 2, "train.ckpt_every": 2, "train.log_every": 1000, "train.validate_every": 1000,
         "train.optimizer_impl": "foreach", "data.num_workers": 0,  # fused Adam has no meta kernel
         "train.deterministic": "true"}  # the kernels a deterministic run uses


@contextlib.contextmanager
def on_meta_device(monkeypatch):
    """Accelerate places everything on `meta`; parameters keep their identity when moved there."""
    monkeypatch.setattr(Accelerator, "device", property(lambda self: torch.device("meta")))
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        yield
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
        torch.use_deterministic_algorithms(False)


def audit_two_steps(cfg) -> StepRecorder:
    trainer = TRAINERS[cfg.method](cfg)
    trainer.setup()
    assert trainer.device.type == "meta"
    for net in trainer.models.values():
        assert all(p.device.type == "meta" for p in net.parameters())
    trainer.train_one_step()  # the first step may place lazily-built tables once
    recorder, step = StepRecorder(), trainer.train_step

    def recorded(batch):
        with recorder:
            return step(batch)
    trainer.train_step = recorded
    trainer.train_one_step()
    return recorder


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_and_resume_on_another_device(case, tmp_path, monkeypatch):
    args = [f"{k}={v}" for k, v in AUDIT.items()]
    cfg = config.load(None, CASES[case](tmp_path) + args)
    TRAINERS[cfg.method](cfg).fit()  # a real CPU checkpoint at step 2 to resume from
    fresh = config.load(None, CASES[case](tmp_path) + args + [f"run.dir={tmp_path / 'fresh'}"])
    with on_meta_device(monkeypatch):
        for label, c in (("fresh", fresh), ("resumed", cfg)):
            recorder = audit_two_steps(c)
            assert not recorder.host_copies, (
                f"{case} ({label}): host-to-device copies in a step: {recorder.host_copies}"
            )
            bad = sorted(recorder.ops & NONDETERMINISTIC_ON_CUDA)
            assert not bad, f"{case} ({label}): no deterministic CUDA kernel for {bad}"
            assert (
                "convolution" in recorder.ops or "convolution_backward" in recorder.ops
            )  # it did record the step
