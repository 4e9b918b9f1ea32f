"""`UNet`: the base of gen's two U-Nets and the name every U-Net export loads by.

- `Pix2PixUNet` (pix2pix_unet.py, block style `pix2pix`): pix2pix, CycleGAN, colorization, segmentation.
- `DiffusionUNet` (diffusion_unet.py, block style `ddpm`): DDPM denoisers, `forward(x, timesteps)`.

Both are encoder-decoders with skips built of `len(channels)` levels; they share the any-size
padding (layers.AnySize), save_pretrained / from_pretrained (diffusers' ModelMixin, ConfigMixin) and
the output activation. Build them directly or by preset (presets.py); `UNet` itself dispatches:

    UNet.from_pretrained(folder)   # the class config.json names: `_class_name`, or for an export
                                   # written before the split ("UNet", every knob) its block_style
    UNet(block_style="ddpm", ...)  # the one-class signature of those exports, checked as it was

and `isinstance(net, UNet)` holds for both. New code builds the subclasses or the presets.
"""
from __future__ import annotations

import inspect
import json
from typing import Optional, Sequence

from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import AnySize, BilinearUpsample  # noqa: F401  (BilinearUpsample: its old home)

BLOCK_STYLES = ("pix2pix", "ddpm")
OUT_ACTIVATIONS = ("tanh", "none")

# UNet.__init__ before the split (issue 23): the knobs of both styles, as every config.json written
# before it holds them (in that order, positionally too).
ONE_CLASS_DEFAULTS = dict(
    in_channels=3, out_channels=3, channels=(64, 128, 256, 512, 512, 512, 512, 512), block_style="pix2pix",
    norm="batch", dropout=0.5, dropout_levels=(4, 5, 6), upsample="transposed", out_activation="tanh",
    layers_per_level=2, attention_levels=(), attention_head_dim=None, norm_groups=32, norm_eps=1e-6,
    time_flip_sin_to_cos=False, time_freq_shift=1, downsample_padding=1, output_stride=1,
)
ONE_CLASS = inspect.Signature([inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                               for k, v in ONE_CLASS_DEFAULTS.items()])
# The values of the other style's knobs that the one-class UNet built the same network with (its
# defaults; the ddpm presets passed norm="group", dropout_levels=()); any other value was an error,
# except for the four ddpm knobs the pix2pix style never read (any value loads, ignored as before).
NEUTRAL = {k: [v] for k, v in ONE_CLASS_DEFAULTS.items()}
NEUTRAL["norm"].append("group")
NEUTRAL["dropout_levels"].append(())
UNREAD_BY_PIX2PIX = ("layers_per_level", "attention_levels", "attention_head_dim", "norm_groups")


def _plain(v):
    return json.loads(json.dumps(v))  # as config.json holds it: tuples and lists compare equal


def split_one_class(args: dict) -> tuple[type[UNet], dict]:
    """One-class knobs (config.json of an export before the split, or `UNet(...)`'s arguments; any
    subset, the rest at its old defaults) -> (the class of their block style, that class's knobs).
    ValueError for the other style's knobs at a value that would change the network, as before."""
    a = {**ONE_CLASS_DEFAULTS, **args}
    style = a.pop("block_style")
    if style not in UNet.styles:
        raise ValueError(f"unknown block_style {style!r}; choose one of {list(BLOCK_STYLES)}")
    cls = UNet.styles[style]
    if style == "ddpm" and a["output_stride"] != 1:
        raise ValueError(f"output_stride={a['output_stride']}: a coarse head is a pix2pix-style option; "
                         "the ddpm style at 1 only")
    other = {k: v for k, v in a.items() if k not in cls.knobs
             and not (style == "pix2pix" and k in UNREAD_BY_PIX2PIX)}
    bad = {k: v for k, v in other.items() if _plain(v) not in _plain(NEUTRAL[k])}
    if bad:
        owner, why = ("ddpm", "") if style == "pix2pix" else (
            "pix2pix", "; the ddpm style has GroupNorm, nearest + conv upsampling and dropout in every block")
        raise ValueError(f"{sorted(bad)} apply to block_style={owner!r} only{why} (got {bad})")
    return cls, {k: a[k] for k in cls.knobs}


class _BuildsByBlockStyle(type):
    """`UNet(...)`, the base itself, keeps the one-class signature and builds the class of its
    block_style; subclasses are built as usual."""

    def __call__(cls, *args, **kwargs):
        if cls is not UNet:
            return super().__call__(*args, **kwargs)
        target, knobs = split_one_class(ONE_CLASS.bind(*args, **kwargs).arguments)
        return target(**knobs)


class UNet(AnySize, ModelMixin, ConfigMixin, metaclass=_BuildsByBlockStyle):
    """Encoder-decoder with skips. x: (B, in_channels, H, W) -> (B, out_channels, H/s, W/s), s the
    output stride (1 unless a coarse head is asked for). H and W must be multiples of `self.multiple`
    (2 ** stride-2 steps) in training; `forward_any_size` pads and crops back for any size.

    A subclass names its style, `class X(UNet, block_style="...")`, and calls
    `super().__init__(channels, out_activation)` first."""

    block_style: str
    knobs: tuple[str, ...]  # the subclass's __init__ parameters: its config keys
    styles: dict[str, type[UNet]] = {}

    def __init_subclass__(cls, block_style: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.knobs = tuple(inspect.signature(cls.__init__).parameters)[1:]
        if block_style is not None:
            cls.block_style = block_style
            UNet.styles[block_style] = cls
            UNET_CLASSES[cls.__name__] = cls

    def __init__(self, channels: Sequence[int], out_activation: str):
        super().__init__()
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(
                f"unknown out_activation {out_activation!r}; choose one of {list(OUT_ACTIVATIONS)}"
            )
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got channels={list(channels)}")
        self.levels = len(channels)
        # Named from the start (save_pretrained writes it too), so UNet.from_config(net.config) of a
        # network never saved builds this class.
        self.register_to_config(_class_name=type(self).__name__)

    def check_levels(self, name: str, chosen: Sequence[int]) -> None:
        bad = [i for i in chosen if not 0 <= i < self.levels]
        if bad:
            raise ValueError(f"{name} {bad} are outside 0..{self.levels - 1}")

    @staticmethod
    def activation(name: str) -> nn.Module:
        return nn.Tanh() if name == "tanh" else nn.Identity()

    @classmethod
    def from_config(cls, config: Optional[dict] = None, return_unused_kwargs: bool = False, **kwargs):
        """The network `config` (a config.json's contents, or `net.config`) describes, of the class
        its `_class_name` names; a one-class config (`block_style` and both styles' knobs: exports
        written before the split) builds the class of its block style. `kwargs` override config
        keys. On a subclass, a config of another class is a ValueError."""
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config takes a config dict (load one with "
                            f"{cls.__name__}.load_config(folder)), got {type(config).__name__}")
        config = {**config, **{k: kwargs.pop(k) for k in list(kwargs) if k in ONE_CLASS_DEFAULTS}}
        name = config.get("_class_name")
        if "block_style" not in config and name in UNET_CLASSES and name != "UNet":
            target = UNET_CLASSES[name]
        else:
            target, knobs = split_one_class({k: v for k, v in config.items() if k in ONE_CLASS_DEFAULTS})
            # every knob is explicit now: diffusers would reset those `_use_default_values` names
            rest = {k: v for k, v in config.items()
                    if k not in ONE_CLASS_DEFAULTS and k not in ("_class_name", "_use_default_values")}
            config = {**rest, **knobs}
        if not issubclass(target, cls):
            raise ValueError(f"this config describes a {target.__name__} (block_style "
                             f"{target.block_style!r}), not a {cls.__name__}; load it with UNet or "
                             f"{target.__name__}")
        return super(UNet, target).from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)


# Every class name a U-Net export may record (config.json's _class_name, pipeline.json's
# network_class) -> a class whose from_pretrained loads it; the styles add themselves on import.
UNET_CLASSES: dict[str, type[UNet]] = {"UNet": UNet}
