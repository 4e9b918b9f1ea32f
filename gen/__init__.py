"""gen: a generative image-to-image suite on one shared U-Net (library code: no training loop)."""
__version__ = "0.1.0"
