"""Registered presets. Parameter counts of the references are checked in tests/test_models.py."""
from __future__ import annotations

from .discriminators import PatchGAN, PixelGAN
from .fcn import FCN
from .registry import register_model
from .resnet_generator import ResnetGenerator
from .diffusion_unet import DiffusionUNet
from .pix2pix_unet import Pix2PixUNet


def pix2pix_channels(num_downs: int, ngf: int) -> tuple[int, ...]:
    """Reference widths: ngf, 2ngf, 4ngf, then 8ngf for every deeper level."""
    if num_downs < 5:
        raise ValueError(f"a pix2pix U-Net needs num_downs >= 5, got {num_downs}")
    return tuple(ngf * min(2 ** i, 8) for i in range(num_downs))


@register_model
def unet(
    num_downs: int = 8,
    in_channels: int = 3,
    out_channels: int = 3,
    ngf: int = 64,
    norm: str = "batch",
    dropout: float = 0.5,
    out_activation: str = "tanh",
    upsample: str = "transposed",
    output_stride: int = 1,
) -> Pix2PixUNet:
    """pix2pix U-Net with `num_downs` stride-2 levels; dropout on the 8ngf levels below the innermost;
    `output_stride` 2^k predicts at 1/2^k resolution (the last k decoder levels replaced by a 1x1 conv)."""
    channels = pix2pix_channels(num_downs, ngf)
    # The reference puts dropout on the num_downs-5 middle blocks between 8ngf and the innermost.
    dropout_levels = tuple(range(4, num_downs - 1)) if dropout > 0 else ()
    return Pix2PixUNet(in_channels=in_channels, out_channels=out_channels, channels=channels, norm=norm,
                       dropout=dropout, dropout_levels=dropout_levels, out_activation=out_activation,
                       upsample=upsample, output_stride=output_stride)


@register_model
def unet_256(**kw) -> Pix2PixUNet:
    """pix2pix generator for 256x256: 8 levels, 54,413,955 parameters at ngf 64 with batch norm."""
    return unet(num_downs=8, **kw)


@register_model
def unet_128(**kw) -> Pix2PixUNet:
    """pix2pix generator for 128x128: 7 levels, 41,828,995 parameters at ngf 64 with batch norm."""
    return unet(num_downs=7, **kw)


# Presets pass keywords: diffusers' register_to_config records positional arguments as defaults
# (`_use_default_values`), and from_config(net.config) would then rebuild them at the defaults.
@register_model(kind="discriminator")
def patchgan(in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> PatchGAN:
    """70x70 PatchGAN (n_layers 3): 2,768,705 parameters with 6 input channels."""
    return PatchGAN(in_channels=in_channels, ndf=ndf, n_layers=n_layers, norm=norm)


@register_model(kind="discriminator")
def pixelgan(in_channels: int = 6, ndf: int = 64, norm: str = "batch") -> PixelGAN:
    return PixelGAN(in_channels=in_channels, ndf=ndf, norm=norm)


@register_model
def resnet_9blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, norm: str = "instance",
                   dropout: float = 0.0) -> ResnetGenerator:
    """CycleGAN's generator for 256x256: 11,378,179 parameters at ngf 64 with instance norm."""
    return ResnetGenerator(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=9, norm=norm,
                           dropout=dropout)


@register_model
def resnet_6blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, norm: str = "instance",
                   dropout: float = 0.0) -> ResnetGenerator:
    """CycleGAN's generator for 128x128: 7,837,699 parameters at ngf 64 with instance norm."""
    return ResnetGenerator(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=6, norm=norm,
                           dropout=dropout)


def _fcn(variant: str, in_channels: int = 3, out_channels: int = 21, ngf: int = 64, norm: str = "batch",
         dropout: float = 0.5, out_activation: str = "none", upsample: str = "transposed") -> FCN:
    if out_activation != "none":
        raise ValueError("FCN predicts class logits: out_activation must be 'none'")
    return FCN(in_channels=in_channels, num_classes=out_channels, ngf=ngf, variant=variant, norm=norm,
               dropout=dropout, upsample=upsample)


@register_model
def fcn32s(**kw) -> FCN:
    """FCN-32s: stride-32 scores upsampled once (learned, bilinear init)."""
    return _fcn("fcn32s", **kw)


@register_model
def fcn16s(**kw) -> FCN:
    """FCN-16s: stride-32 scores fused with stride-16 (pool4) scores."""
    return _fcn("fcn16s", **kw)


@register_model
def fcn8s(**kw) -> FCN:
    """FCN-8s: fused with pool4 and pool3 scores; the finest of Long et al.'s nets."""
    return _fcn("fcn8s", **kw)


@register_model
def ddpm_unet(in_channels: int = 3, out_channels: int = 3, ngf: int = 128, channel_mult: tuple = (1, 2, 2, 2),
              layers_per_level: int = 2, attention_levels: tuple = (1,), dropout: float = 0.1,
              attention_head_dim=None, norm_groups: int = 32, **layout) -> DiffusionUNet:
    """The diffusion U-Net; widths ngf * channel_mult, attention at the listed levels (level i works
    at 1/2**i of the input size). Predicts noise (or v): no output activation.
    `layout`: norm_eps, time_flip_sin_to_cos, time_freq_shift, downsample_padding (DiffusionUNet's
    knobs for matching converted weights: gen.convert.diffusers_unet)."""
    return DiffusionUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(ngf * m for m in channel_mult),
        dropout=dropout,
        layers_per_level=layers_per_level,
        attention_levels=tuple(attention_levels),
        attention_head_dim=attention_head_dim,
        norm_groups=norm_groups,
        out_activation="none",
        **layout,
    )


@register_model
def ddpm_cifar10(**kw) -> DiffusionUNet:
    """Ho et al.'s CIFAR-10 model: ch 128, mult 1,2,2,2, 2 blocks per level, attention at 16x16,
    dropout 0.1; 35,746,307 parameters, the same as diffusers' UNet2DModel of this configuration."""
    return ddpm_unet(**{"ngf": 128, "channel_mult": (1, 2, 2, 2), "attention_levels": (1,), **kw})


@register_model
def ddpm_small(**kw) -> DiffusionUNet:
    """A CPU-sized DDPM U-Net: Ho et al.'s layout at a quarter of the width (ch 32, mult 1,2,2,2,
    attention at level 2, i.e. 8x8 for 32x32 inputs); 2,245,763 parameters."""
    return ddpm_unet(**{"ngf": 32, "channel_mult": (1, 2, 2, 2), "attention_levels": (2,), **kw})


@register_model
def ddpm_tiny(**kw) -> DiffusionUNet:
    """For tests and toy data: ch 16, mult 1,2, one block per level, attention at level 1."""
    return ddpm_unet(**{"ngf": 16, "channel_mult": (1, 2), "layers_per_level": 1, "attention_levels": (1,),
                        "norm_groups": 8, **kw})


@register_model
def resnet_9blocks_antialias(in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                             norm: str = "instance", dropout: float = 0.0) -> ResnetGenerator:
    """CUT's generator (Park et al. 2020): resnet_9blocks with blurred down- and upsampling; the same
    11,378,179 parameters at ngf 64 (the blur filters are constants)."""
    return ResnetGenerator(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=9, norm=norm,
                           dropout=dropout, antialias=True)


@register_model
def resnet_6blocks_antialias(in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                             norm: str = "instance", dropout: float = 0.0) -> ResnetGenerator:
    """resnet_6blocks with CUT's blurred down- and upsampling: 7,837,699 parameters at ngf 64."""
    return ResnetGenerator(in_channels=in_channels, out_channels=out_channels, ngf=ngf, n_blocks=6, norm=norm,
                           dropout=dropout, antialias=True)
