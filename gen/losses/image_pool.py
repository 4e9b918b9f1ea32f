"""History of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN §4).

Until the pool holds `size` images, every new image is stored and returned. After that, each new
image is, with probability 1/2, swapped with a random stored one (the stored one is returned),
and otherwise returned as is. The pool owns its RNG, so its behaviour is checkpointed with it.
"""
from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) -> (B, C, H, W) mixing new and stored images; detached."""
        if self.size == 0:
            return images.detach()
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(1, generator=self.generator).item() < 0.5:
                k = int(torch.randint(0, self.size, (1,), generator=self.generator))
                out.append(self.images[k].clone())
                self.images[k] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def to(self, device: torch.device | str) -> "ImagePool":
        """Keep the stored images where the fakes they are mixed with live."""
        self.images = [img.to(device) for img in self.images]
        return self

    def state_dict(self) -> dict[str, Any]:
        images = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": images, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise ValueError(
                f"image pool size {state['size']} in the checkpoint differs from the configured {self.size}"
            )
        self.images = [img.to(device) for img in state["images"]] if state["images"].numel() else []
        self.generator.set_state(state["generator"])
