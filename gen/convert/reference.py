"""Reference pix2pix / CycleGAN checkpoints (junyanz/pytorch-CycleGAN-and-pix2pix: `latest_net_G.pth`,
`latest_net_D.pth`, `*_net_G_A.pth`, ...) mapped onto gen's presets, and back.

The reference saves `net.state_dict()` of four networks; each maps key for key onto gen's layers
(no tensor is changed):
- UnetGenerator: nested UnetSkipConnectionBlocks, `model.model.1.model.3.model. ...`; the nesting
  depth is gen's level, module indices inside a block map onto `downs.i` / `ups.i` (pix2pix_unet.py).
- ResnetGenerator: `model.N` -> `body.N`, `model.N.conv_block.M` -> `body.N.body.M`; CUT's
  anti-aliased one (taesungp/contrastive-unpaired-translation, `latest_net_G.pth`) the same way onto
  the `*_antialias` presets, its blur filters (`model.N.filt`, constants) checked and dropped.
- NLayerDiscriminator (PatchGAN): `model.N` -> `body.N`; PixelDiscriminator: `net.N` -> `body.N`.
Width, depth, norm and channels are read from the tensor shapes. Layers the reference built
without a bias (norm 'none', PixelGAN's last conv) get a zero bias in gen: the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..models import create_model
from ..models.antialias import binomial_filter
from ..models.resnet_generator import ResnetGenerator

STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Converted:
    """A gen network with the reference weights loaded, and what was inferred on the way."""

    net: nn.Module
    kind: str  # "generator" | "discriminator"
    preset: str  # e.g. "unet_256", "resnet_9blocks", "patchgan"
    options: dict  # the preset's keyword arguments (ngf, norm, in/out channels, ...)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.kind} {self.preset}({opts})" + "".join(f"\n  - {n}" for n in self.notes)


# -- key layouts: gen key -> reference key ---------------------------------------------------------


def _unet_prefix(level: int) -> str:
    # outermost block: model.model.<i>; its submodule is index 1, deeper blocks' submodule is index 3
    return "model.model." + ("1.model." if level >= 1 else "") + "3.model." * max(0, level - 1)


# module index inside a reference UnetSkipConnectionBlock, per gen (down|up, body index)
_UNET_INDEX = {
    "outermost": {("downs", 0): 0, ("ups", 1): 3},  # [downconv, sub, uprelu, upconv, tanh]
    "innermost": {("downs", 1): 1, ("ups", 1): 3, ("ups", 2): 4},  # [relu, conv, uprelu, upconv, upnorm]
    "middle": {("downs", 1): 1, ("downs", 2): 2, ("ups", 1): 5, ("ups", 2): 6},  # + sub at 3 (+ dropout)
}


def reference_key(layout: str, gen_key: str, levels: int = 0) -> str:
    """The reference checkpoint's name for gen parameter/buffer `gen_key` in `layout`
    (unet | resnet | patchgan | pixelgan); `levels` is the U-Net's depth."""
    if layout == "unet":
        side, level, idx, rest = re.fullmatch(r"(downs|ups)\.(\d+)\.body\.(\d+)\.(.+)", gen_key).groups()
        level = int(level)
        where = "outermost" if level == 0 else "innermost" if level == levels - 1 else "middle"
        return f"{_unet_prefix(level)}{_UNET_INDEX[where][(side, int(idx))]}.{rest}"
    if layout == "resnet":
        return "model." + gen_key[len("body.") :].replace(".body.", ".conv_block.", 1)
    if layout == "patchgan":
        return "model." + gen_key[len("body.") :]
    if layout == "pixelgan":
        return "net." + gen_key[len("body.") :]
    raise ValueError(f"unknown reference layout {layout!r}")


def reference_has_bias(layout: str, conv: str, norm: str, net: nn.Module) -> bool:
    """Whether the reference builds conv layer `conv` (gen module name) with a bias: its convs take
    `bias=use_bias`, true only with instance norm, except the layers it always biases."""
    if norm == "instance":
        return True
    convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    always = {"unet": {"ups.0.body.1"},  # the outermost up-conv, before tanh
              "resnet": {convs[-1]},  # the output conv
              "patchgan": {convs[0], convs[-1]},  # the first conv (no norm after it) and the 1-channel map
              "pixelgan": {convs[0]}}[layout]
    return conv in always


def detect_layout(state: dict[str, torch.Tensor]) -> Optional[str]:
    keys = set(state)
    if "model.model.0.weight" in keys and any(k.startswith("model.model.1.model.") for k in keys):
        return "unet"
    if "model.1.weight" in keys and any(".conv_block." in k for k in keys):
        return "resnet"
    if "model.0.weight" in keys and all(k.startswith("model.") and ".model." not in k for k in keys):
        return "patchgan"
    if "net.0.weight" in keys and all(k.startswith("net.") for k in keys):
        return "pixelgan"
    return None


# -- inference of the preset from shapes -----------------------------------------------------------


def _norm(state: dict[str, torch.Tensor], inner_conv_weight: str) -> str:
    # batch: affine norms with running statistics; instance (affine False): biased convs, no norm
    # tensors; 'none': neither (the reference then builds its convs without bias).
    if any(k.endswith("running_mean") for k in state):
        return "batch"
    return "instance" if inner_conv_weight.replace("weight", "bias") in state else "none"


def _infer(layout: str, state: dict[str, torch.Tensor], dropout: Optional[float]):
    """-> (preset name, create_model kwargs, notes)."""
    notes = []
    if layout == "unet":
        depth = max(k.count(".model.") for k in state if k.startswith("model.model."))
        levels = depth  # "model.model.<i>" is level 0 and holds one ".model."
        first, last = state["model.model.0.weight"], state["model.model.3.weight"]
        if dropout is None:
            dropout = 0.5
            notes.append(
                "dropout 0.5 assumed (the reference pix2pix default; weights cannot show it): "
                "pass dropout=0 for a generator trained with --no_dropout"
            )
        kw = dict(
            num_downs=levels,
            in_channels=first.shape[1],
            out_channels=last.shape[1],
            ngf=first.shape[0],
            norm=_norm(state, _unet_prefix(1) + "1.weight"),
            dropout=dropout,
        )
        preset = {8: "unet_256", 7: "unet_128"}.get(levels, "unet")
        if preset != "unet":
            kw.pop("num_downs")
        return preset, kw, notes
    if layout == "resnet":
        blocks = sorted({int(k.split(".")[1]) for k in state if ".conv_block." in k})
        convs = {
            int(k.split(".")[3])
            for k in state
            if ".conv_block." in k and k.endswith("weight") and state[k].ndim == 4
        }
        has_dropout = 6 in convs  # [pad, conv, norm, relu, dropout, pad, conv, norm]
        if dropout is not None and bool(dropout) != has_dropout:
            raise ValueError(
                f"dropout={dropout}: this ResNet generator was built "
                f"{'with' if has_dropout else 'without'} dropout (its block layout shows it)"
            )
        last = max(int(k.split(".")[1]) for k in state if ".conv_block." not in k)
        kw = dict(
            in_channels=state["model.1.weight"].shape[1],
            out_channels=state[f"model.{last}.weight"].shape[0],
            ngf=state["model.1.weight"].shape[0],
            norm=_norm(state, "model.1.weight"),
            dropout=0.5 if has_dropout else 0.0,
        )
        antialias = any(k.endswith(".filt") for k in state)
        suffix = "_antialias" if antialias else ""
        preset = {9: f"resnet_9blocks{suffix}", 6: f"resnet_6blocks{suffix}"}.get(len(blocks), "resnet")
        if preset == "resnet":
            kw.update(n_blocks=len(blocks), antialias=antialias)
        return preset, kw, notes
    if layout == "patchgan":
        convs = sorted(int(k.split(".")[1]) for k in state if k.endswith("weight") and state[k].ndim == 4)
        first = state["model.0.weight"]
        inner = f"model.{convs[1]}.weight" if len(convs) > 2 else "model.0.weight"
        kw = dict(
            in_channels=first.shape[1], ndf=first.shape[0], n_layers=len(convs) - 2, norm=_norm(state, inner)
        )
        return "patchgan", kw, notes
    first = state["net.0.weight"]
    return (
        "pixelgan",
        dict(in_channels=first.shape[1], ndf=first.shape[0], norm=_norm(state, "net.2.weight")),
        notes,
    )


def _build(preset: str, kw: dict) -> nn.Module:
    if preset == "resnet":
        return ResnetGenerator(**kw)
    return create_model(preset, **kw)


# -- conversion ------------------------------------------------------------------------------------


def _clean(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's `module.` prefix; drop the running statistics that PyTorch < 0.4 saved
    for (non-affine) InstanceNorm layers: a layer with statistics but no weight is one of those."""
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        notes.append("'module.' prefix (DataParallel) removed")
    stale = [
        k for k in state if k.rsplit(".", 1)[-1] in STATS and k.rsplit(".", 1)[0] + ".weight" not in state
    ]
    if stale:
        notes.append(f"dropped {len(stale)} InstanceNorm running statistics (older checkpoints carry them; "
                     "the reference's test.py normalises each image by its own statistics unless --eval)")
    return {k: v for k, v in state.items() if k not in stale}


def _check_filters(filters: dict[str, torch.Tensor], name: str) -> None:
    """The reference's Downsample / Upsample filters are fixed binomials: ValueError if one is not
    the one gen's BlurDownsample (3x3) / BlurUpsample (4x4, gain 4) computes."""
    for key, f in filters.items():
        size = f.shape[-1]
        want = binomial_filter(size) * (4 if size == 4 else 1)
        if f.ndim != 4 or size not in (3, 4) or not torch.allclose(f.float(), want.expand_as(f), atol=1e-6):
            raise ValueError(f"{name}: {key} is not the reference's 3x3 [1,2,1] or 4x4 [1,3,3,1] blur filter")


def convert_reference(
    state: dict[str, torch.Tensor], name: str = "checkpoint", dropout: Optional[float] = None
) -> Converted:
    """A reference-format state dict -> `Converted` (gen network in eval mode with those weights).

    `dropout`: U-Net generators only (the weights cannot show it; default 0.5 as the reference's
    pix2pix). ValueError naming the unexpected, missing or mis-shaped keys for anything that is not
    one of the reference's four networks.
    """
    notes: list[str] = []
    state = _clean(dict(state), notes)
    layout = detect_layout(state)
    filters = {k: v for k, v in state.items() if k.endswith(".filt")}
    if filters and layout != "resnet":
        raise ValueError(f"{name}: an anti-aliased {layout} (blur filters {sorted(filters)[:2]}), CUT's "
                         "default discriminator: gen has no such network; convert the generator alone")
    if filters:  # they show the anti-aliased layout (_infer), then go: gen's are constants
        _check_filters(filters, name)
        notes.append(f"{len(filters)} blur filters (anti-aliased resampling constants) checked and dropped")
    if layout is None:
        raise ValueError(
            f"{name}: not a reference pix2pix/CycleGAN network (UnetGenerator keys model.model.*, "
            "ResnetGenerator model.N + model.N.conv_block.*, NLayerDiscriminator model.N.*, "
            f"PixelDiscriminator net.N.*); its keys begin {sorted(state)[:6]}"
        )
    try:
        preset, kw, more = _infer(layout, state, dropout)
        net = _build(preset, kw)
        state = {k: v for k, v in state.items() if k not in filters}
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"{name}: a {layout} checkpoint whose layout gen cannot read ({err})") from None
    notes += more
    target = net.state_dict()
    levels = getattr(net, "levels", 0)
    mapping = {g: reference_key(layout, g, levels) for g in target}
    loaded, zero_bias = {}, []
    for g, r in mapping.items():
        if r in state:
            if state[r].shape != target[g].shape:
                raise ValueError(
                    f"{name}: {r} has shape {tuple(state[r].shape)} but gen's {g} in the inferred "
                    f"{preset}({kw}) has {tuple(target[g].shape)}"
                )
            loaded[g] = state[r]
        elif g.endswith(".bias") and mapping[g[:-4] + "weight"] in state and not reference_has_bias(
                layout, g[:-len(".bias")], kw["norm"], net):
            loaded[g], zero_bias = torch.zeros_like(target[g]), zero_bias + [r]
        elif g.endswith("num_batches_tracked"):
            loaded[g] = target[g]
    missing = [r for g, r in mapping.items() if g not in loaded]
    unexpected = sorted(set(state) - set(mapping.values()))
    if missing or unexpected:
        raise ValueError(
            f"{name}: does not match a reference {preset}({kw}): missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    if zero_bias:
        notes.append(
            f"{len(zero_bias)} layers built without bias by the reference get a zero bias "
            f"(same function): {zero_bias[:3]}"
        )
    net.load_state_dict({g: v.to(target[g].dtype) for g, v in loaded.items()})
    kind = "discriminator" if layout in ("patchgan", "pixelgan") else "generator"
    return Converted(net.eval(), kind, preset, kw, notes)


def to_reference(net: nn.Module) -> dict[str, torch.Tensor]:
    """gen network (pix2pix-style U-Net, ResnetGenerator, PatchGAN, PixelGAN) -> the reference's
    state dict (what its `--continue_train` / test.py would load). ValueError for networks the
    reference cannot build (other decoders, widths, activations or dropout placement, non-zero
    biases where the reference has none)."""
    from ..models.discriminators import PatchGAN, PixelGAN
    from ..models.presets import pix2pix_channels
    from ..models.pix2pix_unet import Pix2PixUNet

    if isinstance(net, Pix2PixUNet):
        c = net.config
        if c.upsample != "transposed" or net.out_stride != 1:
            raise ValueError("only the pix2pix U-Net with transposed-conv upsampling at full resolution "
                             "(output_stride 1) exists in the reference")
        levels = len(c.channels)
        dropout = tuple(range(4, levels - 1)) if c.dropout > 0 and levels > 5 else ()
        if (c.out_activation != "tanh" or tuple(c.channels) != pix2pix_channels(levels, c.channels[0])
                or tuple(c.dropout_levels) not in (dropout, ())):
            raise ValueError("the reference UnetGenerator always ends in tanh, widens ngf, 2ngf, 4ngf, "
                             "8ngf... and puts dropout on the 8ngf levels above the innermost; this U-Net "
                             "differs "
                             f"(out_activation={c.out_activation!r}, channels={list(c.channels)}, "
                             f"dropout_levels={list(c.dropout_levels)})")
        layout = "unet"
    else:
        layouts = {ResnetGenerator: "resnet", PatchGAN: "patchgan", PixelGAN: "pixelgan"}
        if type(net) not in layouts:
            raise ValueError(f"{type(net).__name__} has no reference counterpart")
        layout = layouts[type(net)]
    levels, norm = getattr(net, "levels", 0), net.config.norm
    state = {}
    for k, v in net.state_dict().items():
        module = k.rsplit(".", 1)[0]
        is_conv = isinstance(net.get_submodule(module), (nn.Conv2d, nn.ConvTranspose2d))
        if k.endswith(".bias") and is_conv and not reference_has_bias(layout, module, norm, net):
            if v.abs().max() > 0:
                raise ValueError(f"{k} is non-zero, but the reference builds that layer without a bias "
                                 f"(norm {norm!r}): it cannot hold this network")
            continue
        state[reference_key(layout, k, levels)] = v.detach().clone()
    if layout == "resnet":  # the reference keeps its blur filters in the state dict
        from ..models.antialias import BlurDownsample, BlurUpsample
        for module_name, m in net.named_modules():
            if isinstance(m, (BlurDownsample, BlurUpsample)):
                state[reference_key(layout, f"{module_name}.filt")] = m.filt.detach().clone()
    return state
