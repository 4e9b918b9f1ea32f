"""Networks: the U-Nets (`UNet` loads either), discriminators, and the preset registry."""
from . import presets  # noqa: F401  (registers the presets)
from .diffusion_unet import DiffusionUNet
from .discriminators import PatchGAN, PixelGAN
from .fcn import FCN
from .layers import init_weights
from .pix2pix_unet import Pix2PixUNet
from .registry import create_model, list_models, register_model
from .resnet_generator import ResnetGenerator
from .unet import UNET_CLASSES, UNet

__all__ = [
    "UNet",
    "Pix2PixUNet",
    "DiffusionUNet",
    "UNET_CLASSES",
    "FCN",
    "ResnetGenerator",
    "PatchGAN",
    "PixelGAN",
    "create_model",
    "list_models",
    "register_model",
    "init_weights",
]
