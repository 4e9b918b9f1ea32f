"""`python -m gen.convert onnx`: every exported kind matches PyTorch on onnxruntime (<= 1e-4) at sizes
the export never saw, paper inference reproduces sample.py through its noise inputs, the DDPM U-Net
takes its timesteps, and docs/onnx.md's example runs with onnxruntime alone. Skips without the
optional extra (pip install -e ".[onnx]")."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason='ONNX tests need the optional extra: pip install -e ".[onnx]"')
pytest.importorskip("onnxscript", reason='pip install -e ".[onnx]"')
import onnxruntime as ort  # noqa: E402

from gen import config, pipelines  # noqa: E402
from gen.convert.__main__ import main as convert  # noqa: E402
from gen.convert.onnx import PARITY_LIMIT, Dropout, torch_masks  # noqa: E402
from gen.data.transforms import from_pil  # noqa: E402
from trainers import Pix2PixTrainer  # noqa: E402
from conftest import ROOT, tiny_overrides  # noqa: E402
from test_serve import sample_py, train_runs, write_inputs  # noqa: E402


class Exports:
    """Tiny runs of every kind, exported to ONNX on first use (an export takes seconds)."""

    def __init__(self, root: Path):
        self.root, self.runs = root, train_runs(root, ("cyclegan", "colour", "seg", "ddpm", "cddpm"))
        # 7 levels: the pix2pix generator has dropout (levels 4 and 5), so paper mode has noise inputs
        Pix2PixTrainer(config.load(None, tiny_overrides(root / "p2p", root / "data", **{
            "model.num_downs": 7, "data.load_size": 132, "data.crop_size": 128, "train.max_steps": 2,
            "train.validate_every": 2, "train.ckpt_every": 2}))).fit()
        self.runs["p2p"] = self.runs["p2p_eval"] = root / "p2p"
        self.folders: dict[str, Path] = {}

    def __getitem__(self, kind: str) -> Path:
        if kind not in self.folders:
            out = self.root / f"{kind}_onnx"
            extra = ["--inference", "eval"] if kind == "p2p_eval" else []
            assert convert(["onnx", str(self.runs[kind]), "--out", str(out), *extra]) == 0
            self.folders[kind] = out
        return self.folders[kind]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    exports = Exports(tmp_path_factory.mktemp("onnx"))
    return exports.root, exports.runs, exports


def spec(folder: Path) -> dict:
    return json.loads((folder / "onnx.json").read_text())


def session(folder: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])


GRAPHS = {"p2p": ["generator"], "p2p_eval": ["generator"], "colour": ["colorizer"], "seg": ["segmenter"],
          "cddpm": ["unet"], "cyclegan": ["AtoB", "BtoA"], "ddpm": ["unet"]}


# CycleGAN's directions and the unconditional U-Net go through the same code as pix2pix eval and the
# conditional U-Net: slow only (each export takes seconds).
SLOW = ("cyclegan", "ddpm")


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW else k
                                  for k in GRAPHS])
def test_every_kind_exports_within_the_parity_limit(exported, kind):
    _, _, out = exported
    models = spec(out[kind])["models"]
    assert list(models) == GRAPHS[kind]
    for name, model in models.items():
        figures = model["parity"]
        assert all(v <= PARITY_LIMIT for k, v in figures.items() if k != "labels"), (name, figures)
        assert figures.get("labels", 0) == 0, figures  # segmentation labels all agree
    if kind == "p2p":
        assert models["generator"]["inputs"] == ["image", "dropout_0", "dropout_1"]
        assert [(d["channels"], d["stride"], d["p"]) for d in models["generator"]["dropout"]] == [
            (64, 32, 0.5), (64, 16, 0.5)]
    if kind == "p2p_eval":
        assert models["generator"]["inputs"] == ["image"]
    if kind == "cddpm":
        assert models["unet"]["condition_channels"] == 3
        assert (out[kind] / "scheduler_config.json").is_file()


def pad_edge(x: np.ndarray, multiple: int) -> np.ndarray:
    """(B, C, H, W) -> edge-padded to multiples, as forward_any_size pads."""
    h, w = x.shape[-2:]
    return np.pad(x, ((0, 0), (0, 0), (0, -h % multiple), (0, -w % multiple)), mode="edge")


def test_any_size_through_padding_matches_the_pipelines(exported):
    root, runs, out = exported
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 37, 70)).astype(np.float32))  # unseen batch, size
    checks = [
        ("p2p_eval", "generator", pipelines.load(runs["p2p"], inference="eval"), photo),
        ("seg", "segmenter", pipelines.load(runs["seg"]).logits, photo),
        ("colour", "colorizer", pipelines.load(runs["colour"]), photo[:, :1]),
    ]
    for kind, name, pipe, x in checks:
        m = spec(out[kind])["models"][name]["multiple"]
        got = session(out[kind], name).run(None, {session(out[kind], name).get_inputs()[0].name:
                                                 pad_edge(x.numpy(), m)})[0][..., :37, :70]
        with torch.no_grad():
            want = pipe(x).numpy()
        assert np.abs(got - want).max() <= PARITY_LIMIT, kind


def test_paper_inference_reproduces_sample_py_through_its_noise_inputs(exported):
    root, runs, out = exported
    inputs = write_inputs(root / "paper_inputs")
    sample_py(runs["p2p"], "--input", inputs["photo"].parent, "--output", root / "paper_ref")
    pipe = pipelines.load(runs["p2p"])
    model = spec(out["p2p"])["models"]["generator"]
    x = pad_edge(from_pil(Image.open(inputs["photo"]), 3).numpy(), model["multiple"])  # 37x45 -> 128x128
    masks = torch_masks([Dropout(**d) for d in model["dropout"]], 1, *x.shape[-2:], model["seed"])
    feeds = {"image": x, **{d["name"]: t.numpy() for d, t in zip(model["dropout"], masks)}}
    got = session(out["p2p"], "generator").run(None, feeds)[0][..., :37, :45]
    with torch.no_grad():
        want = pipe(from_pil(Image.open(inputs["photo"]), 3)).numpy()
    assert np.abs(got - want).max() <= PARITY_LIMIT
    written = np.asarray(Image.open(root / "paper_ref" / "photo.png"), dtype=int)
    ours = ((np.clip(got[0], -1, 1) + 1) * 127.5 + 0.5).astype(np.uint8).transpose(1, 2, 0).astype(int)
    assert np.abs(ours - written).max() <= 1 and (ours == written).mean() > 0.99  # sample.py's PNG

    # Noise drawn with numpy instead: another sample of the same distribution, unlike eval's output.
    gen = np.random.default_rng(1)
    numpy_masks = {d["name"]: (gen.random(t.shape) >= d["p"]).astype(np.float32) / (1 - d["p"])
                   for d, t in zip(model["dropout"], masks)}
    other = session(out["p2p"], "generator").run(None, {"image": x, **numpy_masks})[0][..., :37, :45]
    evaluated = session(out["p2p_eval"], "generator").run(None, {"image": x})[0][..., :37, :45]
    assert np.isfinite(other).all() and np.abs(other).max() <= 1
    assert np.abs(other - got).max() > 1e-3 and np.abs(evaluated - got).max() > 1e-3
    eval_pipe = pipelines.load(runs["p2p"], inference="eval")
    with torch.no_grad():
        want = eval_pipe(from_pil(Image.open(inputs["photo"]), 3)).numpy()
    assert np.abs(evaluated - want).max() <= PARITY_LIMIT


def test_ddpm_unet_takes_timesteps(exported):
    _, runs, out = exported
    unet = pipelines.load(runs["cddpm"]).unet
    x = torch.randn(3, 6, 12, 20)
    t = torch.tensor([0, 500, 999])
    got = session(out["cddpm"], "unet").run(None, {"sample": x.numpy(), "timestep": t.numpy()})[0]
    with torch.no_grad():
        want = unet(x, t).numpy()
    assert np.abs(got - want).max() <= PARITY_LIMIT
    other = session(out["cddpm"], "unet").run(None, {"sample": x.numpy(), "timestep": (t + 1).numpy()})[0]
    assert np.abs(other - got).max() > 0  # the timestep reaches the network


def docs_example() -> str:
    text = (ROOT / "docs" / "onnx.md").read_text()
    return re.search(r"```python\n(# run_onnx\.py.*?)```", text, re.S).group(1)


def test_docs_example_runs_with_onnxruntime_alone(exported, tmp_path):
    root, runs, out = exported
    inputs = write_inputs(tmp_path / "inputs")
    script = tmp_path / "run_onnx.py"
    script.write_text(docs_example())
    # torch made unimportable: the example needs onnxruntime, numpy and Pillow only
    model = out["p2p_eval"] / "generator.onnx"
    argv = [str(script), str(model), str(inputs["photo"]), str(tmp_path / "out.png")]
    guard = (f"import sys; sys.modules['torch'] = None; sys.argv = {argv!r}; "
             f"exec(compile(open({str(script)!r}).read(), {str(script)!r}, 'exec'))")
    proc = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sample_py(runs["p2p"], "--input", inputs["photo"].parent, "--output", tmp_path / "ref",
              "--inference", "eval")
    ours = np.asarray(Image.open(tmp_path / "out.png"), dtype=int)
    assert np.abs(ours - np.asarray(Image.open(tmp_path / "ref" / "photo.png"), dtype=int)).max() <= 1


def test_refusals_name_what_to_change(exported, capsys):
    root, runs, out = exported
    assert convert(["onnx", str(runs["seg"]), "--out", str(root / "x"), "--inference", "paper"]) == 2
    assert "runs in eval mode only; --inference paper is for translators" in capsys.readouterr().err
    assert convert(["onnx", str(runs["seg"]), "--out", str(out["seg"])]) == 2
    assert "segmenter.onnx" in (err := capsys.readouterr().err) and "--overwrite" in err
    assert convert(["onnx", str(root / "missing"), "--out", str(root / "y")]) == 2
    assert "not found" in capsys.readouterr().err
