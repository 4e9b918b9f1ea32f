"""Datasets, joint transforms and image I/O."""
from .build import build_images, build_paired, channels, geometry
from .folder import ImageFolder
from .image_io import load_image, load_label
from .listing import Listing, data_report, scan_images
from .labels import IGNORE_INDEX, label_to_rgb, palette
from .pairs import AlignedPairs, FolderPairs, InMemoryPairs, SegmentationPairs, collate
from .sampler import ResumableSampler
from .transforms import Geometry, to_pil

__all__ = [
    "build_images",
    "ImageFolder",
    "build_paired",
    "channels",
    "geometry",
    "scan_images",
    "Listing",
    "data_report",
    "load_image",
    "load_label",
    "IGNORE_INDEX",
    "label_to_rgb",
    "palette",
    "AlignedPairs",
    "FolderPairs",
    "InMemoryPairs",
    "SegmentationPairs",
    "collate",
    "ResumableSampler",
    "Geometry",
    "to_pil",
]
