"""DataConfig -> datasets: the one place that maps configuration to gen.data objects."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from torch.utils.data import Dataset

from ..config import DataConfig, ExperimentConfig
from .evaluation import EvalData
from .listing import data_report, scan_images
from .builtin import builtin_pairs
from .folder import ImageFolder
from .pairs import AlignedPairs, FolderPairs, InMemoryPairs, PairDataset, SegmentationPairs, resolve_split
from .transforms import Geometry
from .unpaired import UnpairedImages, scan_unpaired


def geometry(cfg: DataConfig, flip: Optional[bool] = None) -> Geometry:
    """The configured resize/crop/flip; `flip=False` for evaluation splits that must not be flipped."""
    return Geometry(cfg.preprocess, cfg.load_size, cfg.crop_size, cfg.flip if flip is None else flip)


def split_spec(cfg: DataConfig, split: str) -> str:
    """data.<split> (e.g. 'val' or 'train[:100]'); ValueError when the key is not set."""
    spec = getattr(cfg, split)
    if spec is None:
        raise ValueError(f"config key data.{split} is not set; it names the folder of the {split} split")
    return spec


def build_images(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> ImageFolder:
    """data.kind=images: every image under root/<split> matching data.pattern, as channels_b."""
    spec = split_spec(cfg, split)
    folder, subset = resolve_split(Path(cfg.root).expanduser(), spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.{split}={spec!r}: folder {folder} not found (data.root={cfg.root})")
    return ImageFolder(folder, geometry(cfg), subset, cfg.pattern, cfg.channels_b, train=train, seed=seed,
                       max_16bit=cfg.max_16bit)


def check_pattern(cfg: DataConfig) -> None:
    """data.pattern filters data.kind=images only; elsewhere it would be silently ignored."""
    if cfg.pattern != DataConfig.pattern and cfg.kind != "images":
        raise ValueError(
            f"config key data.pattern={cfg.pattern!r} is read by data.kind=images only; data.kind="
            f"{cfg.kind} reads every image of its split folders (subfolders included): remove the key, "
            "or choose files with a split slice such as data.train='train[:100]'"
        )


def build_paired(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> PairDataset:
    """The dataset of split name `split` ('train', 'val' or 'test' key of the config)."""
    check_pattern(cfg)
    spec = split_spec(cfg, split)
    common = dict(direction=cfg.direction, train=train, seed=seed, max_16bit=cfg.max_16bit)
    if cfg.kind == "builtin":
        pairs, names = builtin_pairs(cfg.builtin_task, split, cfg.builtin_size,
                                     cfg.builtin_count if train else 16, seed)
        geo = Geometry("none", cfg.builtin_size, cfg.builtin_size, cfg.flip)
        return InMemoryPairs(pairs, names, geometry=geo, **common)
    folder, subset = resolve_split(Path(cfg.root).expanduser(), spec)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.{split}={spec!r}: folder {folder} not found (data.root={cfg.root})")
    if cfg.kind == "segmentation":
        return SegmentationPairs(folder, cfg.num_classes, subset, cfg.first_label, cfg.ignore_label,
                                 cfg.channels_b, geometry=geometry(cfg), **common)
    cls = AlignedPairs if cfg.layout == "aligned" else FolderPairs
    return cls(folder, subset, cfg.channels_a, cfg.channels_b, geometry=geometry(cfg), **common)


def build_unpaired(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> UnpairedImages:
    """data.kind=unpaired (CycleGAN): ROOT/<split>A and ROOT/<split>B; evaluation splits are not flipped."""
    if not cfg.root:
        raise ValueError("config key data.root is required: a folder with trainA/ and trainB/")
    check_pattern(cfg)
    spec = split_spec(cfg, split)
    geo = geometry(cfg) if train else geometry(cfg, flip=False)
    return UnpairedImages(Path(cfg.root).expanduser(), spec, geo, cfg.channels_a, cfg.channels_b, train=train,
                          seed=seed,
                          serial_b=cfg.serial_b, max_16bit=cfg.max_16bit)


BUILDERS: dict[str, Callable[..., Dataset]] = {
    "paired": build_paired, "segmentation": build_paired, "builtin": build_paired,
    "images": build_images, "unpaired": build_unpaired}


def build_split(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> Dataset:
    """The dataset of split `split` (train | val | test) for any data.kind."""
    return BUILDERS[cfg.kind](cfg, split, train=train, seed=seed)


def build_datasets(cfg: DataConfig, seed: int = 0) -> tuple[Dataset, Optional[Dataset]]:
    """A training run's (train, val) datasets; val is None when data.val is not set. `seed` seeds the
    training crops, flips and unpaired B draws (per sample, so a resume reproduces them)."""
    train = build_split(cfg, "train", train=True, seed=seed)
    return train, build_split(cfg, "val", train=False) if cfg.val else None


def eval_data(cfg: ExperimentConfig, split: str) -> EvalData:
    """The split `split` (train | val | test) of an experiment's data, for evaluation and comparison."""
    from ..color import load_bins

    d = cfg.data
    bins = load_bins(cfg.colorization.bins, cfg.colorization.bin_grid)  # for colorization runs compared
    if d.kind == "unpaired":
        check_pattern(d)
        root, spec = Path(d.root).expanduser(), split_spec(d, split)
        a, b, listing = scan_unpaired(root, spec)
        files = {"A": a, "B": b}
        files.update({f"train{dom}": scan_images(root / f"{d.train}{dom}").files for dom in "AB"})
        return EvalData(split, "unpaired", files=files, geometry=geometry(d, flip=False),
                        channels=(d.channels_a, d.channels_b), max_16bit=d.max_16bit, bins=bins,
                        report=listing.report(f"data {split}"),
                        roots={dom: root / f"{spec}{dom}" for dom in "AB"})
    items = build_split(d, split, train=False)
    kind = d.kind if d.kind in ("segmentation", "images") else "paired"
    return EvalData(split, kind, items, num_classes=d.num_classes, bins=bins,
                    channels=(1, 3) if d.kind == "images" else channels(d),
                    report=data_report({split: items}))


def channels(cfg: DataConfig) -> tuple[int, int]:
    """(input channels, target channels) after the direction is applied."""
    a = 3 if cfg.kind in ("segmentation", "builtin") else cfg.channels_a
    b = 3 if cfg.kind == "builtin" else cfg.channels_b
    return (a, b) if cfg.direction == "AtoB" else (b, a)
