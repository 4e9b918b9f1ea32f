"""Paired layouts, joint geometry, conversions of odd image modes, segmentation pairs, sampler, the
dataset builder of every data.kind."""
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen import config
from gen.data import (AlignedPairs, FolderPairs, Geometry, ImageFolder, InMemoryPairs, ResumableSampler,
                      SegmentationPairs, build_paired, label_to_rgb, load_image, palette)
from gen.data.build import build_datasets
from gen.data.unpaired import UnpairedImages
from gen.data.pairs import resolve_split
from conftest import ROOT, write_aligned


def test_aligned_joint_crop_and_flip(tmp_path):
    write_aligned(tmp_path / "train", 4)
    ds = AlignedPairs(tmp_path / "train", geometry=Geometry("resize_and_crop", 36, 32, True), seed=3)
    flips = []
    for g in range(16):
        item = ds[g]
        assert item["input"].shape == (3, 32, 32) and item["input"].min() >= -1 and item["input"].max() <= 1
        # B = 255 - A pixel by pixel, so any crop/flip mismatch between A and B breaks A + B = 0.
        assert (item["input"] + item["target"]).abs().max() < 0.05
        plain = AlignedPairs(tmp_path / "train", geometry=Geometry("resize_and_crop", 36, 32, False), seed=3)[
            g
        ]
        flips.append(torch.equal(item["input"], plain["input"].flip(-1)))
    assert any(flips) and not all(flips)  # both flipped and unflipped samples occur
    assert torch.equal(ds[5]["input"], ds[5]["input"])  # augmentation is a function of the sample number


def test_direction_swaps_input_and_target(tmp_path):
    write_aligned(tmp_path / "val", 1)
    geo = Geometry("none", 40, 40, False)
    ab = AlignedPairs(tmp_path / "val", geometry=geo, direction="AtoB", train=False)[0]
    ba = AlignedPairs(tmp_path / "val", geometry=geo, direction="BtoA", train=False)[0]
    assert torch.equal(ab["input"], ba["target"]) and torch.equal(ab["target"], ba["input"])


def test_folder_layout_and_mismatched_names(tmp_path):
    for side in "AB":
        (tmp_path / "train" / side).mkdir(parents=True)
    for name in ["x", "y"]:
        Image.new("RGB", (32, 32), "red").save(tmp_path / "train" / "A" / f"{name}.png")
        Image.new("L", (32, 32), 7).save(tmp_path / "train" / "B" / f"{name}.jpg")  # extension may differ
    ds = FolderPairs(tmp_path / "train", geometry=Geometry("crop", 32, 32, False), train=False)
    assert len(ds) == 2 and ds[1]["target"].shape == (3, 32, 32)
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "B" / "z.png")
    with pytest.raises(ValueError, match=r"only in B: \['z'\]"):
        FolderPairs(tmp_path / "train", geometry=Geometry("crop", 32, 32, False))


@pytest.mark.parametrize("preprocess,size,expect", [
    ("resize_and_crop", (50, 30), (32, 32)), ("crop", (50, 40), (32, 32)),
    ("scale_width", (80, 20), (32, 32)), ("none", (50, 30), (30, 50))])
def test_preprocess_modes(tmp_path, preprocess, size, expect):
    for side in "AB":
        (tmp_path / "s" / side).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, "blue").save(tmp_path / "s" / side / "a.png")
    ds = FolderPairs(tmp_path / "s", geometry=Geometry(preprocess, 36, 32, True))
    assert tuple(ds[0]["input"].shape[-2:]) == expect


def test_odd_mode_conversions(tmp_path):
    gray16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png", 3)
    assert img.mode == "RGB"
    assert np.asarray(img)[-1, -1, 0] == round(int(gray16[-1, -1]) * 255 / 65535)  # scaled, not clipped

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.save(tmp_path / "rgba.png")
    assert np.asarray(load_image(tmp_path / "rgba.png", 3))[0, 0].tolist() == [255, 255, 255]  # onto white

    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert np.asarray(load_image(tmp_path / "pal.png", 3))[0, 0].tolist() == [10, 200, 30]

    Image.new("L", (8, 8), 77).save(tmp_path / "gray.png")
    assert np.asarray(load_image(tmp_path / "gray.png", 3))[0, 0].tolist() == [77, 77, 77]
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png", 1).mode == "L"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = np.asarray(load_image(tmp_path / "cmyk.jpg", 3))[0, 0]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "green")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def write_segmentation(folder, n=3, size=(40, 36), values=(1, 12)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / f"p{i}.jpg"
        )
        lab = Image.fromarray(rng.integers(values[0], values[1] + 1, (size[1], size[0]), dtype=np.uint8), "P")
        lab.putpalette(list(np.random.default_rng(1).integers(0, 255, 768)))
        lab.save(folder / f"p{i}.png")


def test_segmentation_pairs_render_labels(tmp_path):
    write_segmentation(tmp_path / "base")
    ds = SegmentationPairs(tmp_path / "base", num_classes=12, first_label=1,
                           geometry=Geometry("resize_and_crop", 36, 32, True))
    item = ds[1]
    assert item["label"].shape == (32, 32) and item["label"].min() >= 0 and item["label"].max() <= 11
    rendered = ((item["input"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(rendered, label_to_rgb(item["label"].numpy(), 12))  # colours never blend
    assert len({tuple(c) for c in palette(12)}) == 12


def test_split_slices(tmp_path):
    assert resolve_split(tmp_path, "extended[:100]") == (tmp_path / "extended", slice(None, 100))
    assert resolve_split(tmp_path, "extended[100:]")[1] == slice(100, None)
    write_aligned(tmp_path / "ext", 5)
    cfg = config.load(
        None, [f"data.root={tmp_path}", "data.train=ext[1:4]", "data.crop_size=32", "data.load_size=36"]
    )
    assert len(build_paired(cfg.data, "train", train=True)) == 3


def test_non_image_files_skipped_and_reported(tmp_path):
    write_aligned(tmp_path / "train", 2)
    (tmp_path / "train" / "README.txt").write_text("not an image")
    ds = AlignedPairs(tmp_path / "train", geometry=Geometry("crop", 40, 32, True))
    assert len(ds) == 2 and "skipped 1: 1 non-image (README.txt)" in ds.listing.report("data train")


def test_sampler_resumes_and_shards():
    full = list(itertools.islice(ResumableSampler(7, seed=1), 30))
    assert sorted(g % 7 for g in full[:7]) == list(range(7))  # each epoch is a permutation
    assert list(itertools.islice(ResumableSampler(7, seed=1, start=11), 19)) == full[11:]
    r0 = list(itertools.islice(ResumableSampler(7, seed=1, rank=0, world_size=2), 15))
    r1 = list(itertools.islice(ResumableSampler(7, seed=1, rank=1, world_size=2), 15))
    assert r0 == full[0::2] and r1 == full[1::2]


def test_builtin_dataset_needs_no_download():
    cfg = config.load(None, ["data.kind=builtin", "data.builtin_count=8", "data.builtin_size=32"])
    train, val = build_paired(cfg.data, "train", train=True), build_paired(cfg.data, "val", train=False)
    assert len(train) == 8 and train[0]["input"].shape == (3, 32, 32)
    edges = train[0]["input"]
    assert set(edges.unique().tolist()) <= {-1.0, 1.0}  # black edges on white
    assert not torch.equal(train[0]["target"], val[0]["target"])


def test_facades_split_counts(shared_data):
    cfg = config.load(
        ROOT / "configs" / "pix2pix" / "facades.yaml", [f"data.root={shared_data / 'facades_cmp'}"]
    )
    sizes = [len(build_paired(cfg.data, s, train=s == "train")) for s in ("train", "val", "test")]
    assert sizes == [378, 100, 128]
    item = build_paired(cfg.data, "test", train=False)[0]
    assert (
        item["input"].shape == (3, 256, 256)
        and 0 <= int(item["label"].min())
        and int(item["label"].max()) <= 11
    )


def test_gray2photo_holds_out_the_unseen_part_of_every_photo():
    """The quickstart's task: A is the photo's luma, and every held-out crop lies in the right 30% of
    its photo, which no training crop touches (same scenes, never-trained pixels)."""
    from gen.data.builtin import TRAIN_FRACTION, TRAIN_IMAGES, VAL_IMAGES, _photo, builtin_pairs
    size = 32
    photos = {Path(n).stem: np.asarray(_photo(n, 4 * size)) for n in TRAIN_IMAGES + VAL_IMAGES}
    for split in ("train", "val"):
        pairs, names = builtin_pairs("gray2photo", split, size, 16, seed=0)
        assert {n.rsplit("_", 1)[0] for n in names} == set(photos)  # every photo in both splits
        for (gray, photo), name in zip(pairs, names):
            g, p = np.asarray(gray).astype(int), np.asarray(photo)
            assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
            assert np.abs(g[..., 0] - np.asarray(photo.convert("L"))).max() == 0
            full = photos[name.rsplit("_", 1)[0]]
            cut = int(TRAIN_FRACTION * full.shape[1])
            lefts = [x for x in range(full.shape[1] - size + 1) for y in range(full.shape[0] - size + 1)
                     if (full[y:y + size, x:x + size] == p).all()]
            assert lefts, name
            assert all(x + size <= cut for x in lefts) if split == "train" else all(x >= cut for x in lefts)
    with pytest.raises(ValueError, match="data.builtin_task"):
        config.load(None, ["data.kind=builtin", "data.builtin_task=sketch"])


# ---- one builder for every data.kind ---------------------------------------------------------------

def test_build_datasets_builds_the_train_and_val_splits_of_every_kind(tmp_path):
    write_aligned(tmp_path / "train", 3)
    write_aligned(tmp_path / "val", 1, seed=1)
    size = ["data.load_size=36", "data.crop_size=32"]
    paired = config.load(None, [f"data.root={tmp_path}", *size]).data
    train, val = build_datasets(paired, seed=5)
    assert type(train) is AlignedPairs and (len(train), train.train, train.seed) == (3, True, 5)
    assert type(val) is AlignedPairs and (len(val), val.train) == (1, False)
    photos = config.load(None, ["method=colorization", "data.kind=images", f"data.root={tmp_path}",
                                "data.val=null", *size]).data
    train, val = build_datasets(photos)
    assert type(train) is ImageFolder and len(train) == 3 and val is None
    builtin = config.load(None, ["data.kind=builtin", "data.builtin_count=4", "data.builtin_size=32"]).data
    train, val = build_datasets(builtin)
    assert type(train) is InMemoryPairs and (len(train), len(val)) == (4, 16)


def test_unpaired_training_split_is_seeded_and_validation_is_not_flipped(tmp_path):
    from test_cyclegan import cyclegan_overrides, write_unpaired

    root = write_unpaired(tmp_path / "data", n=4, size=36)
    cfg = config.load(None, cyclegan_overrides(tmp_path / "run", root, **{"data.serial_b": True})).data
    train, val = build_datasets(cfg, seed=3)
    assert type(train) is UnpairedImages and len(train) == 4
    assert (train.train, train.seed, train.serial_b) == (True, 3, True)
    assert train.geometry == Geometry("resize_and_crop", 36, 32, True)
    assert (len(val), val.train, val.geometry.flip) == (2, False, False)
    again, _ = build_datasets(cfg, seed=3)
    assert torch.equal(train[1]["A"], again[1]["A"])  # the seed names the crops: a resume sees the same
    assert build_datasets(dataclasses.replace(cfg, val=None))[1] is None
    with pytest.raises(ValueError, match="data.pattern='\\*.png' is read by data.kind=images only"):
        build_datasets(dataclasses.replace(cfg, pattern="*.png"))
    with pytest.raises(ValueError, match="data.root is required: a folder with trainA/ and trainB/"):
        build_datasets(dataclasses.replace(cfg, root=None))
    with pytest.raises(FileNotFoundError, match="trainA"):
        build_datasets(dataclasses.replace(cfg, root=str(tmp_path / "elsewhere")))
