"""An offline sample-quality score for 32x32 RGB image generators: the Frechet distance (Heusel et al.
2017) and KID (Binkowski et al. 2018) in the penultimate features of a small CIFAR-10 classifier
trained here, reported as FD_cifarnet / KID_cifarnet. They are not FID / KID: the features are not
Inception's, so the figures are comparable only with each other (same classifier settings and data,
equal image counts), never with published FIDs. They exist because Inception's weights cannot be
downloaded everywhere (gen/metrics/inception.py reports FID only when they are cached).

The classifier (CifarNet: seven 3x3 conv + BatchNorm + ReLU layers, one at 32 px and two at each of
16, 8 and 4 px, widths w to 8w, global average pool -> 8w features -> 10 logits) is trained once on
`train/<class>/*.png` of a CIFAR-10 folder and cached, keyed by the training and test files and its
settings (gen.cache.Cache); its accuracy on `test/<class>/*.png` is stored in the cache file's
metadata and reported beside the score, so the score can be trusted or not. The distance math is
torchmetrics' (FrechetInceptionDistance and KernelInceptionDistance fed these features, through
InceptionDistances).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cache import Cache
from ..data.download import sha256_of
from ..data.image_io import load_image
from ..data.listing import scan_images
from ..data.transforms import sample_generator
from .inception import InceptionDistances

SIZE = 32  # the classifier reads CIFAR-10's 32x32 RGB images
CACHE_FILE = "cifar10_classifier.safetensors"
# the default CIFAR-10 folder: the project's shared data beside the checkout (absent in a user's clone)
DEFAULT_CIFAR10 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
# InceptionDistances' keys -> this score's names (what they are computed in is in the name)
NAMES = {"FID": "FD_cifarnet", "KID": "KID_cifarnet", "KID_std": "KID_cifarnet_std",
         "FID_images": "FD_cifarnet_images"}


def cache_dir() -> Path:
    """Where the classifier is cached: $GEN_CACHE, else $XDG_CACHE_HOME/gen, else ~/.cache/gen (one per
    user, shared by every run: it depends on the CIFAR-10 files and its settings, not on a run)."""
    if os.environ.get("GEN_CACHE"):
        return Path(os.environ["GEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gen"


class CifarNet(nn.Module):
    """x: (B, 3, 32, 32) in [-1, 1] -> logits (B, classes); features(x) -> (B, 8 * width)."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        layers, c = [], 3
        # one conv at 32 px, then two per level at 16, 8 and 4 px: the compute goes where the features are
        widths = (width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width)
        for level, out in enumerate(widths):
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            if level in (0, 2, 4):
                layers.append(nn.MaxPool2d(2))  # 32 -> 16 -> 8 -> 4
            c = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)
        self.num_features = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))  # (B, 8w): the penultimate layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class CifarNetSettings:
    """Everything that shapes the trained classifier (the cache key, with the files): SGD with Nesterov
    momentum 0.9, a triangular LR (up to `lr` over the first quarter of the steps, down to 0), weight
    decay, label smoothing 0.1; each training image randomly shifted by up to `pad` pixels (zero
    padding, crop back to 32) and flipped."""

    width: int = 32
    epochs: int = 18
    batch: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    pad: int = 4
    seed: int = 0


@dataclass
class CifarImages:
    """One split of a CIFAR-10 folder: uint8 images (N, 3, 32, 32), labels (N,), the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def class_files(folder: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} of `folder`/<class>/; FileNotFoundError / ValueError naming the
    folder when it is missing or has fewer than 2 class folders with images."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (a CIFAR-10 folder holds train/<class>/*.png and "
                                "test/<class>/*.png)")
    classes = {d.name: scan_images(d).files for d in sorted(folder.iterdir()) if d.is_dir()}
    classes = {k: sorted(v) for k, v in classes.items() if v}
    if len(classes) < 2:
        raise ValueError(f"{folder}: expected one subfolder of images per class (airplane/, automobile/, "
                         f"...), found {len(classes)} with images")
    return classes


def cifar10_files(root: Path) -> tuple[list[str], dict[str, list[Path]]]:
    """(class names, {"train": files, "test": files}) of a CIFAR-10 folder; ValueError when the two
    splits have different classes."""
    train, test = class_files(root / "train"), class_files(root / "test")
    if list(train) != list(test):
        raise ValueError(f"{root}: train/ has classes {list(train)} but test/ has {list(test)}")
    return list(train), {"train": [f for fs in train.values() for f in fs],
                         "test": [f for fs in test.values() for f in fs]}


def load_split(folder: Path, classes: list[str]) -> CifarImages:
    """Every image of `folder`/<class>/ in memory (CIFAR-10's 5,000 training images: 15 MB as uint8);
    ValueError naming a file that is not 32x32."""
    images, labels, files = [], [], class_files(folder)
    for k, name in enumerate(classes):
        for f in files[name]:
            a = np.asarray(load_image(f, 3))
            if a.shape != (SIZE, SIZE, 3):
                raise ValueError(f"{f}: {a.shape[1]}x{a.shape[0]}, the CIFAR-10 classifier reads "
                                 f"{SIZE}x{SIZE}")
            images.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
            labels.append(k)
    return CifarImages(torch.stack(images), torch.tensor(labels), classes)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) in 0..255 -> float (N, 3, H, W) in [-1, 1]."""
    return images.float() / 127.5 - 1


def _augment(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """x: (B, 3, 32, 32) -> each image shifted by up to `pad` px (zeros enter) and flipped with p 1/2."""
    b = len(x)
    padded = F.pad(x, (pad,) * 4)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    out = torch.stack([padded[i, :, t:t + SIZE, l:l + SIZE] for i, (t, l) in enumerate(offsets.tolist())])
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_cifarnet(train: CifarImages, settings: CifarNetSettings = CifarNetSettings(),
                   device: str | torch.device = "cpu") -> CifarNet:
    """The classifier trained on `train` (one pass over a fresh shuffle per epoch); the same weights for
    the same images, settings and device (seeded by settings.seed; the global RNG is left as it was)."""
    s = settings
    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        net = CifarNet(s.width, len(train.classes)).to(device)
    decay = [p for p in net.parameters() if p.ndim > 1]  # conv / linear weights; not BN or biases
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": s.weight_decay}, {"params": rest}],
                          lr=s.lr, momentum=0.9, nesterov=True)
    total = s.epochs * -(-len(train.labels) // s.batch)
    warm = max(1, total // 4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min((t + 1) / warm, (total - t) / (total - warm + 1)))  # up over a quarter, down to 0
    gen = sample_generator(s.seed, 0)
    x_all = to_unit(train.images)
    from tqdm.auto import tqdm
    net.train()
    for _ in tqdm(range(s.epochs), desc="CIFAR-10 classifier (epochs)", dynamic_ncols=True):
        order = torch.randperm(len(train.labels), generator=gen)
        for idx in order.split(s.batch):
            x = _augment(x_all[idx], s.pad, gen).to(device)
            loss = F.cross_entropy(net(x), train.labels[idx].to(device), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: CifarNet, split: CifarImages, batch: int = 256) -> float:
    """Share of `split`'s images whose argmax logit is their class, in 0..1."""
    device = next(net.parameters()).device
    right = sum(int((net(to_unit(x).to(device)).argmax(1).cpu() == y).sum())
                for x, y in zip(split.images.split(batch), split.labels.split(batch)))
    return right / len(split.labels)


def _load(path: Path, device, expect_sha: Optional[str]) -> tuple[CifarNet, dict]:
    """(classifier, record with `sha256`) from one read of `path`, whose digest must be `expect_sha`
    (what the cache check validated): the weights, the record and the checked file are one file even
    if another process replaces the cache meanwhile. ValueError naming the file if it is not readable."""
    from safetensors.torch import load

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha is not None and digest != expect_sha:
        raise RuntimeError(f"{path} changed while it was being read (another process rebuilt it?); run again")
    try:
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])  # the safetensors layout
        meta = json.loads(header["__metadata__"]["classifier"])
        net = CifarNet(meta["width"], len(meta["classes"]))
        net.load_state_dict(load(data))
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR-10 classifier ({type(err).__name__}: {err}); "
                         "delete it to train it again") from None
    return net.eval().to(device or "cpu"), dict(meta, sha256=digest)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def cifar_classifier(root: Path, settings: CifarNetSettings = CifarNetSettings(),
                     folder: Optional[Path] = None, device: Optional[str] = None,
                     log: Callable[[str], None] = print) -> tuple[CifarNet, dict]:
    """(classifier, its record) trained on `root`/train and tested on `root`/test, cached in `folder`
    (default cache_dir()) and reused only while those files (paths, sizes, times) and `settings` are
    the ones it was built from. The record (the cache file's metadata): width, classes,
    test_accuracy (0..1), test_images, train_images, train_seconds, cpu, threads, device.

    `root` absent: the cached classifier if its file matches its record and settings (its training files
    cannot be re-checked: a line says so); FileNotFoundError otherwise."""
    path = (folder or cache_dir()) / CACHE_FILE
    key = {"version": 1, **asdict(settings)}
    if not root.is_dir():
        reason = _unchecked_reason(path, key)
        if reason:
            raise FileNotFoundError(f"no CIFAR-10 folder at {root} to train the classifier on, and {reason}")
        log(f"CIFAR-10 classifier: reusing {path}; its training files ({root}) are not here to re-check")
        return _load(path, device, _recorded_sha(path))
    classes, files = cifar10_files(root)
    cache = Cache(path, "CIFAR-10 classifier", files, key, log=log)
    if cache.valid():
        return _load(path, device, cache.validated_sha)
    log(f"CIFAR-10 classifier: training on the {len(files['train'])} images of {root / 'train'} "
        f"(once; cached in {path})")
    train, test = load_split(root / "train", classes), load_split(root / "test", classes)
    start = time.perf_counter()
    net = train_cifarnet(train, settings, device or "cpu")
    seconds = time.perf_counter() - start
    meta = {"width": settings.width, "classes": classes, "test_accuracy": accuracy(net, test),
            "test_images": len(test.labels), "train_images": len(train.labels),
            "train_seconds": round(seconds, 1), "cpu": _cpu_name(), "threads": torch.get_num_threads(),
            "device": str(device or "cpu")}
    from safetensors.torch import save

    weights = {k: v.cpu().contiguous() for k, v in net.state_dict().items()}
    blob = save(weights, metadata={"classifier": json.dumps(meta)})
    cache.write(lambda tmp: Path(tmp).write_bytes(blob))
    return net, dict(meta, sha256=hashlib.sha256(blob).hexdigest())  # FD_cifarnet compares under one


def _recorded_sha(path: Path) -> Optional[str]:
    try:
        return json.loads(path.with_name(path.name + ".key.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _unchecked_reason(path: Path, key: dict) -> str:
    """'' when `path` holds a classifier matching its key record and `key`'s settings, else why not."""
    record = path.with_name(path.name + ".key.json")
    if not path.is_file():
        return f"no classifier is cached at {path}"
    try:
        stored = json.loads(record.read_text())
        ok = stored["sha256"] == sha256_of(path)
        same = stored["settings"] == json.loads(json.dumps(key))
    except (OSError, ValueError, KeyError, TypeError):
        return f"the classifier cached at {path} has no readable record ({record.name})"
    if not ok:
        return f"the classifier cached at {path} does not match its record (replaced, or half-written)"
    return "" if same else f"the classifier cached at {path} was built with other settings"


class CifarFeatures(nn.Module):
    """uint8 (N, 3, 32, 32) in 0..255 -> (N, 8w) penultimate CifarNet features (float32), the extractor
    InceptionDistances hands to torchmetrics; ValueError for any other shape."""

    def __init__(self, net: CifarNet):
        super().__init__()
        self.net, self.num_features = net.eval(), net.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, SIZE, SIZE):
            raise ValueError(f"the CIFAR-10 classifier reads (N, 3, {SIZE}, {SIZE}) images, got "
                             f"{tuple(images.shape)}")
        return self.net.features(to_unit(images))


class CifarDistances:
    """FD_cifarnet / KID_cifarnet between real and generated images: InceptionDistances (torchmetrics'
    Frechet distance and KID) on CifarNet features, its keys renamed (NAMES). Images go in as
    (B, 3, 32, 32) in [-1, 1]. `record`: the classifier's (test_accuracy ...)."""

    def __init__(self, net: CifarNet, record: Optional[dict] = None, device=None,
                 _distances: Optional[InceptionDistances] = None):
        self.net, self.record = net, record or {}
        self.distances = _distances or InceptionDistances(CifarFeatures(net), device)

    def fresh(self) -> "CifarDistances":
        """An empty accumulator on the same classifier."""
        return CifarDistances(self.net, self.record, _distances=self.distances.fresh())

    def add_real(self, images: torch.Tensor) -> None:
        self.distances.add_real(images)

    def add_fake(self, run: str, images: torch.Tensor) -> None:
        self.distances.add_fake(run, images)

    def report(self, run: str) -> dict:
        """{"FD_cifarnet", "KID_cifarnet", "KID_cifarnet_std", "FD_cifarnet_images",
        "cifarnet_test_accuracy", "cifarnet_sha256" (the classifier file's, 16 hex digits)}, or the
        reason under FD_cifarnet / KID_cifarnet."""
        scores = {NAMES[k]: v for k, v in self.distances.report(run).items()}
        if "test_accuracy" in self.record:
            scores["cifarnet_test_accuracy"] = self.record["test_accuracy"]
        if "sha256" in self.record:  # which classifier: figures under another one do not compare
            scores["cifarnet_sha256"] = self.record["sha256"][:16]
        return scores

    def describe(self) -> str:
        r = self.record
        acc = (f", {100 * r['test_accuracy']:.1f}% test accuracy on {r['test_images']} CIFAR-10 test images"
               if "test_accuracy" in r else "")
        return (f"FD_cifarnet / KID_cifarnet: Frechet distance and KID in the {self.net.num_features} "
                f"penultimate features of gen's CIFAR-10 classifier{acc} (not FID: comparable only with "
                "each other, at equal image counts)")


def unavailable_for(channels: int, size: tuple[int, int]) -> str:
    """Why images of `channels` x size cannot be scored ('' when they can: 3 x 32x32)."""
    if channels == 3 and tuple(size) == (SIZE, SIZE):
        return ""
    return (f"FD_cifarnet / KID_cifarnet unavailable: the CIFAR-10 classifier reads 3-channel {SIZE}x{SIZE} "
            f"images, these are {channels}-channel {size[0]}x{size[1]}")


def try_cifar_distances(cifar10: Optional[Path] = None, device=None,
                        settings: CifarNetSettings = CifarNetSettings(), folder: Optional[Path] = None,
                        log: Callable[[str], None] = print) -> tuple[Optional[CifarDistances], str]:
    """(CifarDistances, '') or (None, why the score is unavailable). cifar10: the CIFAR-10 folder
    (train/<class>/, test/<class>/); None: DEFAULT_CIFAR10, and when that is absent the cached classifier
    or the reason. A folder given but missing is a FileNotFoundError (a flag given always acts)."""
    root = Path(cifar10) if cifar10 is not None else DEFAULT_CIFAR10
    if cifar10 is not None and not root.is_dir():
        raise FileNotFoundError(f"--cifar10 {cifar10}: no such folder (expected train/<class>/*.png and "
                                "test/<class>/*.png)")
    try:
        net, record = cifar_classifier(root, settings, folder, device, log)
    except FileNotFoundError as err:
        return None, (f"FD_cifarnet / KID_cifarnet unavailable: {err}; pass --cifar10 DIR (a CIFAR-10 folder "
                      "with train/<class>/*.png and test/<class>/*.png)")
    log(f"CIFAR-10 classifier: {100 * record['test_accuracy']:.1f}% test accuracy on {record['test_images']} "
        "images")
    return CifarDistances(net, record, device), ""
