"""Training: the Accelerate loop (base.py) and one trainer per method."""
from .base import Trainer
from .colorization import ColorizationTrainer
from .cut import CUTTrainer
from .cyclegan import CycleGANTrainer
from .ddpm import DDPMTrainer
from .pix2pix import Pix2PixTrainer
from .rotation import RotationTrainer
from .segmentation import SegmentationTrainer

TRAINERS = {"pix2pix": Pix2PixTrainer, "cyclegan": CycleGANTrainer, "cut": CUTTrainer,
            "segmentation": SegmentationTrainer, "rotation": RotationTrainer, "ddpm": DDPMTrainer,
            "colorization": ColorizationTrainer}

__all__ = [
    "Trainer",
    "Pix2PixTrainer",
    "CycleGANTrainer",
    "CUTTrainer",
    "SegmentationTrainer",
    "RotationTrainer",
    "DDPMTrainer",
    "ColorizationTrainer",
    "TRAINERS",
]
