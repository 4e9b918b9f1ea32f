"""FID / KID through torchmetrics: the math against hand computation on known features, the path
with a random-weight extractor, 'unavailable' without cached Inception weights, and the reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from conftest import run_sample, tiny_overrides, write_aligned
from gen import config
from gen.compare import compare_runs
from gen.data.build import eval_data
from gen.evaluate import evaluate
from gen.metrics.inception import InceptionDistances, try_inception_distances
from test_convert_diffusers import tiny_export
from test_ddpm import write_toy
from trainers import Pix2PixTrainer


class MeanColour(nn.Module):
    """uint8 (N, 3, H, W) -> (N, 3) mean colour: features simple enough to check FID by hand."""

    def forward(self, x):
        return x.float().mean(dim=(2, 3))


class Scale(nn.Module):
    def forward(self, x):  # uint8 0..255 in, like Inception's input
        return (x.float() - 128) / 128


def random_extractor(seed: int = 0) -> nn.Module:
    """Inception's interface (uint8 images -> (N, d)) with random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(Scale(), nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten()).eval()


def hand_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def hand_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float(
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
        + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        - 2 * kab.mean()
    )


def test_fid_and_kid_equal_hand_computation_on_known_features():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(12, 3, 8, 8, generator=gen) * 2 - 1
    fake = (torch.rand(12, 3, 8, 8, generator=gen) * 1.2 - 0.8).clamp(-1, 1)
    dist = InceptionDistances(MeanColour())
    dist.add_real(real)
    dist.add_fake("run", fake)
    scores = dist.scores("run")

    def feats(x):
        return ((x + 1) * 127.5).round().mean(dim=(2, 3)).double().numpy()

    assert scores["FID"] == pytest.approx(hand_fid(feats(real), feats(fake)), rel=1e-6)
    # KID: the unbiased MMD^2 averaged over 50 random subsets of n / 2 = 6 images (seeded with 0)
    a, b = feats(real), feats(fake)
    torch.manual_seed(0)
    picks = [(torch.randperm(12)[:6].numpy(), torch.randperm(12)[:6].numpy()) for _ in range(50)]
    per_subset = [hand_kid(a[r], b[f]) for r, f in picks]
    assert scores["KID"] == pytest.approx(np.mean(per_subset), rel=1e-6)
    assert scores["KID_std"] == pytest.approx(np.std(per_subset), rel=1e-6) and scores["KID_std"] > 0
    assert scores["FID_images"] == 12


def test_random_extractor_path_separates_distributions_and_is_zero_on_itself():
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 1, 16, 16, generator=gen) * 2 - 1  # grayscale: repeated to RGB
    dist = InceptionDistances(random_extractor())
    dist.add_real(real)
    dist.add_fake("same", real)
    dist.add_fake("dark", real * 0.2 - 0.7)
    assert abs(dist.scores("same")["FID"]) < 1e-6
    assert dist.scores("dark")["FID"] > 10 * max(abs(dist.scores("same")["FID"]), 1e-6)
    assert dist.scores("dark")["KID"] > dist.scores("same")["KID"]
    assert dist.scores("dark") == dist.scores("dark")  # KID subsets seeded: the same figures every call
    too_few = InceptionDistances(random_extractor())
    too_few.add_real(real[:1])
    too_few.add_fake("run", real[:1])
    assert "at least 2" in too_few.report("run")["FID"]


def test_unavailable_without_cached_inception_and_nothing_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    metric, reason = try_inception_distances()
    assert metric is None
    assert "not cached" in reason and "nothing is downloaded" in reason
    assert not (tmp_path / "empty_hub").exists()


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fid")
    write_aligned(tmp / "data" / "train", 8, seed=0)
    write_aligned(tmp / "data" / "val", 4, seed=1)
    cfg = config.load(None, tiny_overrides(tmp / "run", tmp / "data"))
    Pix2PixTrainer(cfg).fit()
    return tmp, cfg


def test_evaluate_and_compare_report_fid_kid(pix2pix_run, monkeypatch, tmp_path):
    tmp, cfg = pix2pix_run
    data = eval_data(cfg, "val")
    result, _ = evaluate(tmp / "run", data, distances=InceptionDistances(random_extractor()))
    assert isinstance(result["FID"], float) and np.isfinite(result["FID"]) and result["FID_images"] == 4
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    missing, _ = evaluate(tmp / "run", data)
    assert "FID/KID unavailable" in missing["FID"]
    comparison = compare_runs(data, [tmp / "run"], distances=InceptionDistances(random_extractor()))
    row = comparison.table[0]
    assert row["FID"] == pytest.approx(result["FID"], rel=1e-9)  # one scoring path: the same figure
    assert any("FID / KID" in note for note in comparison.notes)


def test_sample_evaluate_scores_a_converted_ddpm_with_data_from_a_config(tmp_path):
    """A model from python -m gen.convert has no config.yaml: --data names the images to compare with."""
    run = tiny_export(tmp_path / "converted")
    write_toy(tmp_path / "images" / "test", n=6)
    yaml = tmp_path / "data.yaml"
    yaml.write_text(
        f"method: ddpm\ndata:\n  kind: images\n  root: {tmp_path / 'images'}\n  test: test\n"
        "  preprocess: crop\n  load_size: 8\n  crop_size: 8\nmodel:\n  generator: ddpm_tiny\n"
    )
    proc = run_sample("evaluate", run, "--data", yaml, "--steps", "4", "--output", tmp_path / "eval")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 6 and "ddim 4 steps" in metrics["sampler"]
    assert "FID" in metrics and (tmp_path / "eval" / "grid.png").is_file()
    proc = run_sample("evaluate", run, "--output", tmp_path / "eval2")
    assert proc.returncode == 2 and "--data CONFIG.yaml" in proc.stderr
