"""`sample.py compare`: grid, CSV, markdown, HTML with the right rows and columns, and the wandb
Tables read back from the offline run; colorization and conditional-DDPM runs with their own metrics."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gen import config
from gen.compare import Sampling, compare_runs
from gen.data.build import eval_data
from trainers import ColorizationTrainer, DDPMTrainer, Pix2PixTrainer, SegmentationTrainer
from conftest import grid_size, run_sample
from test_colorization import colorization_overrides
from test_ddpm import ddpm_overrides
from test_segmentation import overrides, write_colour_classes
from wandb_records import read_history


def test_compare_writes_report_and_wandb_tables(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 8)
    write_colour_classes(tmp_path / "data" / "val", 3, seed=1)
    torch.manual_seed(0)
    SegmentationTrainer(config.load(None, overrides(tmp_path, **{"run.dir": tmp_path / "seg"}))).fit()
    short = {"method": "pix2pix", "data.direction": "AtoB", "train.max_steps": 4, "train.validate_every": 4,
             "train.ckpt_every": 4}
    Pix2PixTrainer(config.load(None, overrides(tmp_path, **short, **{"run.dir": tmp_path / "p2p"}))).fit()
    Pix2PixTrainer(config.load(None, overrides(tmp_path, **short, **{"run.dir": tmp_path / "l1only",
                                                                       "pix2pix.gan_mode": "none"}))).fit()
    out = tmp_path / "report"
    proc = run_sample(
        "compare",
        tmp_path / "p2p",
        tmp_path / "l1only",
        "--data",
        tmp_path / "p2p",
        "--output",
        out,
        "--segmenter",
        tmp_path / "seg",
        "--grid-rows",
        2,
        "--wandb",
        "offline",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["run"] for r in rows] == ["ground truth (real photos)", "p2p", "l1only"]  # real photos first
    assert [r["method"] for r in rows] == ["real", "pix2pix", "pix2pix (L1 only)"]
    for col in ("PSNR", "SSIM", "L1", "LPIPS", "FCN pixel_acc", "FCN mean_acc", "FCN mean_iu"):
        assert col in rows[0], col
    assert rows[0]["PSNR"] == "—" and float(rows[1]["PSNR"]) > 0
    assert rows[1]["LPIPS"] == "unavailable" or float(rows[1]["LPIPS"]) >= 0  # no cached backbone: said so
    assert float(rows[0]["FCN pixel_acc"]) > 0.9
    assert Image.open(out / "grid.png").size == grid_size(4, 2, 32)  # input | truth | p2p | l1only, 2 rows
    md = (out / "metrics.md").read_text().splitlines()
    assert md[0].startswith("| run | method |") and sum(line.startswith("| ") for line in md) == 4
    page = (out / "index.html").read_text()
    assert "<img src='grid.png'" in page and page.count("<tr>") == 4 and "l1only" in page

    history = read_history(out)
    logged = {k: v for row in history for k, v in row.items()}
    files = next(out.glob("wandb/offline-run-*/files"))
    # Offline: one image panel per grid column, a row per input, as run files (a moved report folder
    # syncs them; Tables are artifacts named by absolute path, logged online only: test_run_logs.py).
    for column in ("input", "ground truth", "p2p", "l1only"):
        panel = logged[f"comparison/columns/{column}"]
        assert panel["count"] == 2 and all((files / name).is_file() for name in panel["filenames"])
    assert "comparison/images" not in logged and "comparison/metrics" not in logged


def test_compare_colorization_and_conditional_ddpm_with_their_own_metrics(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 8)
    write_colour_classes(tmp_path / "data" / "val", 3, seed=1)
    torch.manual_seed(0)
    SegmentationTrainer(
        config.load(
            None,
            overrides(
                tmp_path, **{"run.dir": tmp_path / "seg", "train.max_steps": 20, "train.validate_every": 20}
            ),
        )
    ).fit()
    ddpm = ddpm_overrides(tmp_path / "ddpm", tmp_path / "data", **{
        "data.kind": "segmentation", "data.train": "train", "data.val": "val", "data.test": "val",
        "data.num_classes": 3, "data.first_label": 1, "data.direction": "AtoB", "data.load_size": 32,
        "data.crop_size": 32, "train.max_steps": 2, "train.ckpt_every": 2})
    DDPMTrainer(config.load(None, ddpm)).fit()
    colour = colorization_overrides(tmp_path / "colour", tmp_path / "data", **{
        "data.pattern": "'*.jpg'", "train.max_steps": 2, "train.validate_every": 2, "train.ckpt_every": 2})
    ColorizationTrainer(config.load(None, colour)).fit()

    out = tmp_path / "report"
    proc = run_sample(
        "compare",
        tmp_path / "ddpm",
        tmp_path / "colour",
        "--data",
        tmp_path / "ddpm",
        "--output",
        out,
        "--segmenter",
        tmp_path / "seg",
        "--samples-per-input",
        2,
        "--steps",
        3,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["run"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    assert list(rows) == ["ground truth (real photos)", "ddpm", "colour", "grayscale baseline"]
    assert float(rows["grayscale baseline"]["colourfulness"]) < 0.01  # ab = 0 through the same scoring
    assert rows["colour"]["method"] == "colorization (classification, rebalanced)"  # the variant is named
    assert float(rows["ddpm"]["diversity_L1"]) > 0 and rows["colour"]["diversity_L1"] == "—"
    assert 0 < float(rows["colour"]["AuC"]) <= 1 and rows["ddpm"]["AuC"] == "—"
    assert float(rows["colour"]["colourfulness"]) >= 0 and float(rows["ddpm"]["FCN pixel_acc"]) >= 0
    # input | truth | ddpm sample 1 | ddpm sample 2 | colour; 3 test images
    assert Image.open(out / "grid.png").size == grid_size(5, 3, 32)
    assert json.loads((out / "metrics.json").read_text())["columns"] == [
        "input", "ground truth", "ddpm", "ddpm (2)", "colour"]

    # Two samples of one input differ; the same seed gives the same samples again.
    cfg = config.load(tmp_path / "ddpm" / "config.yaml")
    first = compare_runs(eval_data(cfg, "test"), [tmp_path / "ddpm"], None, 1, 1, Sampling(2, 3))
    again = compare_runs(eval_data(cfg, "test"), [tmp_path / "ddpm"], None, 1, 1, Sampling(2, 3))
    a, b = first.grid_rows[0][2:]
    assert not torch.equal(a, b) and torch.equal(first.grid_rows[0][2], again.grid_rows[0][2])

    # An image folder compares colorization runs (gray input, colour target); a segmenter needs labels.
    images = config.load(tmp_path / "colour" / "config.yaml")
    result = compare_runs(eval_data(images, "test"), [tmp_path / "colour"], None, 2)
    assert [r["run"] for r in result.table] == ["colour", "grayscale baseline"]
    assert "AuC_rebalanced" in result.table[0] and any("gray input" in note for note in result.notes)
    with pytest.raises(ValueError, match="segmenter but the data has no labels"):
        compare_runs(eval_data(images, "test"), [tmp_path / "seg"])


def test_grid_labels_its_columns_and_enlarges_small_tiles():
    import torch
    from gen.visualize import HEADER, image_grid
    white = torch.ones(3, 32, 32)
    grid = image_grid([[white, -white]], ["input", "a very long run name that cannot fit"])
    assert grid.size == grid_size(2, 1, 32) == (192, 96 + HEADER)
    band = np.asarray(grid)[:HEADER]
    assert (band < 128).any(axis=2).any()  # the labels are drawn
    assert (np.asarray(grid)[HEADER:, 96:] == 0).all() and (np.asarray(grid)[HEADER:, :96] == 255).all()
    assert image_grid([[white]]).size == (96, 96)  # no labels, no band


def test_runs_named_by_seed_get_a_mean_and_sd_table(tmp_path):
    from gen.compare import Comparison, write_report
    table = [{"run": "fcn8s_s0", "method": "seg", "mean_iu": 0.5, "pixel_acc": 0.8},
             {"run": "fcn8s_s1", "method": "seg", "mean_iu": 0.7, "pixel_acc": 0.9},
             {"run": "fcn8s_s2", "method": "seg", "mean_iu": 0.6, "pixel_acc": 0.7},
             {"run": "unet_seed0", "method": "seg", "mean_iu": 0.4},
             {"run": "alone", "method": "seg", "mean_iu": 0.1}]
    result = Comparison(["input"], [[torch.zeros(3, 8, 8)]], table)
    rows = {r["run"]: r for r in result.by_seed}
    assert set(rows) == {"fcn8s"} and rows["fcn8s"]["seeds"] == 3  # single-seed groups are not aggregated
    assert rows["fcn8s"]["mean_iu"] == "0.6000 ± 0.1000"  # sample sd of 0.5, 0.7, 0.6
    assert rows["fcn8s"]["pixel_acc"] == "0.8000 ± 0.1000"
    write_report(result, tmp_path)
    assert "| fcn8s | seg | 3 | 0.6000 ± 0.1000 | 0.8000 ± 0.1000 |" in (tmp_path / "metrics.md").read_text()
