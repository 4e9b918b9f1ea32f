"""`sample.py serve`: every kind of run served as sample.py writes it (bit for bit), bad uploads refused
with a message naming them, the queue, and the API tested against a live server with gradio_client
and curl (those skip without the optional gradio)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from gen import config
from gen.serve.runs import Limits, Scratch, compare, load_runs
from trainers import (ColorizationTrainer, CycleGANTrainer, DDPMTrainer, Pix2PixTrainer,
                      SegmentationTrainer)
from conftest import ROOT, tiny_overrides, write_aligned
from test_colorization import colorization_overrides, write_banded
from test_cyclegan import cyclegan_overrides, write_unpaired
from test_ddpm import ddpm_overrides, write_toy
from test_segmentation import overrides as segmentation_overrides, write_colour_classes

KINDS = ("p2p", "gray", "labels2photo", "cyclegan", "colour", "seg", "ddpm", "cddpm")


def train_runs(root: Path, kinds=KINDS) -> dict[str, Path]:
    """Tiny runs (a few steps each) of every kind sample.py serve shows."""
    torch.manual_seed(0)
    write_aligned(root / "data" / "train", 4)
    write_aligned(root / "data" / "val", 1, seed=1)
    write_colour_classes(root / "seg" / "train", 4)
    write_colour_classes(root / "seg" / "val", 2, seed=1)
    short = {"train.max_steps": 2, "train.validate_every": 2, "train.ckpt_every": 2}
    labels = {"method": "pix2pix", "data.direction": "AtoB", "data.root": root / "seg", **short}
    builders = {
        "p2p": lambda d: Pix2PixTrainer(config.load(None, tiny_overrides(d, root / "data", **short))),
        "gray": lambda d: Pix2PixTrainer(config.load(None, tiny_overrides(d, root / "data", **short,
                                                                        **{"data.channels_a": 1}))),
        "labels2photo": lambda d: Pix2PixTrainer(config.load(None, segmentation_overrides(
            root, **labels, **{"run.dir": d}))),
        "seg": lambda d: SegmentationTrainer(config.load(None, segmentation_overrides(
            root, **short, **{"run.dir": d, "data.root": root / "seg"}))),
        "colour": lambda d: ColorizationTrainer(config.load(None, colorization_overrides(
            d, write_banded(root / "banded" / "train", 4).parent, **short))),
        "cyclegan": lambda d: CycleGANTrainer(config.load(None, cyclegan_overrides(
            d, write_unpaired(root / "unpaired", n=2), **short))),
        "ddpm": lambda d: DDPMTrainer(config.load(None, ddpm_overrides(
            d, write_toy(root / "toy" / "train", 16).parent, **short))),
        "cddpm": lambda d: DDPMTrainer(config.load(None, ddpm_overrides(d, root / "seg", **short, **{
            "data.kind": "segmentation", "data.train": "train", "data.val": "val", "data.test": "val",
            "data.num_classes": 3, "data.first_label": 1, "data.direction": "AtoB", "data.load_size": 32,
            "data.crop_size": 32}))),
    }
    write_banded(root / "banded" / "val", 2, seed=1)
    runs = {}
    for kind in kinds:
        builders[kind](root / kind).fit()
        runs[kind] = root / kind
    return runs


def write_inputs(folder: Path) -> dict[str, Path]:
    """One upload per situation, each alone in its folder (so sample.py treats it as input 0)."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (37, 45, 3), dtype=np.uint8))  # not a multiple of 32
    label = Image.fromarray(np.kron(rng.integers(1, 4, (4, 5)), np.ones((8, 8), int)).astype(np.uint8), "L")
    palette = label.convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)  # not gen's colours
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 255, (37, 45), dtype=np.uint8)))
    deep = Image.fromarray(rng.integers(0, 65535, (33, 40), dtype=np.uint16))
    made = {"photo": photo, "label": label, "palette": palette, "rgba": rgba, "deep": deep,
            "gray": photo.convert("L")}
    paths = {}
    for name, img in made.items():
        (folder / name).mkdir(parents=True)
        img.save(folder / name / f"{name}.png")
        paths[name] = folder / name / f"{name}.png"
    return paths


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return root, train_runs(root), write_inputs(root / "inputs")


def sample_py(*args) -> None:
    """sample.py in-process (its files are the reference the server must equal)."""
    assert sample.main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def reference(served):
    """sample.py's own files for the uploads the tests send."""
    root, runs, inputs = served
    out = root / "reference"
    folder = {name: path.parent for name, path in inputs.items()}
    sample_py(runs["p2p"], "--input", folder["photo"], "--output", out / "p2p")
    sample_py(runs["p2p"], "--input", folder["photo"], "--output", out / "p2p_eval", "--inference", "eval")
    sample_py(runs["p2p"], "--input", folder["deep"], "--output", out / "p2p_deep")
    sample_py(runs["p2p"], "--input", folder["rgba"], "--output", out / "p2p_rgba")
    sample_py(runs["gray"], "--input", folder["deep"], "--output", out / "gray_deep")
    sample_py(runs["labels2photo"], "--input", folder["palette"], "--output", out / "labels2photo")
    sample_py(runs["cyclegan"], "--input", folder["photo"], "--output", out / "cyclegan",
              "--direction", "BtoA")
    sample_py(runs["colour"], "--input", folder["photo"], "--output", out / "colour")
    sample_py(runs["seg"], "--input", folder["photo"], "--output", out / "seg")
    sample_py(runs["ddpm"], "--output", out / "ddpm", "--num", 3, "--steps", 5, "--seed", 1)
    sample_py(runs["cddpm"], "--input", folder["label"], "--output", out / "cddpm", "--samples-per-input", 2,
              "--steps", 4, "--scheduler", "ddpm", "--seed", 3)
    return out


def same_file(a: Path, b: Path) -> bool:
    same_pixels = np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    return same_pixels and Image.open(a).mode == Image.open(b).mode and a.read_bytes() == b.read_bytes()


@pytest.fixture(scope="module")
def runs(served):
    return {r.name: r for r in load_runs([str(p) for p in served[1].values()])}


def test_served_outputs_are_sample_py_files(served, reference, runs, tmp_path):
    _, _, inputs = served
    scratch, limits = Scratch(), Limits()
    photo = str(inputs["photo"])
    checks = [
        (runs["p2p"].translate(photo, scratch.new(), limits), ["p2p/photo.png"]),
        (runs["p2p"].translate(photo, scratch.new(), limits, inference="eval"), ["p2p_eval/photo.png"]),
        (runs["p2p"].translate(str(inputs["deep"]), scratch.new(), limits), ["p2p_deep/deep.png"]),
        (runs["p2p"].translate(str(inputs["rgba"]), scratch.new(), limits), ["p2p_rgba/rgba.png"]),
        (runs["gray"].translate(str(inputs["deep"]), scratch.new(), limits), ["gray_deep/deep.png"]),
        (runs["labels2photo"].translate(str(inputs["palette"]), scratch.new(), limits),
         ["labels2photo/palette.png"]),
        (runs["cyclegan"].translate(photo, scratch.new(), limits, "BtoA"), ["cyclegan/photo.png"]),
        (runs["colour"].colorize(photo, scratch.new(), limits), ["colour/photo.png"]),
        (runs["seg"].segment(photo, scratch.new(), limits), ["seg/photo.png"]),
        (runs["ddpm"].sample(scratch.new(), limits, 3, 5, "ddim", 1),
         [f"ddpm/sample_0000{i}.png" for i in range(3)]),
        (runs["cddpm"].sample_for(str(inputs["label"]), scratch.new(), limits, 2, 4, "ddpm", 3),
         ["cddpm/label_0.png", "cddpm/label_1.png"]),
    ]
    for result, names in checks:
        got = [path for _, path in result.files[:len(names)]]
        assert [p.name for p in got] == [Path(n).name for n in names]
        for path, name in zip(got, names):
            assert same_file(path, reference / name), name
    # paper inference (the p2p export's default) and eval differ: the option reaches the pipeline
    assert not same_file(reference / "p2p/photo.png", reference / "p2p_eval/photo.png")


def test_each_run_shows_what_beside_its_output(served, runs):
    _, _, inputs = served
    scratch, limits = Scratch(), Limits()
    photo = str(inputs["photo"])
    colour = runs["colour"].colorize(photo, scratch.new(), limits)
    gray = np.asarray(Image.open(colour.files[1][1]), dtype=int)
    assert colour.files[1][0] == "grayscale baseline"
    assert (gray.max(-1) - gray.min(-1)).max() <= 2  # no colour
    seg = runs["seg"].segment(photo, scratch.new(), limits)
    ids = np.asarray(Image.open(seg.files[0][1]))
    assert sorted(r["label_id"] for r in seg.legend) == sorted(np.unique(ids).tolist())
    assert sum(r["share"] for r in seg.legend) == pytest.approx(1.0)
    overlay = np.asarray(Image.open(seg.files[1][1]), dtype=float)
    colours = np.asarray(Image.open(seg.files[0][1]).convert("RGB"), dtype=float)
    expected = (np.asarray(Image.open(photo), dtype=float) + colours) / 2
    assert np.abs(overlay - expected).max() <= 1  # the label colours over the photo, half and half
    translated = runs["labels2photo"].translate(str(inputs["label"]), scratch.new(), limits)
    before = np.asarray(Image.open(translated.before))
    assert before.shape == (32, 40, 3)
    assert len(np.unique(before.reshape(-1, 3), axis=0)) <= 3  # the label map in gen's palette colours


def test_bad_uploads_and_values_are_refused_by_name(served, runs, tmp_path):
    _, _, inputs = served
    scratch, limits = Scratch(), Limits(max_pixels=45 * 40, max_samples=4)
    (tmp_path / "notes.txt").write_text("not an image")
    big = tmp_path / "big.png"
    Image.new("RGB", (46, 40)).save(big)
    p2p, cddpm, ddpm, photo = runs["p2p"], runs["cddpm"], runs["ddpm"], str(inputs["photo"])
    cases = [
        (lambda: p2p.translate(str(tmp_path / "notes.txt"), scratch.new(), limits),
         r"cannot read image notes\.txt"),
        (lambda: p2p.translate(None, scratch.new(), limits), "no image: upload an image"),
        (lambda: p2p.translate(str(big), scratch.new(), limits),
         r"big\.png is 46x40 = 1,840 pixels; .* up to 1,800 pixels"),
        (lambda: p2p.translate(photo, scratch.new(), limits, inference="fast"), "inference 'fast'"),
        (lambda: p2p.translate(photo, scratch.new(), limits, bit_depth=16), "16-bit output is for"),
        (lambda: p2p.translate(photo, scratch.new(), limits, direction="BtoA"), "AtoB only"),
        (lambda: runs["cyclegan"].translate(photo, scratch.new(), limits, "CtoD"), "AtoB or BtoA"),
        (lambda: runs["labels2photo"].translate(str(inputs["photo"]), scratch.new(), limits),
         "not in the class palette"),
        (lambda: cddpm.sample_for(str(inputs["photo"]), scratch.new(), limits), "not in the class palette"),
        (lambda: cddpm.sample_for(str(inputs["label"]), scratch.new(), limits, steps=0),
         r"steps 0: must be in 1\.\.1000"),
        (lambda: ddpm.sample(scratch.new(), limits, steps=1001), r"steps 1001: must be in 1\.\.1000"),
        (lambda: ddpm.sample(scratch.new(), limits, num=5), r"number of samples 5: must be in 1\.\.4"),
        (lambda: cddpm.sample_for(str(inputs["label"]), scratch.new(), limits, k=0), "samples per input 0"),
        (lambda: ddpm.sample(scratch.new(), limits, steps=2.5), r"steps 2\.5: expected a whole number"),
        (lambda: ddpm.sample(scratch.new(), limits, seed=-1), "seed -1: must be in"),
        (lambda: ddpm.sample(scratch.new(), limits, scheduler="euler"), "scheduler 'euler'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    ids = tmp_path / "ids.png"  # a palette label map whose ids are outside the model's 1..3
    Image.fromarray(np.full((32, 32), 7, np.uint8), "L").convert("P").save(ids)
    with pytest.raises(ValueError, match=r"label values \[7\] are outside the allowed range 1\.\.3"):
        cddpm.sample_for(str(ids), scratch.new(), limits)


def test_uploads_that_reading_changes_are_described(served, runs):
    _, _, inputs = served
    scratch, limits = Scratch(), Limits()
    notes = {name: runs["p2p"].translate(str(inputs[name]), scratch.new(), limits).notes
             for name in ("photo", "deep", "rgba", "gray")}
    assert notes["photo"] == []
    assert any("16-bit grayscale image: this model takes RGB, so it was rounded to 8 bits" in n
               for n in notes["deep"])
    assert any("transparency composited onto white" in n for n in notes["rgba"])
    assert any("grayscale image replicated to RGB" in n for n in notes["gray"])
    gray_model = runs["gray"]
    assert any("16-bit image read at full precision" in n
               for n in gray_model.translate(str(inputs["deep"]), scratch.new(), limits).notes)
    assert any("reduced to its luminance" in n
               for n in gray_model.translate(str(inputs["photo"]), scratch.new(), limits).notes)
    palette = runs["labels2photo"].translate(str(inputs["palette"]), scratch.new(), limits).notes
    assert any("read as class ids 1..3" in n and "palette's colours are not used" in n for n in palette)
    assert any("lightness (Lab L) only" in n for n in runs["colour"].colorize(str(inputs["photo"]),
                                                                             scratch.new(), limits).notes)


def test_progress_counts_denoising_steps_and_compare_names_refusals(served, runs):
    _, _, inputs = served
    scratch, limits = Scratch(), Limits(max_samples=20)
    seen = []
    runs["ddpm"].sample(scratch.new(), limits, 17, 3, "ddim", 0, on_step=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 6) for i in range(1, 7)]  # 17 samples: two batches of sample.py's 16, 3 steps each
    result = compare(list(runs.values()), str(inputs["photo"]), scratch, limits, steps=2)
    assert [c for c, _ in result.files] == ["p2p", "gray", "cyclegan AtoB", "cyclegan BtoA", "colour", "seg"]
    refused = [n for n in result.notes if "not in the class palette" in n]
    assert [n.split(":")[0] for n in refused] == ["labels2photo", "cddpm"]
    alone = runs["p2p"].translate(str(inputs["photo"]), scratch.new(), limits)
    assert same_file(result.files[0][1], alone.files[0][1])


def test_serve_command_line_errors(served, monkeypatch, capsys):
    _, runs, _ = served
    assert sample.main(["serve", str(runs["p2p"]), "--max-pixels", "0"]) == 2
    assert "--max-pixels 0: must be at least 1" in capsys.readouterr().err
    assert sample.main(["serve", str(runs["p2p"].parent / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as without the optional extra
    monkeypatch.delitem(sys.modules, "gen.serve.app", raising=False)
    assert sample.main(["serve", str(runs["p2p"])]) == 2
    assert 'needs the optional package gradio: pip install -e ".[serve]"' in capsys.readouterr().err


# -- a live server ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dirs, tmp: Path, *flags, wait: float = 120.0):
    """`sample.py serve` in a subprocess on a free port -> (process, url), once its page answers."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_TEMP_DIR=str(tmp / "gradio"), HF_HUB_OFFLINE="1")
    log = open(tmp / f"server_{port}.log", "w")
    command = [sys.executable, str(ROOT / "sample.py"), "serve", *map(str, run_dirs), "--port", str(port),
               *map(str, flags)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + wait
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sample.py serve exited: {Path(log.name).read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "config", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("sample.py serve did not answer in time")


@pytest.fixture(scope="module")
def server(served):
    pytest.importorskip("gradio", reason='the API tests need the optional extra: pip install -e ".[serve]"')
    pytest.importorskip("gradio_client", reason='pip install -e ".[serve]"')
    root, runs, _ = served
    proc, url = start_server([runs[k] for k in ("p2p", "cyclegan", "colour", "seg", "ddpm", "cddpm")], root,
                             "--max-pixels", 100 * 100, "--max-samples", 8)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server, served):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=str(served[0] / "downloads"))


def test_api_with_gradio_client_returns_sample_py_files(client, served, reference):
    from gradio_client import handle_file

    _, _, inputs = served
    photo = handle_file(str(inputs["photo"]))
    out, (before, after), notes = client.predict(photo, "AtoB", "paper", False, api_name="/p2p")
    assert same_file(Path(out), reference / "p2p/photo.png") and after == out and notes == "input read as is"
    assert Image.open(before).size == (45, 37)  # the input as the model saw it, for the slider
    out, _, _ = client.predict(photo, "BtoA", "eval", False, api_name="/cyclegan")
    assert same_file(Path(out), reference / "cyclegan/photo.png")
    out, gray, _, notes = client.predict(photo, api_name="/colour")
    assert same_file(Path(out), reference / "colour/photo.png") and "lightness" in notes
    labels, overlay, legend, _ = client.predict(photo, api_name="/seg")
    assert same_file(Path(labels), reference / "seg/photo.png") and "label id" in legend
    gallery, notes = client.predict(3, 5, "ddim", 1, api_name="/ddpm")
    assert [g["caption"] for g in gallery] == [f"sample_0000{i}.png" for i in range(3)]
    assert all(same_file(Path(g["image"]), reference / "ddpm" / g["caption"]) for g in gallery)
    gallery, _ = client.predict(handle_file(str(inputs["label"])), 2, 4, "ddpm", 3, False, api_name="/cddpm")
    assert all(same_file(Path(g["image"]), reference / "cddpm" / g["caption"]) for g in gallery)
    gallery, notes = client.predict(photo, 4, "ddim", 0, api_name="/compare")
    assert [g["caption"] for g in gallery] == ["p2p", "cyclegan AtoB", "cyclegan BtoA", "colour", "seg"]
    assert same_file(Path(gallery[0]["image"]), reference / "p2p/photo.png") and "cddpm:" in notes


def test_api_refuses_bad_input_with_a_message_and_keeps_serving(client, served, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, _, inputs = served
    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("RGB", (101, 100)).save(tmp_path / "big.png")
    cases = [
        (lambda: client.predict(handle_file(str(tmp_path / "notes.txt")), api_name="/seg"),
         "cannot read image notes.txt"),
        (lambda: client.predict(handle_file(str(tmp_path / "big.png")), api_name="/seg"),
         "big.png is 101x100 = 10,100 pixels; this server takes images of up to 10,000 pixels"),
        (lambda: client.predict(3, 0, "ddim", 0, api_name="/ddpm"), "steps 0: must be in 1..1000"),
        (lambda: client.predict(9, 5, "ddim", 0, api_name="/ddpm"), "number of samples 9: must be in 1..8"),
        (lambda: client.predict(2, 5, "ddim", 1.5, api_name="/ddpm"), "seed 1.5: expected a whole number"),
        (lambda: client.predict(2, 5, "euler", 0, api_name="/ddpm"), "euler"),
        (lambda: client.predict(handle_file(str(inputs["photo"])), 1, 4, "ddim", 0, False, api_name="/cddpm"),
         "not in the class palette"),
    ]
    for call, message in cases:
        with pytest.raises(AppError) as err:
            call()
        assert message in str(err.value)
    out, _, _ = client.predict(handle_file(str(inputs["photo"])), "AtoB", "paper", False, api_name="/p2p")
    assert Path(out).is_file()  # still serving


def test_one_job_at_a_time_with_queue_positions(client):
    jobs = [client.submit(8, 200, "ddpm", i, api_name="/ddpm") for i in range(3)]
    ranks, deadline = set(), time.time() + 120
    while not all(j.done() for j in jobs) and time.time() < deadline:
        statuses = [j.status() for j in jobs]
        running = [s for s in statuses if s.code.name == "PROCESSING"]
        assert len(running) <= 1
        ranks |= {s.rank for s in statuses if s.code.name == "IN_QUEUE" and s.rank is not None}
        time.sleep(0.05)
    assert all(len(j.result()[0]) == 8 for j in jobs)
    assert ranks  # a waiting job was told its place in the queue


def test_api_with_curl_and_loopback_only(server, served, reference, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    _, _, inputs = served

    def run(*args) -> str:
        return subprocess.run([curl, "-sS", "--fail", *args], capture_output=True, text=True, check=True,
                              timeout=120).stdout

    uploaded = json.loads(run("-F", f"files=@{inputs['photo']}", server + "gradio_api/upload"))[0]
    body = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, "AtoB", "paper", False]}
    event = json.loads(run("-H", "Content-Type: application/json", "-d", json.dumps(body),
                           server + "gradio_api/call/p2p"))["event_id"]
    stream = run("-N", server + f"gradio_api/call/p2p/{event}")
    data = json.loads(stream.split("event: complete\ndata: ", 1)[1].splitlines()[0])
    run("-o", str(tmp_path / "out.png"), data[0]["url"])
    assert same_file(tmp_path / "out.png", reference / "p2p/photo.png")
    port = int(server.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(OSError):  # bound to 127.0.0.1 only: another loopback address is refused
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    cfg = json.loads(urllib.request.urlopen(server + "config").read())
    assert cfg["analytics_enabled"] is False and not cfg.get("share_url")
