"""Training: the Accelerate loop (base.py) and one trainer per method."""
from .base import Trainer
from .cyclegan import CycleGANTrainer
from .pix2pix import Pix2PixTrainer

TRAINERS = {"pix2pix": Pix2PixTrainer, "cyclegan": CycleGANTrainer}

__all__ = ["Trainer", "Pix2PixTrainer", "CycleGANTrainer", "TRAINERS"]
