"""Networks: the shared U-Net, discriminators, and the preset registry."""
from . import presets  # noqa: F401  (registers the presets)
from .discriminators import PatchGAN, PixelGAN
from .fcn import FCN
from .layers import init_weights
from .registry import create_model, list_models, register_model
from .resnet_generator import ResnetGenerator
from .unet import UNet

__all__ = [
    "UNet",
    "FCN",
    "ResnetGenerator",
    "PatchGAN",
    "PixelGAN",
    "create_model",
    "list_models",
    "register_model",
    "init_weights",
]
