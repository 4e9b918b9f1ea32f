"""FD_cifarnet / KID_cifarnet (gen/metrics/offline_score.py): the distances against hand computation on
known features, KID's unbiasedness, the classifier's cache (reused, rebuilt on other files or settings,
used without its data), the unavailable reasons, and evaluate / compare of tiny unconditional DDPMs.
The real classifier (trained on ../shared/data/cifar10) is checked by the slow test only."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import run_sample
from gen.compare import compare_runs
from gen.data.evaluation import EvalData
from gen.data.folder import ImageFolder
from gen.data.transforms import Geometry
from gen.evaluate import evaluate
from gen.methods import Sampling
from gen.metrics import offline_score
from gen.metrics.inception import InceptionDistances
from gen.metrics.offline_score import (CifarDistances, CifarFeatures, CifarNet, CifarNetSettings,
                                       cifar_classifier, train_cifarnet, try_cifar_distances)
from test_convert_diffusers import tiny_export as tiny_export_16

TINY = CifarNetSettings(width=4, epochs=2, batch=8)  # trained in well under a second


def tiny_export(path, sample_size: int = 16):
    """test_convert_diffusers' random-weight ddpm_tiny export, sampling sample_size x sample_size."""
    from gen.pipelines import load_export

    tiny_export_16(path)
    pipe = load_export(path)
    pipe.sample_size = sample_size
    pipe.save_export(path / "export")
    return path


class MeanColour(nn.Module):
    """uint8 (N, 3, H, W) -> (N, 3) mean colour: features simple enough to check the distances by hand."""

    num_features = 3

    def forward(self, x):
        return x.float().mean(dim=(2, 3))


def flat_images(values: np.ndarray, size: int = 32) -> torch.Tensor:
    """values: (N, 3) integers 0..255 -> (N, 3, size, size) flat images in [-1, 1] (exact in uint8)."""
    x = torch.as_tensor(values, dtype=torch.float64) / 127.5 - 1
    return x[:, :, None, None].expand(-1, -1, size, size).float()


def mean_colour_distances() -> CifarDistances:
    return CifarDistances(CifarNet(4), _distances=InceptionDistances(MeanColour()))


def test_frechet_distance_of_a_set_with_itself_is_zero_and_of_a_shift_or_scale_as_by_hand():
    rng = np.random.default_rng(0)
    v = rng.integers(40, 120, (64, 3))
    d = mean_colour_distances()
    d.add_real(flat_images(v))
    d.add_fake("same", flat_images(v))
    d.add_fake("shift", flat_images(v + [10, 0, 5]))
    d.add_fake("double", flat_images(2 * v))
    assert abs(d.report("same")["FD_cifarnet"]) < 1e-3
    # equal covariances: the distance is the squared shift of the means, 10^2 + 5^2
    assert d.report("shift")["FD_cifarnet"] == pytest.approx(125.0, rel=1e-6)
    # features doubled: |mu - 2 mu|^2 + tr(S + 4 S - 2 (4 S^2)^(1/2)) = |mu|^2 + tr(S) (S unbiased, n - 1)
    mu, cov = v.mean(0), np.cov(v.T)
    assert d.report("double")["FD_cifarnet"] == pytest.approx(mu @ mu + np.trace(cov), rel=1e-6)
    assert d.report("shift")["FD_cifarnet_images"] == 64


def test_kid_is_unbiased_about_zero_for_one_distribution_and_positive_for_two():
    """The unbiased MMD^2 of two draws of one distribution scatters about 0 (negative for some seeds,
    which a biased estimate never is); a shifted set scores far above that scatter."""
    same, shifted = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        d = mean_colour_distances()
        d.add_real(flat_images(rng.integers(60, 200, (200, 3))))
        d.add_fake("same", flat_images(rng.integers(60, 200, (200, 3))))
        d.add_fake("shift", flat_images(rng.integers(60, 200, (200, 3)) + 40))
        same.append(d.report("same")["KID_cifarnet"])
        shifted.append(d.report("shift")["KID_cifarnet"])
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 0.05 * min(shifted)


def write_cifar(root, per_class=(6, 2), classes=("cat", "ship"), size=32, seed=0):
    """A CIFAR-10-like folder: train/<class>/ and test/<class>/ of random images tinted by class."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, (size, size, 3)) + 120 * np.eye(3, dtype=int)[k]
                Image.fromarray(img.astype(np.uint8)).save(root / split / name / f"{name}_{i}.png")
    return root


def test_classifier_is_cached_reused_and_rebuilt_on_other_files_or_settings(tmp_path):
    root, lines = write_cifar(tmp_path / "cifar"), []
    net, record = cifar_classifier(root, TINY, tmp_path / "cache", log=lines.append)
    assert (tmp_path / "cache" / offline_score.CACHE_FILE).is_file()
    assert record["classes"] == ["cat", "ship"]
    assert record["test_images"] == 4 and record["train_images"] == 12
    assert 0 <= record["test_accuracy"] <= 1 and "training on the 12 images" in lines[-1]
    again, record2 = cifar_classifier(root, TINY, tmp_path / "cache", log=lines.append)
    assert "reusing" in lines[-1] and record2 == record  # the record is read back from the file's metadata
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    changed = root / "test" / "cat" / "cat_0.png"
    os.utime(changed, ns=(1, 1))  # a copy of the same image (new time): the same classifier
    cifar_classifier(root, TINY, tmp_path / "cache", log=lines.append)
    assert "reusing" in lines[-1] and "only file times changed" in lines[-1]
    Image.fromarray(255 - np.asarray(Image.open(changed))).save(changed)  # changed: the accuracy is stale
    os.utime(changed, ns=(2, 2))
    cifar_classifier(root, TINY, tmp_path / "cache", log=lines.append)
    assert "1 changed (size or time); rebuilding" in lines[-2]
    cifar_classifier(root, CifarNetSettings(width=4, epochs=1, batch=8), tmp_path / "cache", log=lines.append)
    assert "was built with epochs=2 (now 1); rebuilding" in lines[-2]


def test_classifier_learns_classes_it_can_tell_apart(tmp_path):
    """Learning on tiny data: classes tinted red and green are told apart on held-out test images."""
    root = write_cifar(tmp_path / "cifar", per_class=(8, 8))
    _, record = cifar_classifier(root, CifarNetSettings(width=8, epochs=10, batch=4), tmp_path / "cache",
                                 log=lambda _: None)
    assert record["test_accuracy"] == 1.0 and record["test_images"] == 16


def test_training_is_deterministic_under_its_seed(tmp_path):
    root = write_cifar(tmp_path / "cifar")
    train = offline_score.load_split(root / "train", ["cat", "ship"])
    a, b = train_cifarnet(train, TINY), train_cifarnet(train, TINY)
    c = train_cifarnet(train, CifarNetSettings(width=4, epochs=2, batch=8, seed=1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)


def test_without_cifar10_the_cache_is_used_else_the_score_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(offline_score, "DEFAULT_CIFAR10", tmp_path / "absent")
    monkeypatch.setenv("GEN_CACHE", str(tmp_path / "cache"))
    distances, reason = try_cifar_distances(settings=TINY)
    assert distances is None and "no CIFAR-10 folder at" in reason and "--cifar10 DIR" in reason
    with pytest.raises(FileNotFoundError, match="--cifar10 .*no such folder"):
        try_cifar_distances(tmp_path / "also_absent", settings=TINY)
    root, lines = write_cifar(tmp_path / "cifar"), []
    assert try_cifar_distances(root, settings=TINY, log=lines.append)[0] is not None  # trains, caches
    distances, reason = try_cifar_distances(settings=TINY, log=lines.append)  # data gone, cache kept
    assert reason == "" and "not here to re-check" in lines[-2]
    assert distances.record["test_images"] == 4
    distances, reason = try_cifar_distances(settings=CifarNetSettings(width=8), log=lines.append)
    assert distances is None and "built with other settings" in reason


def test_features_refuse_images_that_are_not_32x32_rgb():
    feats = CifarFeatures(CifarNet(4))
    assert feats(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 32)
    with pytest.raises(ValueError, match=r"reads \(N, 3, 32, 32\) images, got \(2, 3, 64, 64\)"):
        feats(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert "these are 1-channel 32x32" in offline_score.unavailable_for(1, (32, 32))


def image_data(folder, n: int, size: int) -> EvalData:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return EvalData("test", "images", ImageFolder(folder, Geometry("none", size, size, False), train=False))


def test_evaluate_of_unconditional_ddpm_reports_the_score_or_why_not(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN_CACHE", str(tmp_path / "cache"))
    cifar = write_cifar(tmp_path / "cifar")
    monkeypatch.setattr(offline_score, "DEFAULT_CIFAR10", cifar)
    run32 = tiny_export(tmp_path / "r32", sample_size=32)
    tiny = try_cifar_distances(cifar, settings=TINY)[0]
    result, _ = evaluate(run32, image_data(tmp_path / "i32", 6, 32), sampling=Sampling(steps=1), cifar=tiny)
    assert result["FD_cifarnet_images"] == 6 and result["FD_cifarnet"] > 0
    assert np.isfinite(result["KID_cifarnet"])
    assert result["cifarnet_test_accuracy"] == tiny.record["test_accuracy"]
    from gen.data.download import sha256_of  # the classifier the figures were computed in
    assert result["cifarnet_sha256"] == sha256_of(tmp_path / "cache" / offline_score.CACHE_FILE)[:16]
    # real images of another size: the samples are 32x32 but nothing CIFAR-like to compare them with
    result, _ = evaluate(run32, image_data(tmp_path / "i16", 4, 16), sampling=Sampling(steps=1), cifar=tiny)
    assert "the real images are 3-channel 16x16" in result["FD_cifarnet"]
    result, _ = evaluate(tiny_export(tmp_path / "r16"), image_data(tmp_path / "j16", 4, 16),
                         sampling=Sampling(steps=1), cifar=tiny)
    assert "reads 3-channel 32x32 images, these are 3-channel 16x16" in result["KID_cifarnet"]


def test_sample_evaluate_and_compare_report_the_score_with_cifar10_given(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(offline_score, "DEFAULT_CIFAR10", tmp_path / "absent")
    cifar = write_cifar(tmp_path / "cifar")
    real = image_data(tmp_path / "images" / "test", 4, 32)
    run = tiny_export(tmp_path / "run", sample_size=32)
    yaml = tmp_path / "data.yaml"
    yaml.write_text(f"method: ddpm\ndata:\n  kind: images\n  root: {tmp_path / 'images'}\n  test: test\n"
                    "  preprocess: crop\n  load_size: 32\n  crop_size: 32\nmodel:\n  generator: ddpm_tiny\n")
    proc = run_sample("evaluate", run, "--data", yaml, "--steps", "1", "--output", tmp_path / "e0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "e0" / "metrics.json").read_text())
    assert "no CIFAR-10 folder at" in metrics["FD_cifarnet"] and "--cifar10 DIR" in metrics["KID_cifarnet"]
    proc = run_sample("evaluate", run, "--data", yaml, "--steps", "1", "--output", tmp_path / "e1",
                      "--cifar10", cifar)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    assert metrics["FD_cifarnet"] > 0 and metrics["FD_cifarnet_images"] == 4
    assert "test accuracy on 4 images" in proc.stdout
    comparison = compare_runs(real, [run], sampling=Sampling(steps=1), cifar10=cifar)
    row = comparison.table[0]
    assert "LPIPS" not in row  # an unconditional sample has no target to be compared with
    # one scoring path: the same samples; features of batches of 16 (evaluate) and of 1 (compare) round apart
    assert row["FD_cifarnet"] == pytest.approx(metrics["FD_cifarnet"], rel=1e-5)
    assert any("FD_cifarnet / KID_cifarnet: Frechet distance" in note for note in comparison.notes)
    proc = run_sample("evaluate", tiny_export(tmp_path / "r16"), "--data", yaml, "--cifar10", cifar,
                      "--output", tmp_path / "e2")
    assert proc.returncode == 0, proc.stderr[-2000:]  # a 16 px model: unavailable, said why
    metrics = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert "these are 3-channel 16x16" in metrics["FD_cifarnet"]


@pytest.mark.slow
def test_real_classifier_on_cifar10_is_accurate_and_its_distances_order_real_and_noise(shared_data):
    """The real settings on ../shared/data/cifar10: test accuracy, and real test images far closer to
    real training images than uniform noise is. Trains the classifier into the user's cache (as
    sample.py evaluate would: minutes) or reuses the one there."""
    root = shared_data / "cifar10"
    distances, reason = try_cifar_distances(root)
    assert reason == "" and distances.record["test_accuracy"] > 0.7
    classes = distances.record["classes"]
    train = offline_score.load_split(root / "train", classes).images  # all 5,000: sorted by class
    test = offline_score.load_split(root / "test", classes).images
    distances.add_real(offline_score.to_unit(train))
    distances.add_fake("test", offline_score.to_unit(test))
    noise = torch.rand(1000, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    distances.add_fake("noise", noise)
    assert distances.report("test")["FD_cifarnet"] * 50 < distances.report("noise")["FD_cifarnet"]  # 0.14, 42


def test_a_cached_classifier_is_read_once_and_a_broken_one_is_named(tmp_path):
    """The weights, the reported digest and the validated file are one read; bytes that do not match
    the validated digest (replaced meanwhile) or that are not a classifier are errors naming the file."""
    import hashlib
    root = write_cifar(tmp_path / "cifar")
    net, record = cifar_classifier(root, TINY, tmp_path / "cache", log=lambda _: None)
    path = tmp_path / "cache" / offline_score.CACHE_FILE
    loaded, again = offline_score._load(path, None, record["sha256"])
    assert again == record and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                        loaded.state_dict().values()))
    with pytest.raises(RuntimeError, match="changed while it was being read"):
        offline_score._load(path, None, "0" * 64)
    path.write_bytes(b"\x08" + b"\x00" * 7 + b"not json")  # its record rewritten to match: only the
    key = path.with_name(path.name + ".key.json")          # contents are wrong
    key.write_text(json.dumps(dict(json.loads(key.read_text()),
                                   sha256=hashlib.sha256(path.read_bytes()).hexdigest())))
    with pytest.raises(ValueError, match=f"{path}.*not a readable CIFAR-10 classifier"):
        cifar_classifier(root, TINY, tmp_path / "cache", log=lambda _: None)
