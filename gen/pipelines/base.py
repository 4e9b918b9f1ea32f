"""The pipeline protocol every exported method follows.

An export is a folder: one subfolder per network in diffusers save_pretrained form (config.json +
safetensors) and `pipeline.json` (written by `write_meta` only) with the method's kind, its inference
settings and `network_class`, the class of the saved network. Inference settings are decided here,
once, for every caller (training's validation, sample.py, evaluate, compare, the server):

- precision: `fp32` (default) or `bf16` (autocast on the pipeline's device; see docs/evaluation.md
  for the figures behind the default); the caller's own autocast state never leaks in.
- memory layout and weights: a pipeline built during training runs on `export_copy` of the trained
  network, the object `from_pretrained` would rebuild, not the trainer's wrapped model (Accelerate
  keeps its autocast forward wrapper and training's memory format).
"""
from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import Iterator, Optional

import torch

PIPELINE_FILE = "pipeline.json"
PRECISIONS = ("fp32", "bf16")
CLASS_KEY = "network_class"
# What exports written before the key had one name call it (still read)
OLD_CLASS_KEYS = ("generator_class", "model_class")


def check_precision(precision: str, flag: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{flag} {precision!r}: choose one of {list(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def inference_precision(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """bf16 autocast on `device`, or autocast explicitly off (fp32) whatever the caller had on."""
    check_precision(precision)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


def export_copy(net: torch.nn.Module) -> torch.nn.Module:
    """The network as its export would load it: a fresh instance of its class from its config, fp32,
    contiguous, with `net`'s weights and buffers, on `net`'s device, in eval mode. `net` may be a
    trainer's (Accelerate-unwrapped) model that still carries an autocast forward wrapper, a
    channels_last layout or training mode; the copy carries none of them."""
    device = next(net.parameters()).device
    fresh = type(net).from_config(net.config).to(device)
    fresh.load_state_dict(net.state_dict())
    return fresh.eval().requires_grad_(False)


def write_meta(path: str | Path, kind: str, method: str, **settings) -> None:
    """pipeline.json: kind, method and the pipeline's settings (JSON-serialisable values)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / PIPELINE_FILE).write_text(json.dumps({"kind": kind, "method": method, **settings}, indent=1))


def read_meta(path: str | Path) -> dict:
    meta_file = Path(path) / PIPELINE_FILE
    try:
        return json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_file} not found: the export is incomplete") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file} is not valid JSON ({err}); re-export the run") from None


def network_class_name(meta: dict, default: str) -> str:
    for key in (CLASS_KEY, *OLD_CLASS_KEYS):
        if key in meta:
            return meta[key]
    return default


def read_export(path: Path, subfolder: str, classes: dict, default: str = "UNet"
                ) -> tuple[dict, torch.nn.Module]:
    """(pipeline.json contents, the network in `subfolder`, of the class pipeline.json names)."""
    meta = read_meta(path)
    cls_name = network_class_name(meta, default)
    if cls_name not in classes:
        raise ValueError(f"{path / PIPELINE_FILE}: unknown {CLASS_KEY} {cls_name!r}; "
                         f"known: {sorted(classes)}")
    return meta, load_network(classes[cls_name], local_folder(path / subfolder))


def load_network(cls, folder: Path) -> torch.nn.Module:
    """cls.from_pretrained(folder) with each parameter and buffer in memory of its own. diffusers leaves
    the tensors where safetensors mapped them, at the file's offsets (not 64-byte aligned), and oneDNN's
    CPU kernels sum in an order that depends on alignment on some CPUs (seen on AMD EPYC): a loaded
    export then computes ~1e-7 per layer (~1e-6 in a DDPM sample) away from the network it was saved
    from, and validation and evaluate disagree. A fresh allocation is aligned, and the export's files
    are no longer held open."""
    net = cls.from_pretrained(folder)
    with torch.no_grad():
        for t in itertools.chain(net.parameters(), net.buffers()):
            t.data = t.data.clone()
    return net


def local_folder(folder: Path, config: str = "config.json") -> Path:
    """A saved network's folder, checked here: diffusers would read a missing local path as a Hugging
    Face hub id and try the network."""
    if not (folder / config).is_file():
        raise FileNotFoundError(f"{folder / config} not found: the export is incomplete (re-export the "
                                "run, or convert the checkpoint again)")
    return folder


def export_differences(got: str | Path, ref: str | Path) -> list[str]:
    """What differs between two export folders, empty when they are the same: the file lists, each
    safetensors file's metadata and tensors bit for bit (dtype, shape and bytes: NaNs with the same bits
    are equal, 0.0 and -0.0 are not), JSON files by value (key order ignored), other files byte for
    byte. Used wherever an export must equal another (checkpoint exports, kill/resume, the GPU check)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    def same(s: torch.Tensor, t: torch.Tensor) -> bool:
        raw = [u.contiguous().reshape(-1).view(torch.uint8) for u in (s, t)]
        return s.dtype == t.dtype and s.shape == t.shape and torch.equal(*raw)

    got, ref = Path(got), Path(ref)
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) for d in (got, ref)]
    if files[0] != files[1]:
        return [f"files: {sorted(set(files[0]) ^ set(files[1]))} in only one of {got}, {ref}"]
    out = []
    for rel in files[1]:
        a, b = got / rel, ref / rel
        if a.suffix == ".safetensors":
            x, y = load_file(str(a)), load_file(str(b))
            if x.keys() != y.keys():
                out.append(f"{rel}: keys {sorted(set(x) ^ set(y))} in only one")
            out += [f"{rel}: {k} differs" for k in sorted(y) if k in x and not same(x[k], y[k])]
            with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
                if fa.metadata() != fb.metadata():
                    out.append(f"{rel}: metadata differs")
        elif a.suffix == ".json":
            if json.loads(a.read_text()) != json.loads(b.read_text()):
                out.append(f"{rel}: contents differ")
        elif a.read_bytes() != b.read_bytes():
            out.append(f"{rel}: bytes differ")
    return out


def require_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """x, or FloatingPointError if any value is NaN or inf: such weights would otherwise be written
    as black (or one-class) images that look like results."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"the model produced non-finite {what} (NaN or inf): its weights are broken; "
            "retrain, or use an earlier checkpoint's export"
        )
    return x


class NetworkPipeline:
    """What every one-network pipeline shares: its network in `self.net`, device placement and the
    precision it runs in (`self.precision`, fp32 unless set)."""

    net: torch.nn.Module
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device):
        self.net.to(device)
        return self

    def with_precision(self, precision: Optional[str]):
        """Run in `precision` from now on (None: unchanged); returns self."""
        if precision is not None:
            self.precision = check_precision(precision)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on x (any H, W) on the pipeline's device, in its precision, as float32."""
        with inference_precision(self.device, self.precision):
            return self.net.forward_any_size(x.to(self.device)).float()
