"""Model presets as registered functions: `create_model(name, **overrides)` (timm style)."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_KINDS: dict[str, str] = {}
KINDS = ("generator", "discriminator")


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, kind: str = "generator"):
    """Register a preset under its function name: `@register_model` (a generator / dense predictor)
    or `@register_model(kind="discriminator")`."""
    if kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; choose one of {list(KINDS)}")

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if f.__name__ in _REGISTRY:
            raise ValueError(f"model preset {f.__name__!r} registered twice")
        _REGISTRY[f.__name__], _KINDS[f.__name__] = f, kind
        return f
    return add(fn) if fn is not None else add


def list_models(kind: Optional[str] = None) -> list[str]:
    """Registered preset names, all or of one kind (generator | discriminator)."""
    return sorted(name for name in _REGISTRY if kind is None or _KINDS[name] == kind)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered preset; keyword overrides go to the preset function."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}")
    try:
        return _REGISTRY[name](**overrides)
    except TypeError as err:
        raise ValueError(f"bad overrides for model {name!r}: {err}") from None
