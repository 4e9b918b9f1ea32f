"""Weights from elsewhere: reference pix2pix/CycleGAN checkpoints and diffusers U-Nets in, diffusers
folders out. CLI: `python -m gen.convert --help`."""

from .reference import Converted, convert_reference, reference_key, to_reference
from .torch_file import read_state_dict

__all__ = ["Converted", "convert_reference", "read_state_dict", "reference_key", "to_reference"]
