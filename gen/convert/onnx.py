"""ONNX export of a gen export: translators (pix2pix, each CycleGAN direction), colorization,
segmentation and the DDPM U-Net, for onnxruntime or any ONNX runtime without PyTorch.

`python -m gen.convert onnx RUN --out DIR` writes one `NAME.onnx` per network and `DIR/onnx.json`
(inputs, outputs, value ranges, the size multiple, the parity measured on onnxruntime). Height and
width are dynamic, multiples of the network's `multiple` (pad with the edge rows / columns and crop
back, as `forward_any_size` does); the batch is dynamic too.

Inference semantics (gen.models.inference):
  eval:  dropout off, batch norm with its running statistics: one input, deterministic.
  paper: Isola et al. 2017 §3.3, as sample.py does for a pix2pix export: batch norm normalises each
         image by its own statistics (computed in the graph), and each dropout layer multiplies by
         a noise input `dropout_K` of 0 and 1/(1-p) values, shape (B, C_K, H / s_K, W / s_K), listed in
         onnx.json. Masks from `torch_masks(spec, b, h, w, seed)` reproduce sample.py's outputs;
         Bernoulli masks drawn elsewhere (numpy) are other noise from the same distribution.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
import warnings

import torch
from torch import nn

from .. import pipelines
from ..models.inference import INFERENCE_MODES, inference_semantics
from ..pipelines.colorization import AB_SCALE
from ..pipelines.base import PIPELINE_FILE

SPEC_FILE = "onnx.json"
PARITY_LIMIT = 1e-4  # max |onnxruntime - PyTorch| accepted for float outputs


class NoiseInput(nn.Module):
    """A dropout layer of a paper-mode graph: x * the next mask the graph was given."""

    def __init__(self, p: float, feed: list):
        super().__init__()
        self.p, self.feed = p, feed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.feed.pop(0)


class PerImageBatchNorm(nn.Module):
    """BatchNorm2d normalising each image by its own (H, W) statistics, its affine kept: what
    sample.py's one-image batches compute in paper mode, for any batch size."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.eps, self.weight, self.bias = bn.eps, bn.weight, bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight[:, None, None] + self.bias[:, None, None]
        return x


def _replace(net: nn.Module, kind: type, make) -> list[nn.Module]:
    """Swap every `kind` child for make(child), in forward-definition order; -> the new modules."""
    new = []
    for module in net.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, kind):
                setattr(module, name, make(child))
                new.append(getattr(module, name))
    return new


@dataclass
class Dropout:
    """One noise input of a paper-mode graph: (B, channels, H / stride, W / stride), keep prob 1 - p."""
    name: str
    channels: int
    stride: int
    p: float


def dropout_layout(net: nn.Module, multiple: int, in_channels: int) -> list[Dropout]:
    """The dropout layers in the order a forward pass meets them (= the order PyTorch draws their
    masks), with the activation they act on."""
    seen = []
    layers = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if any(not isinstance(m, nn.Dropout) for m in layers):
        raise ValueError("paper-mode ONNX export supports element-wise nn.Dropout only (this network has "
                         "channel dropout); export with --inference eval")
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0].shape))) for m in layers]
    size = 2 * multiple
    try:
        with torch.no_grad(), inference_semantics(net, "eval"):
            net(torch.zeros(1, in_channels, size, size, device=next(net.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return [Dropout(f"dropout_{k}", shape[1], size // shape[-1], m.p) for k, (m, shape) in enumerate(seen)]


def torch_masks(spec: list[Dropout], batch: int, h: int, w: int, seed: Optional[int]) -> list[torch.Tensor]:
    """The masks PyTorch's dropout draws in a paper-mode forward seeded with `seed` (what
    TranslationPipeline does per image) at padded size (h, w): feeding them reproduces sample.py."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return [torch.empty(batch, d.channels, h // d.stride, w // d.stride).bernoulli_(1 - d.p).div_(1 - d.p)
                for d in spec]


class TranslatorGraph(nn.Module):
    """image (B, C_in, H, W) in [-1, 1] [, dropout masks] -> output (B, C_out, H, W) in [-1, 1]."""

    def __init__(self, net: nn.Module, inference: str):
        super().__init__()
        self.net, self.feed = copy.deepcopy(net).eval(), []
        self.dropouts: list[Dropout] = []
        if inference == "paper":
            self.dropouts = dropout_layout(self.net, net.multiple, net.config.in_channels)
            _replace(self.net, nn.Dropout, lambda m: NoiseInput(m.p, self.feed))
            _replace(self.net, nn.BatchNorm2d, PerImageBatchNorm)

    def forward(self, image: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        self.feed[:] = list(masks)
        return self.net(image)


class ColorizerGraph(nn.Module):
    """L (B, 1, H, W) normalised to [-1, 1] -> ab (B, 2, H, W) in Lab units (annealed-mean decoding
    of the bins at the export's temperature, or the regression head), at full resolution."""

    def __init__(self, pipe):
        super().__init__()
        self.net, self.head, self.temperature = copy.deepcopy(pipe.net).eval(), pipe.head, pipe.temperature
        bins = torch.zeros(0, 2) if pipe.bins is None else torch.from_numpy(pipe.bins).float()
        self.register_buffer("centres", bins)

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        out = self.net(l_norm).float()
        if self.head == "regression":
            ab = out * AB_SCALE
        else:
            annealed = torch.softmax(torch.log_softmax(out, dim=1) / self.temperature, dim=1)
            ab = torch.einsum("bqhw,qc->bchw", annealed, self.centres)
        s = self.net.out_stride
        if s > 1:  # as ColorizationPipeline: the coarse ab upsampled bilinearly
            ab = nn.functional.interpolate(ab, scale_factor=s, mode="bilinear", align_corners=False)
        return ab


class SegmenterGraph(nn.Module):
    """image (B, C, H, W) in [-1, 1] -> (logits (B, K, H, W), labels (B, H, W) int64 raw label ids)."""

    def __init__(self, pipe):
        super().__init__()
        self.net, self.first_label = copy.deepcopy(pipe.net).eval(), pipe.first_label

    def forward(self, image: torch.Tensor):
        logits = self.net(image).float()
        return logits, logits.argmax(1) + self.first_label


class DenoiserGraph(nn.Module):
    """sample (B, C_in, H, W): x_t (with the condition image concatenated for a conditional model),
    timestep (B,) int64 -> predicted noise (B, C_out, H, W)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(unet).eval()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.net(sample, timestep)


@dataclass
class Graph:
    """One network to write as NAME.onnx, with what onnx.json says about it."""
    name: str
    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    in_channels: int
    multiple: int
    reference: object  # the PyTorch side of the parity check: reference(*inputs) -> output(s)
    inference: str = "eval"
    info: dict = field(default_factory=dict)
    dropouts: list[Dropout] = field(default_factory=list)
    seed: Optional[int] = None  # paper mode: the pipeline's seed, with which parity draws the masks


def translator_graph(name: str, pipe, inference: str) -> Graph:
    g = TranslatorGraph(pipe.net, inference)
    info = {"method": pipe.method, "direction": pipe.direction, "input": "image (B, C_in, H, W) in [-1, 1]",
            "output": "(B, C_out, H, W) in [-1, 1]", "out_channels": pipe.net.config.out_channels,
            "label_input": pipe.label_input, "max_16bit": pipe.max_16bit, "seed": pipe.seed}
    # The reference is sample.py's: one image per call (paper mode: its own statistics, and masks
    # drawn with the pipeline's seed, which is how parity draws them).
    def reference(x, *masks):
        return torch.cat([pipe(x[i:i + 1]) for i in range(len(x))])

    return Graph(name, g, ["image"] + [d.name for d in g.dropouts], ["output"], pipe.in_channels,
                 pipe.net.multiple, reference, inference, info, g.dropouts, pipe.seed)


def graphs_for(run: Path, inference: Optional[str]) -> tuple[str, list[Graph]]:
    """(kind, the graphs) of the export in `run`, loaded on the CPU."""
    export = pipelines.find_export(run)
    if export is None:
        pipelines.load(run)  # raises the loader's own FileNotFoundError naming what is missing
    kind = json.loads((export / PIPELINE_FILE).read_text()).get("kind")
    if inference not in (None, *INFERENCE_MODES):
        raise ValueError(f"--inference {inference!r}: choose one of {list(INFERENCE_MODES)}")
    if kind not in (*pipelines.TRANSLATOR_KINDS, "cyclegan") and inference == "paper":
        raise ValueError(f"{run} is a {kind} export: it runs in eval mode only; --inference paper is for "
                         "translators (pix2pix, CycleGAN)")
    if kind == "cyclegan":
        pipes = {d: pipelines.load(run, direction=d, inference=inference) for d in ("AtoB", "BtoA")}
        return kind, [translator_graph(d, p, p.inference) for d, p in pipes.items()]
    pipe = pipelines.load(run, inference=inference)
    if kind in pipelines.TRANSLATOR_KINDS:
        return kind, [translator_graph("generator", pipe, pipe.inference)]
    if kind == "colorization":
        info = {"head": pipe.head, "temperature": pipe.temperature,
                "bins": 0 if pipe.bins is None else len(pipe.bins),
                "input": "L (B, 1, H, W): Lab lightness / 50 - 1", "output": "ab (B, 2, H, W) in Lab units"}
        return kind, [Graph("colorizer", ColorizerGraph(pipe), ["l_norm"], ["ab"], 1, pipe.net.multiple,
                            pipe, info=info)]
    if kind == "segmentation":
        info = {"num_classes": pipe.num_classes, "first_label": pipe.first_label,
                "input": "image (B, C, H, W) in [-1, 1]", "output": "logits (B, K, H, W); labels (B, H, W) "
                "int64 raw label ids (argmax + first_label)"}
        return kind, [Graph("segmenter", SegmenterGraph(pipe), ["image"], ["logits", "labels"],
                            pipe.net.config.in_channels, pipe.net.multiple,
                            lambda x: (pipe.logits(x), pipe(x) + pipe.first_label), info=info)]
    if pipe.formulation == "edm":
        raise ValueError(f"{run} is an EDM model (ddpm.formulation=edm): its U-Net takes float noise-level "
                         "timesteps and a preconditioned input, which this graph's int64 timestep and "
                         "DDPMScheduler recipe do not describe; ONNX export covers DDPM models")
    unet = pipe.unet
    info = {"sample_size": pipe.sample_size, "condition_channels": pipe.condition_channels,
            "out_channels": unet.config.out_channels, "label_input": pipe.label_input,
            "num_train_timesteps": pipe.scheduler.config.num_train_timesteps,
            "input": "sample (B, out_channels + condition_channels, H, W): x_t, then the condition in "
                     "[-1, 1]; timestep (B,) int64", "output": "predicted noise (B, out_channels, H, W)",
            "scheduler": "scheduler_config.json (diffusers DDPMScheduler)"}
    return kind, [Graph("unet", DenoiserGraph(unet), ["sample", "timestep"], ["noise"],
                        unet.config.in_channels, unet.multiple, unet, info=info)]


def example_inputs(g: Graph, batch: int, hk: int, wk: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of size (multiple * hk, multiple * wk): an image in [-1, 1], masks or timesteps."""
    gen = torch.Generator().manual_seed(seed)
    h, w = g.multiple * hk, g.multiple * wk
    x = torch.rand(batch, g.in_channels, h, w, generator=gen) * 2 - 1
    if g.inputs[1:2] == ["timestep"]:
        return x, torch.randint(0, 1000, (batch,), generator=gen)
    return (x, *torch_masks(g.dropouts, batch, h, w, seed))


def dynamic_shapes(g: Graph):
    """Batch, H = multiple * hk and W = multiple * wk dynamic; each mask follows at its stride."""
    dim = torch.export.Dim
    batch, hk, wk = dim("batch", min=1, max=1024), dim("hk", min=1, max=1024), dim("wk", min=1, max=1024)
    image = {0: batch, 2: g.multiple * hk, 3: g.multiple * wk}
    if g.inputs[1:2] == ["timestep"]:
        return (image, {0: batch})
    if not g.dropouts:
        return (image,)
    masks = tuple({0: batch, 2: (g.multiple // d.stride) * hk, 3: (g.multiple // d.stride) * wk}
                  for d in g.dropouts)
    return (image, masks)


def require_exporter() -> None:
    """ValueError with the install line when torch.onnx's exporter cannot run (it needs onnx and
    onnxscript)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ValueError('ONNX export needs the optional packages onnx and onnxscript: '
                         'pip install -e ".[onnx]"') from None


def export_graph(g: Graph, path: Path, opset: Optional[int] = None) -> None:
    """torch.onnx (torch.export) with dynamic batch, height and width; examples of size 2 and 3 so no
    dimension is specialised to 1."""
    # torch.onnx narrates each stage on stdout and warns that the masks' batch axis is the image's:
    # the command prints its own summary instead.
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        n = base_units(g)
        program = torch.onnx.export(g.module, example_inputs(g, 2, 2 * n, 3 * n), dynamo=True, verbose=False,
                                    input_names=g.inputs, output_names=g.outputs, opset_version=opset,
                                    dynamic_shapes=dynamic_shapes(g))
    program.save(str(path))


def base_units(g: Graph) -> int:
    """Multiples of the network's size multiple that make at least 64 pixels (reflection padding in
    a ResNet generator's 1/4-resolution blocks needs room)."""
    return max(1, -(-64 // g.multiple))


def parity(g: Graph, path: Path, sizes=((1, 2, 3), (2, 3, 1))) -> Optional[dict]:
    """max |onnxruntime - PyTorch| per output over `sizes` (batch, then H and W in base_units(g)
    multiples), PyTorch being the pipeline itself (the U-Net for DDPM); for `labels` the share of
    pixels that differ. None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in g.outputs}
    n = base_units(g)
    for batch, hk, wk in sizes:
        hk, wk = hk * n, wk * n
        if g.dropouts and batch > 1:
            batch = 1  # the pipeline's paper mode draws its masks per one-image call
        inputs = example_inputs(g, batch, hk, wk, seed=g.seed or 0)
        got = session.run(None, {n: t.numpy() for n, t in zip(g.inputs, inputs)})
        with torch.no_grad():
            want = g.reference(*inputs)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        for name, a, b in zip(g.outputs, got, want):
            diff = torch.from_numpy(a).double() - b.double().cpu()
            worst[name] = max(worst[name], float(diff.abs().max()) if name != "labels"
                              else float((diff != 0).double().mean()))
    return worst


def export_onnx(run: str | Path, out: str | Path, inference: Optional[str] = None, overwrite: bool = False,
                opset: Optional[int] = None) -> dict:
    """Write DIR/NAME.onnx for each network of `run`'s export and DIR/onnx.json; -> onnx.json's content.
    Parity with PyTorch is measured on onnxruntime when it is installed (`parity` per graph: max
    absolute difference per float output, the share of differing pixels for `labels`)."""
    run, out = Path(run), Path(out)
    require_exporter()
    kind, graphs = graphs_for(run, inference)
    targets = [out / f"{g.name}.onnx" for g in graphs] + [out / SPEC_FILE]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); choose another --out or pass "
                              "--overwrite")
    out.mkdir(parents=True, exist_ok=True)
    spec = {"kind": kind, "source": str(run), "parity_limit": PARITY_LIMIT, "models": {}}
    for g, path in zip(graphs, targets):
        export_graph(g, path, opset)
        spec["models"][g.name] = {
            "file": path.name, "inputs": g.inputs, "outputs": g.outputs, "in_channels": g.in_channels,
            "multiple": g.multiple, "inference": g.inference, **g.info,
            "dropout": [vars(d) for d in g.dropouts], "parity": parity(g, path)}
    if kind == "diffusion":
        shutil.copy(pipelines.find_export(run) / "scheduler" / "scheduler_config.json",
                    out / "scheduler_config.json")
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    return spec

