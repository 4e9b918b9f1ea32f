"""Config -> networks and optimizers: the one place where ModelConfig meets gen.models."""
from __future__ import annotations

import torch
from torch import nn

from gen.config import ExperimentConfig
from gen.models import create_model, init_weights, list_models


def build_generator(cfg: ExperimentConfig, in_channels: int, out_channels: int, **overrides) -> nn.Module:
    """The configured generator preset; `overrides` (e.g. out_activation="none") go to the preset."""
    m = cfg.model
    generators = list_models("generator")
    if m.generator not in generators:
        raise ValueError(
            f"config key model.generator={m.generator!r} is not a generator preset; choose one of "
            f"{generators}"
        )
    kw = dict(in_channels=in_channels, out_channels=out_channels, ngf=m.ngf, norm=m.norm, dropout=m.dropout,
              **overrides)
    if m.upsample != "transposed":
        fcn = m.generator.startswith("fcn")
        if not (m.generator.startswith("unet") or (fcn and m.upsample == "bilinear")):
            raise ValueError(f"config key model.upsample={m.upsample!r} applies to U-Net generators (and "
                             f"'bilinear' to FCN heads), not {m.generator!r}")
        kw["upsample"] = m.upsample
    if m.num_downs is not None:
        if m.generator != "unet":
            raise ValueError(
                f"config key model.num_downs is only for model.generator=unet, not {m.generator!r}"
            )
        kw["num_downs"] = m.num_downs
    try:
        net = init_weights(create_model(m.generator, **kw), m.init_gain, init_kind(cfg))
    except ValueError as err:
        keys = ", ".join(f"model.{k}={getattr(m, k)!r}" for k in ("generator", "ngf", "norm", "num_downs"))
        raise ValueError(f"config keys {keys}: {err}") from None
    check_crop_fits(cfg, net.multiple)
    return net


def check_crop_fits(cfg: ExperimentConfig, multiple: int) -> None:
    """A training crop must pass through every stride-2 level of the U-Net."""
    d = cfg.data
    if d.preprocess == "none":
        return  # any size: the trainer pads to the multiple and crops back
    size = d.builtin_size if d.kind == "builtin" else d.crop_size
    key = "data.builtin_size" if d.kind == "builtin" else "data.crop_size"
    if size % multiple:
        raise ValueError(
            f"config key {key}={size} is not a multiple of {multiple}, which model.generator="
            f"{cfg.model.generator!r} needs ({multiple.bit_length() - 1} stride-2 levels); use a crop of "
            f"{max(multiple, size // multiple * multiple)} or a generator with fewer levels "
            "(unet_128 for 128, generator=unet with model.num_downs)"
        )


def label_input(d) -> dict | None:
    """What an export records when its input is a rendered class-index map (labels -> photo)."""
    if d.kind == "segmentation" and d.direction == "AtoB":
        return {"num_classes": d.num_classes, "first_label": d.first_label, "ignore_label": d.ignore_label}
    return None


def build_discriminator(cfg: ExperimentConfig, in_channels: int) -> nn.Module:
    m, d = cfg.model, cfg.data
    kw = dict(in_channels=in_channels, ndf=m.ndf, norm=m.d_norm)
    if m.discriminator == "patchgan":
        kw["n_layers"] = m.d_layers
        size = d.builtin_size if d.kind == "builtin" else d.crop_size
        # n stride-2 convs, then two 4x4 stride-1 convs that each remove a pixel: S / 2^n - 2 >= 1.
        if d.preprocess != "none" and size // 2 ** m.d_layers < 3:
            most = max(n for n in range(0, 9) if size // 2 ** n >= 3)
            raise ValueError(
                f"config key model.d_layers={m.d_layers} is too deep for {size}x{size} crops (the "
                f"PatchGAN would have no output left); use model.d_layers <= {most} at this size"
            )
    return init_weights(create_model(m.discriminator, **kw), m.init_gain, init_kind(cfg))


def init_kind(cfg: ExperimentConfig) -> str:
    """model.init_type, or the method's reference init when unset: CUT's code initialises G, D and
    its projection heads with xavier_normal (gain 0.02), pix2pix / CycleGAN's with N(0, 0.02)."""
    return cfg.model.init_type or ("xavier" if cfg.method == "cut" else "normal")


def adam(cfg: ExperimentConfig, *nets: nn.Module) -> torch.optim.Optimizer:
    """Adam over the parameters of `nets`; train.optimizer_impl picks the for-loop, foreach
    (multi-tensor) or fused kernel -- the same update, computed differently. `auto` is fused: the
    fastest in bench/run.py's pix2pix rows, and a facades pix2pix run with it (plus channels_last)
    reached the for-loop run's validation L1 (the quality guard of the performance issue)."""
    t = cfg.train
    impl = {"auto": {"fused": True}, "foreach": {"foreach": True}, "fused": {"fused": True},
            "for_loop": {"foreach": False}}
    # Frozen tensors (model.freeze, FCN's fixed bilinear upsampling) stay out of the optimizer.
    params = [p for net in nets for p in net.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2), **impl[t.optimizer_impl])
