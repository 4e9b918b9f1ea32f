"""`sample.py compare`: grid, CSV, markdown, HTML with the right rows and columns, and the wandb
Tables read back from the offline run."""
import csv
import json

import torch
from PIL import Image

from gen import config
from trainers import Pix2PixTrainer, SegmentationTrainer
from conftest import run_sample
from test_segmentation import overrides, write_colour_classes
from wandb_records import read_history


def test_compare_writes_report_and_wandb_tables(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 8)
    write_colour_classes(tmp_path / "data" / "val", 3, seed=1)
    torch.manual_seed(0)
    SegmentationTrainer(config.load(None, overrides(tmp_path, **{"run.dir": tmp_path / "seg"}))).fit()
    short = {"method": "pix2pix", "data.direction": "AtoB", "train.max_steps": 4, "train.sample_every": 4,
             "train.ckpt_every": 4}
    Pix2PixTrainer(config.load(None, overrides(tmp_path, **short, **{"run.dir": tmp_path / "p2p"}))).fit()
    Pix2PixTrainer(config.load(None, overrides(tmp_path, **short, **{"run.dir": tmp_path / "l1only",
                                                                       "pix2pix.gan_mode": "none"}))).fit()
    out = tmp_path / "report"
    proc = run_sample("compare", tmp_path / "p2p", tmp_path / "l1only", "--data", tmp_path / "p2p", "--output", out,
                      "--segmenter", tmp_path / "seg", "--grid-rows", 2, "--wandb", "offline")
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["run"] for r in rows] == ["ground truth (real photos)", "p2p", "l1only"]  # real photos first
    assert [r["method"] for r in rows] == ["real", "pix2pix", "pix2pix"]
    for col in ("PSNR", "SSIM", "L1", "LPIPS", "FCN pixel_acc", "FCN mean_acc", "FCN mean_iu"):
        assert col in rows[0], col
    assert rows[0]["PSNR"] == "—" and float(rows[1]["PSNR"]) > 0
    assert rows[1]["LPIPS"] == "unavailable" or float(rows[1]["LPIPS"]) >= 0  # no cached backbone: said so
    assert float(rows[0]["FCN pixel_acc"]) > 0.9
    assert Image.open(out / "grid.png").size == (4 * 32, 2 * 32)  # input | truth | p2p | l1only, 2 rows
    md = (out / "metrics.md").read_text().splitlines()
    assert md[0].startswith("| run | method |") and sum(line.startswith("| ") for line in md) == 4
    page = (out / "index.html").read_text()
    assert "<img src='grid.png'" in page and page.count("<tr>") == 4 and "l1only" in page

    history = read_history(out)
    logged = {k: v for row in history for k, v in row.items()}
    files = next(out.glob("wandb/offline-run-*/files"))
    images = json.loads((files / logged["comparison/images"]["path"]).read_text())
    assert images["columns"] == ["input", "ground truth", "p2p", "l1only"] and len(images["data"]) == 2
    metrics = json.loads((files / logged["comparison/metrics"]["path"]).read_text())
    assert [r[0] for r in metrics["data"]] == ["ground truth (real photos)", "p2p", "l1only"]
    assert "comparison/bar/FCN mean_iu_table" in logged  # one bar chart per metric
