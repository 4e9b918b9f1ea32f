"""Training: the Accelerate loop (base.py) and one trainer per method."""
from .base import Trainer
from .pix2pix import Pix2PixTrainer

TRAINERS = {"pix2pix": Pix2PixTrainer}

__all__ = ["Trainer", "Pix2PixTrainer", "TRAINERS"]
