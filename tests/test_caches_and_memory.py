"""Issue 24, kinds 3 and 4: every cache is reused only for the data and settings it was built from
(and says so, or says why it is rebuilt); evaluation streams, so what it holds does not grow with
the split (checked structurally: the bytes of image tensors alive at once, for a small and a large
split)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gen.evaluate as evaluate_mod
import gen.methods.cyclegan as cyclegan_mod
import gen.metrics.domain as domain_mod
from gen import config, pipelines
from gen.cache import Cache
from gen.data.evaluation import EvalData
from gen.data.folder import ImageFolder
from gen.data.transforms import Geometry, load_images
from gen.evaluate import CLASSIFIER_FILE, Sampling, domain_classifier, evaluate
from gen.metrics import psnr
from gen.metrics.colorization import AuCAccumulator, auc
from gen.metrics.domain import ClassifierSettings
from gen.metrics.inception import InceptionDistances
from gen.models import create_model
from gen.pipelines.translation import CycleGANPipeline, TranslationPipeline
from test_colorization import colorization_overrides, write_banded
from test_convert_diffusers import tiny_export
from test_inception_metrics import random_extractor
from trainers.colorization import PRIOR_FILE, ColorizationTrainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ClassifierSettings(width=4, epochs=1, min_steps=3, batch=8)  # a classifier trained in milliseconds
GEO = Geometry("resize_and_crop", 36, 32, False)
LOAD, LOAD_EXPORT = pipelines.load, pipelines.load_export


def write_domain(folder: Path, n: int, swap: bool, seed: int, size: int = 40) -> list[Path]:
    """n reddish (swap: bluish) smooth colour fields as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.uniform(0, 1, (4, 4, 3)) * [100, 120, 60] + [150, 40, 20]
        arr = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BILINEAR))
        Image.fromarray(arr[..., ::-1].copy() if swap else arr).save(folder / f"{i:03d}.png")
    return sorted(folder.glob("*.png"))


def train_files(root: Path, n: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    return write_domain(root / "trainA", n, False, seed), write_domain(root / "trainB", n, True, seed + 1)


def weights_of(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- kind 3: caches that know their data

def test_domain_classifier_cache_is_rebuilt_for_other_training_images(tmp_path, capsys):
    """The issue's case: an evaluate on a tiny folder, then on the full data, in the same run dir."""
    run = tmp_path / "run"
    tiny_a, tiny_b = train_files(tmp_path / "tiny", 4)
    first = weights_of(domain_classifier(run, tiny_a, tiny_b, settings=TINY))
    assert (run / CLASSIFIER_FILE).is_file() and (run / (CLASSIFIER_FILE + ".key.json")).is_file()
    assert "reusing" not in capsys.readouterr().out
    stamp = (run / CLASSIFIER_FILE).stat().st_mtime_ns

    again = weights_of(domain_classifier(run, tiny_a, tiny_b, settings=TINY))
    out = capsys.readouterr().out
    assert "domain classifier: reusing" in out and "8 images (4 trainA + 4 trainB)" in out
    assert same_weights(again, first) and (run / CLASSIFIER_FILE).stat().st_mtime_ns == stamp

    full_a, full_b = train_files(tmp_path / "full", 6, seed=10)
    rebuilt = weights_of(domain_classifier(run, full_a, full_b, settings=TINY))
    out = capsys.readouterr().out
    assert f"domain classifier cache in {run / CLASSIFIER_FILE} was built from other 8 images" in out
    assert "now has 12 images (6 trainA + 6 trainB): 12 new, 8 gone" in out and "rebuilding" in out
    fresh = weights_of(domain_classifier(tmp_path / "fresh", full_a, full_b, settings=TINY))
    assert same_weights(rebuilt, fresh) and not same_weights(rebuilt, first)


def test_domain_classifier_cache_is_rebuilt_for_changed_files_settings_labels_or_damage(tmp_path, capsys):
    run = tmp_path / "run"
    a, b = train_files(tmp_path / "data", 4)
    domain_classifier(run, a, b, settings=TINY)
    capsys.readouterr()

    def rebuilt_because(*args, **kw) -> str:
        domain_classifier(run, *args, **kw)
        out = capsys.readouterr().out
        assert "rebuilding" in out, out
        return out

    Image.new("RGB", (40, 40), (200, 30, 30)).save(a[0])  # same name, new content
    os.utime(a[0], ns=(1, 1))  # and an mtime surely unlike the old one
    assert "1 changed (size or time)" in rebuilt_because(a, b, settings=TINY)
    seed1 = dataclasses.replace(TINY, seed=1)
    assert "seed=0 (now 1)" in rebuilt_because(a, b, settings=seed1)
    assert "the same 8 images (4 trainA + 4 trainB) grouped differently" in rebuilt_because(
        b, a, settings=seed1)  # the domains swapped: the labels differ
    (run / CLASSIFIER_FILE).write_bytes(b"not the cached weights")  # replaced behind the key's back
    assert "does not match its record" in rebuilt_because(b, a, settings=seed1)
    (run / (CLASSIFIER_FILE + ".key.json")).unlink()  # a cache written by an older gen: no key
    assert "no readable record" in rebuilt_because(a, b, settings=TINY)
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]  # atomic writes leave nothing behind


def test_evaluate_unpaired_says_it_reuses_its_classifier(cyclegan_export, tmp_path, capsys):
    data = unpaired_data(tmp_path / "data", 2)
    (cyclegan_export / CLASSIFIER_FILE).unlink(missing_ok=True)
    first, _ = evaluate(cyclegan_export, data, grid_rows=1, classifier=TINY)
    assert "reusing" not in capsys.readouterr().out
    second, _ = evaluate(cyclegan_export, data, grid_rows=1, classifier=TINY)
    assert "domain classifier: reusing" in capsys.readouterr().out and second == first


def colour_trainer(run: Path, root: Path, **extra) -> ColorizationTrainer:
    """A colorization trainer with its data and rebalancing weights built (no training)."""
    cfg = config.load(None, colorization_overrides(run, root, **{"colorization.bins": "gamut", **extra}))
    trainer = ColorizationTrainer(cfg)
    trainer.build_data()
    trainer.build()
    return trainer


def test_colorization_prior_follows_the_images_not_the_root_string(tmp_path, capsys):
    root = tmp_path / "data"
    write_banded(root / "train", 6, seed=0)
    write_banded(root / "val", 2, seed=1)
    first = colour_trainer(tmp_path / "run", root).weights
    capsys.readouterr()
    stamp = (tmp_path / "run" / PRIOR_FILE).stat().st_mtime_ns
    assert torch.equal(colour_trainer(tmp_path / "run", root).weights, first)
    out = capsys.readouterr().out
    assert "colorization prior: reusing" in out and "6 images" in out
    assert (tmp_path / "run" / PRIOR_FILE).stat().st_mtime_ns == stamp

    for p in (root / "train").glob("*.png"):  # the same data.root, other photos: grayer ones
        Image.fromarray((np.asarray(Image.open(p)) // 2 + 60).astype(np.uint8)).save(p)
    rebuilt = colour_trainer(tmp_path / "run", root).weights
    out = capsys.readouterr().out
    assert "colorization prior cache in" in out and "6 changed (size or time)" in out and "rebuilding" in out
    assert torch.equal(rebuilt, colour_trainer(tmp_path / "fresh", root).weights)
    assert not torch.equal(rebuilt, first)
    capsys.readouterr()

    colour_trainer(tmp_path / "run", root, **{"data.load_size": 36})  # crops of another resize
    assert "load_size=32 (now 36)" in capsys.readouterr().out
    colour_trainer(tmp_path / "run", root, **{"data.load_size": 36, "colorization.sigma": 2.0})
    assert "sigma=5.0 (now 2.0)" in capsys.readouterr().out


def test_a_given_inception_accumulator_does_not_carry_features_between_evaluations(tmp_path):
    """evaluate twice with the same `distances`: each figure is the one a fresh accumulator gives."""
    run = tiny_export(tmp_path / "ddpm")
    data = EvalData("test", "images", image_folder(tmp_path / "imgs", 4))
    shared = InceptionDistances(random_extractor())
    first, _ = evaluate(run, data, grid_rows=1, sampling=Sampling(steps=2), distances=shared)
    second, _ = evaluate(run, data, grid_rows=1, sampling=Sampling(steps=2), distances=shared)
    alone, _ = evaluate(run, data, grid_rows=1, sampling=Sampling(steps=2), distances=InceptionDistances(
        random_extractor()))
    assert first == second == alone and first["FID_images"] == 4


def test_cache_write_is_atomic_and_reuse_needs_the_same_settings(tmp_path):
    files = write_domain(tmp_path / "x", 2, False, 0)
    cache = Cache(tmp_path / "c.json", "thing", {"images": files}, {"size": (64, 64)}, log=lambda _: None)
    assert not cache.valid()

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.write(crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"] and not cache.valid()
    cache.write(lambda tmp: tmp.write_text("{}"))
    assert cache.valid()  # (64, 64) reads back from JSON as [64, 64]: still the same settings
    assert Cache(tmp_path / "c.json", "thing", {"images": files[:1]}, {"size": (64, 64)}).stale_reason()


# ---------------------------------------------------------------- kind 4: memory flat in the split size

class Alive:
    """Tracks tensors handed out; `peak`: the most bytes of them alive at once."""

    def __init__(self):
        self.refs: list[weakref.ref] = []
        self.peak = 0

    def track(self, t: torch.Tensor) -> torch.Tensor:
        self.refs = [r for r in self.refs if r() is not None] + [weakref.ref(t)]
        alive = sum(r().untyped_storage().nbytes() for r in self.refs if r() is not None)
        self.peak = max(self.peak, alive)
        return t


class Tracked:
    """A pipeline whose every output is tracked."""

    def __init__(self, pipe, alive: Alive):
        self._pipe, self._alive = pipe, alive

    def __call__(self, *args, **kw):
        return self._alive.track(self._pipe(*args, **kw))

    def __getattr__(self, name):
        attr = getattr(self._pipe, name)
        if name in ("sample_numbers", "sample_for"):  # DDPM samples
            return lambda *a, **kw: self._alive.track(attr(*a, **kw))
        if name == "directions":  # both generators of a CycleGAN export
            return {k: Tracked(v, self._alive) for k, v in attr.items()}
        return attr


class TrackedItems:
    """A dataset whose items' tensors are tracked."""

    def __init__(self, items, alive: Alive):
        self.items, self.alive = items, alive

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {k: self.alive.track(v) if torch.is_tensor(v) else v for k, v in self.items[i].items()}


def track(monkeypatch, *modules) -> Alive:
    """Every pipeline output, and every image `modules` read with load_images, tracked.
    (Tensor objects: a view kept of a tracked tensor is not counted, its base tensor is.)"""
    alive = Alive()
    monkeypatch.setattr(pipelines, "load", lambda *a, **kw: Tracked(LOAD(*a, **kw), alive))
    monkeypatch.setattr(pipelines, "load_export", lambda *a, **kw: Tracked(LOAD_EXPORT(*a, **kw), alive))
    for module in modules:
        monkeypatch.setattr(module, "load_images", lambda *a, **kw: alive.track(load_images(*a, **kw)))
    return alive


@pytest.fixture(scope="module")
def cyclegan_export(tmp_path_factory) -> Path:
    """An untrained tiny CycleGAN export: evaluation needs only its two generators."""
    run = tmp_path_factory.mktemp("cyclegan") / "run"
    torch.manual_seed(0)
    nets = [create_model("unet", num_downs=5, ngf=8, norm="instance", dropout=0.0).eval() for _ in range(2)]
    CycleGANPipeline(TranslationPipeline(nets[0], "cyclegan", "eval", "AtoB"),
                     TranslationPipeline(nets[1], "cyclegan", "eval", "BtoA")).save_pretrained(run / "export")
    return run


def unpaired_data(root: Path, n_test: int, n_train: int = 4) -> EvalData:
    a, b = train_files(root, n_train)
    files = {"A": write_domain(root / "testA", n_test, False, 5),
             "B": write_domain(root / "testB", n_test, True, 6), "trainA": a, "trainB": b}
    return EvalData("test", "unpaired", files=files, geometry=GEO)


def test_evaluate_unpaired_streams_the_split(cyclegan_export, tmp_path, monkeypatch):
    peaks, results = [], []
    for n in (3, 12):
        data = unpaired_data(tmp_path / f"d{n}", n)
        (cyclegan_export / CLASSIFIER_FILE).unlink(missing_ok=True)
        alive = track(monkeypatch, cyclegan_mod)  # the test images, not the classifier's training batches
        result, grid = evaluate(cyclegan_export, data, grid_rows=2, classifier=TINY,
                                         distances=InceptionDistances(random_extractor()))
        peaks.append(alive.peak)
        results.append((data, result))
        assert grid.size[1] > 0 and result["images_A"] == result["images_B"] == n
        assert result["FID_images_to_A"] == result["FID_images_to_B"] == n
    assert peaks[0] == peaks[1] > 0, peaks  # images alive at once: the same for 3 and 12 test images
    data, result = results[1]  # and the running means are the per-image means a user would compute
    monkeypatch.undo()
    g_ab = pipelines.load(cyclegan_export, direction="AtoB")
    g_ba = pipelines.load(cyclegan_export, direction="BtoA")
    x = load_images(data.files["A"], GEO, 3)
    assert result["cycle_PSNR_A"] == pytest.approx(np.mean(psnr(g_ba(g_ab(x)), x)), abs=1e-4)
    net = domain_classifier(cyclegan_export, data.files["trainA"], data.files["trainB"], settings=TINY)
    expected = float((domain_mod.predict_domain(net, x) == 0).float().mean())
    assert result["classifier_acc_real_A"] == pytest.approx(expected)


def test_domain_classifier_reads_its_training_images_per_batch(tmp_path, monkeypatch):
    peaks = []
    for n in (4, 16):
        a, b = train_files(tmp_path / f"d{n}", n)
        alive = track(monkeypatch, domain_mod)
        domain_mod.train_domain_classifier(a, b, TINY)
        peaks.append(alive.peak)
    assert peaks[0] == peaks[1] == TINY.batch * 3 * TINY.size ** 2 * 4, peaks  # one batch of float32


def image_folder(folder: Path, n: int) -> ImageFolder:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return ImageFolder(folder, Geometry("none", 16, 16, False), train=False)


def test_evaluate_diffusion_streams_samples_and_real_images(tmp_path, monkeypatch):
    run = tiny_export(tmp_path / "ddpm")
    peaks = []
    for n in (48, 96):  # 3 and 6 batches of 16 (from the third on, the grid rows are held beside them)
        alive = track(monkeypatch)
        data = EvalData("test", "images", TrackedItems(image_folder(tmp_path / f"i{n}", n), alive))
        saved = evaluate_mod.SavedOutputs(tmp_path / f"out{n}")
        result, grid = evaluate(run, data, grid_rows=2, sampling=Sampling(steps=1), saved=saved,
                                distances=InceptionDistances(random_extractor()))
        peaks.append(alive.peak)
        assert result["images"] == result["FID_images"] == saved.count == n
        assert len(list((tmp_path / f"out{n}").glob("sample_*.png"))) == n
    assert peaks[0] == peaks[1], peaks  # one batch of 16 samples and 16 real images, whatever the split


def test_auc_accumulator_state_is_flat_and_exact():
    """Both AuCs equal the pooled-pixel formulas, from a histogram whose size does not grow."""
    gen = torch.Generator().manual_seed(0)
    acc, errors, bins, sizes = AuCAccumulator(10), [], [], []
    for _ in range(12):
        pred, true = torch.randn(2, 2, 8, 8, generator=gen) * 60, torch.randn(2, 2, 8, 8, generator=gen) * 60
        b = torch.randint(0, 7, (2, 8, 8), generator=gen)  # bins 7..9 never occur
        acc.update(pred, true, b)
        errors.append((pred - true).norm(dim=1).flatten().numpy())
        bins.append(b.flatten().numpy())
        sizes.append(sum(v.nbytes for v in vars(acc).values() if isinstance(v, np.ndarray)))
    err, b = np.concatenate(errors), np.concatenate(bins)
    counts = np.bincount(b, minlength=10).astype(np.float64)
    scores = acc.scores()
    assert scores["AuC"] == pytest.approx(auc(err), abs=1e-12)
    assert scores["AuC_rebalanced"] == pytest.approx(auc(err, 1.0 / counts[b]), abs=1e-12)
    assert len(set(sizes)) == 1 and not any(isinstance(v, list) for v in vars(acc).values())


def test_sample_cli_writes_unconditional_samples_as_they_come(tmp_path, monkeypatch, capsys):
    """sample.py --num N keeps one batch and the grid's first 64 samples, not all N."""
    sys.path.insert(0, str(ROOT))
    import sample

    run = tiny_export(tmp_path / "ddpm")
    peaks = []
    for n in (72, 144):
        alive = track(monkeypatch)
        out = tmp_path / f"s{n}"
        assert sample.main([str(run), "--num", str(n), "--steps", "1", "--batch-size", "8",
                            "--output", str(out)]) == 0
        peaks.append(alive.peak)
        assert len(list(out.glob("sample_*.png"))) == n and f"wrote {n} samples" in capsys.readouterr().out
        assert Image.open(out / "grid.png").size == Image.open(tmp_path / "s72" / "grid.png").size
    assert peaks[0] == peaks[1], peaks


def test_cache_key_file_is_plain_json(tmp_path):
    a, b = train_files(tmp_path / "d", 2)
    domain_classifier(tmp_path / "run", a, b, settings=TINY)
    key = json.loads((tmp_path / "run" / (CLASSIFIER_FILE + ".key.json")).read_text())
    assert [e[0] for e in key["files"]["trainA"]] == [str(p.resolve()) for p in a]
    assert key["settings"]["width"] == TINY.width and len(key["sha256"]) == 64


def test_a_copy_of_the_same_data_reuses_the_cache(tmp_path):
    """Files whose times alone changed (copied or synced without their times) are compared by the
    SHA-256 recorded at build time: the same bytes reuse the cache, other bytes of the same size
    rebuild it; a record from before digests were kept rebuilds."""
    files = [tmp_path / "x" / f"{i}.bin" for i in range(3)]
    files[0].parent.mkdir()
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 100)
    lines = []
    cache = lambda: Cache(tmp_path / "c.json", "thing", {"images": files}, {"k": 1}, log=lines.append)  # noqa: E731
    cache().write(lambda tmp: tmp.write_text("{}"))
    for f in files:
        os.utime(f, ns=(10**18, 10**18))  # a copy: new times, the same bytes
    assert cache().valid() and "only file times changed" in lines[-1]
    key = json.loads((tmp_path / "c.json.key.json").read_text())
    assert [e[2] for e in key["files"]["images"]] == [10**18] * 3  # the new times recorded
    assert cache().valid() and "(paths, sizes, times)" in lines[-1]  # and the next check reads no file
    files[1].write_bytes(bytes([9]) * 100)  # the same size, other bytes
    os.utime(files[1], ns=(2 * 10**18, 2 * 10**18))
    assert not cache().valid() and "1 changed (size or time)" in lines[-1]
    cache().write(lambda tmp: tmp.write_text("{}"))
    stored = json.loads((tmp_path / "c.json.key.json").read_text())
    del stored["contents"]  # written by a gen that kept no digests
    (tmp_path / "c.json.key.json").write_text(json.dumps(stored))
    os.utime(files[2], ns=(3 * 10**18, 3 * 10**18))
    assert not cache().valid() and "rebuilding" in lines[-1]


def test_domain_classifier_survives_a_copied_data_set(tmp_path, capsys):
    run = tmp_path / "run"
    a, b = train_files(tmp_path / "data", 3)
    domain_classifier(run, a, b, settings=TINY)
    weights = (run / CLASSIFIER_FILE).read_bytes()
    capsys.readouterr()
    for f in a + b:
        os.utime(f, ns=(10**18, 10**18))
    domain_classifier(run, a, b, settings=TINY)
    out = capsys.readouterr().out
    assert "reusing" in out and "only file times changed" in out and "rebuilding" not in out
    assert (run / CLASSIFIER_FILE).read_bytes() == weights


def test_a_file_rewritten_during_the_build_is_not_vouched_for(tmp_path):
    """Digests are recorded only for files unchanged since the key was read; a record another process
    rewrote between the check and the refresh of times is left alone."""
    f = tmp_path / "a.bin"
    f.write_bytes(b"old")
    cache = Cache(tmp_path / "c.json", "thing", {"images": [f]}, {}, log=lambda _: None)

    def build(tmp):
        f.write_bytes(b"new")  # rewritten while the cache is built from it
        os.utime(f, ns=(10**18, 10**18))
        tmp.write_text("{}")
    cache.write(build)
    assert "contents" not in json.loads((tmp_path / "c.json.key.json").read_text())
    assert not Cache(tmp_path / "c.json", "thing", {"images": [f]}, {}, log=lambda _: None).valid()

    Cache(tmp_path / "c.json", "thing", {"images": [f]}, {}).write(lambda tmp: tmp.write_text("{}"))
    os.utime(f, ns=(2 * 10**18, 2 * 10**18))
    racing = Cache(tmp_path / "c.json", "thing", {"images": [f]}, {}, log=lambda _: None)
    assert racing.stale_reason() is None and racing.same_by_contents
    key = tmp_path / "c.json.key.json"
    other = dict(json.loads(key.read_text()), sha256="0" * 64)  # another process's rebuild landed
    key.write_text(json.dumps(other))
    racing._refresh_times()
    assert json.loads(key.read_text()) == other
