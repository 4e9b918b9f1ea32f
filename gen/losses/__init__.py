"""Loss functions."""
from .gan import GAN_MODES, GANLoss

__all__ = ["GANLoss", "GAN_MODES"]
