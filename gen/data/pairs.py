"""Paired datasets: pix2pix aligned (A|B in one file), two folders, and segmentation pairs.

Every dataset returns `{"input": (Ci, h, w), "target": (Ct, h, w)}` in [-1, 1] after the
direction is applied, plus `"name"` and, for segmentation pairs, `"label"` (h, w) int64.
Items are addressed by *sample number* g (see `gen.data.sampler`): the image is g mod len, and
g also seeds the sample's random crop and flip.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .image_io import convert_image, image_size, load_image, load_label, open_image, warn_precision
from .listing import Listing, count_text, relative_name, scan_images
from .labels import label_to_tensor, to_class_indices
from .transforms import Geometry, apply_image, apply_label, plan, sample_generator

_SPLIT = re.compile(r"^(?P<folder>[^\[\]]+?)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def resolve_split(root: Path, split: str) -> tuple[Path, slice]:
    """'extended[:100]' -> (root/extended, slice(None, 100)); the slice applies to sorted names."""
    m = _SPLIT.match(split.strip())
    if not m:
        raise ValueError(f"bad split {split!r}: use a folder name, optionally sliced like 'extended[:100]'")
    to_int = lambda s: int(s) if s else None  # noqa: E731
    return root / m["folder"], slice(to_int(m["start"]), to_int(m["stop"]))


LOSSY = (".jpg", ".jpeg")


def check_pair_sizes(pairs: list[tuple[Path, Path]], a: str, b: str) -> None:
    """Every pair's two images have the same size, read from the file headers at start (milliseconds
    per pair), so a bad pair is found now, not when it is first drawn hours into training."""
    bad = [f"{pa.name}: {a} {image_size(pa)} vs {b} {image_size(pb)}" for pa, pb in pairs
           if image_size(pa) != image_size(pb)]
    if bad:
        raise ValueError(
            f"{len(bad)} pair(s) whose {a} and {b} sizes differ (width, height), e.g. {bad[:3]} in "
            f"{pairs[0][0].parent}; paired images must have the same size"
        )


def pair_key(root: Path, path: Path) -> str:
    """The name files pair by: the path under the split folder without extension ('sub/x')."""
    return path.relative_to(root).with_suffix("").as_posix()


def by_name(into: Listing, listing: Listing, side: str, other: str) -> dict[str, Path]:
    """{pair_key: file} of one side of a split (A/sub/x.jpg -> 'sub/x'); its skipped entries go
    `into` the split's listing. Two files of one name (A/x.jpg and A/x.png) would both pair with
    the same `other` file: a ValueError naming both."""
    into.absorb(listing)
    keyed: dict[str, list[Path]] = {}
    for p in listing.files:
        keyed.setdefault(pair_key(listing.root, p), []).append(p)
    twice = [v for v in keyed.values() if len(v) > 1]
    if twice:
        shown = "; ".join(" and ".join(str(p) for p in v) for v in twice[:3])
        raise ValueError(
            f"{len(twice)} ambiguous {side} name(s): {shown} would pair with the same {other} file (files "
            "pair by their name without the extension); keep one of each or rename it"
        )
    return {k: v[0] for k, v in keyed.items()}


class PairDataset(Dataset):
    """Shared geometry and direction for all paired layouts; subclasses implement `load(i)`."""

    def __init__(self, geometry: Geometry, direction: str = "AtoB", train: bool = True, seed: int = 0,
                 max_16bit: Optional[float] = None):
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
        self.geometry, self.direction, self.train, self.seed = geometry, direction, train, seed
        self.max_16bit = max_16bit
        self.root: Optional[Path] = None  # the split folder item names are relative to

    def load(self, i: int) -> tuple[Optional[Image.Image], Image.Image, Optional[np.ndarray], str]:
        """(A, B, label, name) for item i: A is None when it is rendered from the label map."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, g: int) -> dict:
        a, b, label, path = self.load(g % len(self))
        name = relative_name(path, self.root)
        if a is not None and a.size != b.size:
            raise ValueError(f"{path}: A is {a.size[0]}x{a.size[1]} but B is {b.size[0]}x{b.size[1]}; "
                             "paired images must have the same size")
        gen = sample_generator(self.seed, g) if self.train else None
        p = plan(self.geometry, *b.size, train=self.train, gen=gen, name=str(path))
        b_t = apply_image(b, p)
        if label is not None:
            label = apply_label(label, p)
            # Rendered after the nearest-neighbour geometry so class colours never blend.
            a_t = label_to_tensor(label, self.num_classes)
        else:
            a_t = apply_image(a, p)
        inp, tgt = (a_t, b_t) if self.direction == "AtoB" else (b_t, a_t)
        item = {"input": inp, "target": tgt, "name": name}
        if label is not None:
            item["label"] = label
        return item


class AlignedPairs(PairDataset):
    """pix2pix layout: each file holds A (left half) and B (right half) side by side."""

    def __init__(
        self, folder: Path, subset: slice = slice(None), channels_a: int = 3, channels_b: int = 3, **kw
    ):
        super().__init__(**kw)
        if (folder / "A").is_dir() and (folder / "B").is_dir():  # subfolders are read: each would be halved
            raise ValueError(f"{folder} holds A/ and B/ folders: set data.layout=folders "
                             "(data.layout=aligned reads files that hold A and B side by side)")
        self.listing, self.root = scan_images(folder, "aligned A|B images"), folder
        self.files = self.listing.files[subset]
        if not self.files:
            raise ValueError(f"split of {folder} selects no images")
        self.listing.found = count_text(len(self.files), "pairs", len(self.listing.files), subset)
        odd = [f"{p} has odd width {w}" for p in self.files for w, _ in [image_size(p)] if w % 2]
        if odd:
            raise ValueError(
                f"{len(odd)} aligned image(s) cannot be split in two: {'; '.join(odd[:3])}; an A|B "
                "file must be two halves of equal width"
            )
        self.channels_a, self.channels_b = channels_a, channels_b

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i):
        path = self.files[i]
        img = open_image(path)
        w, h = img.size
        if w % 2:
            raise ValueError(f"aligned image {path} has odd width {w}; an A|B file must be two "
                             "halves of equal width")
        warn_precision(img, path, min(self.channels_a, self.channels_b), self.max_16bit)
        a = convert_image(img.crop((0, 0, w // 2, h)), self.channels_a, self.max_16bit)
        b = convert_image(img.crop((w // 2, 0, w, h)), self.channels_b, self.max_16bit)
        return a, b, None, str(path)


class FolderPairs(PairDataset):
    """Two folders `<split>/A` and `<split>/B` whose files match by name (extension may differ)."""

    def __init__(
        self, folder: Path, subset: slice = slice(None), channels_a: int = 3, channels_b: int = 3, **kw
    ):
        super().__init__(**kw)
        self.listing, self.root = Listing(folder), folder / "A"
        a_files = by_name(self.listing, scan_images(folder / "A", "A images"), "A", "B")
        b_files = by_name(self.listing, scan_images(folder / "B", "B images"), "B", "A")
        only_a, only_b = sorted(a_files.keys() - b_files), sorted(b_files.keys() - a_files)
        if only_a or only_b:
            raise ValueError(f"{folder}: A and B file names do not match; only in A: {only_a[:5]}, "
                             f"only in B: {only_b[:5]}; {self.listing.skips()}")
        keys = sorted(a_files, key=lambda k: k.split("/"))
        self.pairs = [(a_files[k], b_files[k]) for k in keys][subset]
        if not self.pairs:
            raise ValueError(f"split of {folder} selects no pairs")
        self.listing.files = [pa for pa, _ in self.pairs]
        self.listing.found = count_text(len(self.pairs), "pairs", len(keys), subset)
        check_pair_sizes(self.pairs, "A", "B")
        self.channels_a, self.channels_b = channels_a, channels_b

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i):
        pa, pb = self.pairs[i]
        return (
            load_image(pa, self.channels_a, self.max_16bit),
            load_image(pb, self.channels_b, self.max_16bit),
            None,
            str(pa),
        )


LABEL_WITHOUT_PHOTO = "label without photo"


def segmentation_pairs(folder: Path) -> tuple[list[tuple[Path, Path]], Listing]:
    """(photo, label map) pairs of a split, matched by pair_key (subfolders included), and the split's
    listing: labels that no photo uses are skipped as 'label without photo'. A photo without a label
    is a ValueError; so are two photos (x.jpg, x.jpeg) that would share one label."""
    annot = folder.parent / f"{folder.name}annot"
    listing = Listing(folder)
    if annot.is_dir():
        photo_listing = scan_images(folder, "photos")
        label_listing = scan_images(annot, "label maps", require=False)
        listing.absorb(label_listing)
        labels = {(pair_key(annot, p), p.suffix.lower()): p for p in label_listing.files}
        photos = by_name(listing, photo_listing, "photo", "label map")
        # The PNG of the same stem (common: photo.jpg, mask.png), else the file of the same name.
        chosen = {k: labels.get((k, ".png")) or labels.get((k, p.suffix.lower())) for k, p in photos.items()}
        looked = {k: annot / f"{k}.png" for k in photos}
    else:
        files = scan_images(folder, "photos and label maps")
        label_listing = Listing(folder, [p for p in files.files if p.suffix.lower() == ".png"])
        photo_listing = Listing(folder, [p for p in files.files if p.suffix.lower() != ".png"])
        listing.absorb(files)
        if not photo_listing.files:
            raise ValueError(f"{folder}: no photos (non-PNG images) next to the PNG label maps")
        labels = by_name(Listing(folder), label_listing, "label map", "photo")
        photos = by_name(listing, photo_listing, "photo", "label map")
        chosen = {k: labels.get(k) for k in photos}
        looked = {k: folder / f"{k}.png" for k in photos}
    used = {lab for lab in chosen.values() if lab is not None}
    for lab in label_listing.files:
        if lab not in used:
            listing.skip(LABEL_WITHOUT_PHOTO, lab)
    missing = [f"{photos[k].name} (looked for {looked[k]})" for k in photos if chosen[k] is None]
    if missing:
        raise ValueError(f"{folder}: no label map for {len(missing)} photo(s): {missing[:3]}; "
                         f"{listing.skips()}")
    return [(p, chosen[k]) for k, p in photos.items()], listing


class SegmentationPairs(PairDataset):
    """Photo + class-index label map. A = the label map rendered to RGB, B = the photo.

    Labels are `<stem>.png` beside `<stem>.jpg` photos (CMP facades), or files of the same name
    in a sibling folder `<split>annot` (CamVid/SegNet layout).
    """

    def __init__(self, folder: Path, num_classes: int, subset: slice = slice(None), first_label: int = 0,
                 ignore_label: Optional[int] = None, channels_b: int = 3, **kw):
        super().__init__(**kw)
        pairs, self.listing = segmentation_pairs(folder)
        self.root = folder
        lossy = [str(lab) for _, lab in pairs if lab.suffix.lower() in LOSSY]
        if lossy:
            raise ValueError(
                f"label maps in a lossy format, e.g. {lossy[:3]}: JPEG compression changes class ids "
                "at every edge (a fifth of the pixels, typically), so they cannot be trained on; "
                "save them as PNG (palette or 8-bit grayscale)"
            )
        check_pair_sizes([(p, lab) for p, lab in pairs[subset]], "photo", "label map")
        self.pairs = pairs[subset]
        if not self.pairs:
            raise ValueError(f"split of {folder} selects no pairs")
        self.listing.files = [p for p, _ in self.pairs]
        self.listing.found = count_text(len(self.pairs), "pairs", len(pairs), subset)
        self.num_classes, self.first_label, self.ignore_label = num_classes, first_label, ignore_label
        self.channels_b = channels_b

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i):
        photo_path, label_path = self.pairs[i]
        photo = load_image(photo_path, self.channels_b, self.max_16bit)
        label = to_class_indices(load_label(label_path), self.num_classes, self.first_label,
                                 self.ignore_label, str(label_path))
        if (label.shape[1], label.shape[0]) != photo.size:
            raise ValueError(f"label map {label_path} is {label.shape[1]}x{label.shape[0]} but photo "
                             f"{photo_path} is {photo.size[0]}x{photo.size[1]}")
        return None, photo, label, str(photo_path)


class InMemoryPairs(PairDataset):
    """Pairs already in memory as PIL images (the built-in dataset)."""

    def __init__(self, pairs: list[tuple[Image.Image, Image.Image]], names: list[str], **kw):
        super().__init__(**kw)
        self.pairs, self.names = pairs, names

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i):
        a, b = self.pairs[i]
        return a, b, None, self.names[i]


def collate(items: list[dict]) -> dict:
    """Stack tensors; names stay a list. Different sizes (preprocess 'none') need batch_size 1."""
    keys = [k for k in items[0] if k != "name"]
    for k in keys:
        sizes = {tuple(it[k].shape[-2:]) for it in items}
        if len(sizes) > 1:
            raise ValueError(
                f"images of different sizes {sorted(sizes)} in one batch ({[it['name'] for it in items]}); "
                "with data.preprocess=none use train.batch_size=1 or a cropping preprocess"
            )
    out = {k: torch.stack([it[k] for it in items]) for k in keys}
    out["name"] = [it["name"] for it in items]
    return out
