"""Reading a `.pth` state dict without running anyone's pickled code."""

from __future__ import annotations

from pathlib import Path

import torch


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """{name: tensor} from a `torch.save(net.state_dict())` file, loaded with weights_only=True.

    Errors (ValueError naming the file): a truncated or corrupt file; a pickled Python object (a
    whole model saved with `torch.save(net)`: refused, never unpickled, since unpickling runs code);
    an optimizer state; anything that is not a flat {name: tensor} mapping. FileNotFoundError if absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises unpickling, zip, OS and runtime errors here
        if "Weights only load failed" in str(err):
            raise ValueError(
                f"{path}: holds pickled Python objects (e.g. a whole model saved with torch.save(net)), "
                "which gen does not unpickle because unpickling can run arbitrary code; load it yourself "
                "where you trust it and save net.state_dict() instead") from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        message = f"{path}: not a readable torch checkpoint (truncated or corrupt?): {reason}"
        raise ValueError(message) from None
    if isinstance(obj, dict) and {"state", "param_groups"} <= set(obj):
        raise ValueError(
            f"{path}: an optimizer state (keys 'state', 'param_groups'), not a network's "
            "weights; give the *_net_G.pth / *_net_D.pth file"
        )
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        found = sorted(map(str, obj))[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path}: expected a state dict ({{name: tensor}}, as net.state_dict() saves), found {found}"
        )
    return obj
