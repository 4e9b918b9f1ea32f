"""Model presets as registered functions: `create_model(name, **overrides)` (timm style)."""
from __future__ import annotations

from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model preset {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered preset; keyword overrides go to the preset function."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}")
    try:
        return _REGISTRY[name](**overrides)
    except TypeError as err:
        raise ValueError(f"bad overrides for model {name!r}: {err}") from None
