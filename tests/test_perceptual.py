"""LPIPS: the code path on random backbone weights; unavailable (not downloaded) without a cache."""
import pytest
import torch

from gen.metrics.perceptual import LPIPS, MetricUnavailable, cached_backbone, try_lpips


def test_lpips_code_path_with_random_backbone():
    torch.manual_seed(0)
    metric = LPIPS("alex", random_backbone=True)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    same = metric(x, x)
    assert same == pytest.approx([0.0, 0.0], abs=1e-6)
    other = metric(x, torch.rand(2, 3, 64, 64) * 2 - 1)
    assert len(other) == 2 and all(d > 0 for d in other)


def test_lpips_reports_unavailable_instead_of_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    assert cached_backbone("alex") is None
    with pytest.raises(
        MetricUnavailable, match="LPIPS unavailable: the alex backbone weights are not cached"
    ):
        LPIPS("alex")
    metric, reason = try_lpips("alex")
    assert metric is None and "not cached" in reason
