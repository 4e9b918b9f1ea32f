"""Data that loading could silently degrade: 16-bit images, lossy or missing label maps, pairs of
different sizes -- converted faithfully or refused loudly, naming the file."""
import numpy as np
import pytest
import torch
from PIL import Image

from gen import config
from gen.data import build_paired
from gen.data.pairs import FolderPairs, SegmentationPairs
from gen.data.transforms import Geometry
from gen.models import create_model
from gen.pipelines import TranslationPipeline
from conftest import run_sample

NONE = Geometry("none", 0, 0, False)


def depth_pairs(root, n=2):
    """A: an RGB photo; B: a 16-bit depth map in millimetres, 500..4000."""
    rng = np.random.default_rng(0)
    for sub in ("A", "B"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            root / "train" / "A" / f"{i}.png"
        )
        depth = np.linspace(500, 4000, 256).reshape(16, 16).astype(np.uint16)
        Image.fromarray(depth).save(root / "train" / "B" / f"{i}.png")
    return root


def test_16bit_targets_keep_their_precision_and_scale(tmp_path):
    root = depth_pairs(tmp_path / "data")
    with pytest.warns(UserWarning, match=r"0\.png: this 16-bit image uses only 0\.\.4000 .*data\.max_16bit"):
        full = FolderPairs(root / "train", channels_b=1, geometry=NONE, train=False)[0]["target"]
    assert (
        full.shape == (1, 16, 16) and len(torch.unique(full)) == 256
    )  # every depth value distinct, not 15 levels
    scaled = FolderPairs(root / "train", channels_b=1, geometry=NONE, train=False, max_16bit=4000)[0][
        "target"
    ]
    stored = torch.from_numpy(np.linspace(500, 4000, 256).astype(np.uint16).astype(np.float32)).view(
        1, 16, 16
    )
    assert torch.allclose((scaled + 1) / 2 * 4000, stored, atol=0.01)


def test_16bit_outputs_round_trip_on_the_data_scale(tmp_path):
    torch.manual_seed(0)
    net = create_model("unet", num_downs=5, ngf=4, out_channels=1, out_activation="none")
    TranslationPipeline(net, inference="eval", max_16bit=4000).save_pretrained(tmp_path / "export")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(inputs / "x.png")
    proc = run_sample(tmp_path / "export", "--input", inputs, "--output", tmp_path / "out", "--bit-depth", 16)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = Image.open(tmp_path / "out" / "x.png")
    assert out.mode.startswith("I") and out.size == (24, 20)
    expected = TranslationPipeline.from_pretrained(tmp_path / "export")(torch.zeros(1, 3, 20, 24) - 1)[0, 0]
    values = np.asarray(out).astype(np.float64)
    assert np.allclose(values, ((expected.clamp(-1, 1) + 1) * 2000).round().numpy(), atol=1)
    assert values.max() <= 4000
    bad = run_sample(tmp_path / "export", "--input", inputs, "--output", tmp_path / "o8", "--bit-depth", 12)
    assert bad.returncode == 2


def seg_folder(root, label_ext=".png", annot=False, n=2):
    photos = root / "train"
    labels = root / "trainannot" if annot else photos
    photos.mkdir(parents=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(photos / f"{i}.jpg")
        Image.fromarray(np.full((8, 8), 2, np.uint8), "L").save(labels / f"{i}{label_ext}", quality=90)
    return photos


def test_lossy_label_maps_are_refused_naming_the_file(tmp_path):
    photos = seg_folder(tmp_path / "a", ".jpg", annot=True)
    with pytest.raises(ValueError, match=r"lossy format.*trainannot/0\.jpg.*PNG"):
        SegmentationPairs(photos, 3, geometry=NONE)


def test_photo_jpg_mask_png_pairing_and_missing_masks_name_the_path(tmp_path):
    photos = seg_folder(tmp_path / "a", ".png", annot=True)
    ds = SegmentationPairs(photos, 3, geometry=NONE, train=False)
    assert ds[0]["label"].unique().tolist() == [2]
    (tmp_path / "a" / "trainannot" / "1.png").unlink()
    with pytest.raises(
        ValueError, match=r"no label map for 1 photo\(s\): \['1\.jpg \(looked for .*trainannot/1\.png\)"
    ):
        SegmentationPairs(photos, 3, geometry=NONE)


def test_pairs_of_different_sizes_are_found_at_start(tmp_path):
    root = tmp_path / "data" / "train"
    for sub in ("A", "B"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16)).save(root / "A" / f"{i}.png")
        Image.new("RGB", (16, 12) if i == 2 else (16, 16)).save(root / "B" / f"{i}.png")
    cfg = config.load(None, ["data.root=" + str(tmp_path / "data"), "data.layout=folders"])
    with pytest.raises(
        ValueError, match=r"1 pair\(s\) whose A and B sizes differ.*2\.png: A \(16, 16\) vs B \(16, 12\)"
    ):
        build_paired(cfg.data, "train", train=True)


def test_segnet_layout_prefers_the_png_mask(tmp_path):
    photos = seg_folder(tmp_path / "a", ".png", annot=True)
    Image.fromarray(np.full((8, 8), 2, np.uint8), "L").save(tmp_path / "a" / "trainannot" / "0.jpg")
    ds = SegmentationPairs(photos, 3, geometry=NONE, train=False)  # the JPEG twin is not used, so not refused
    assert ds.pairs[0][1].name == "0.png"


def test_float_and_aligned_16bit_data_warn_and_scale(tmp_path):
    from gen.data.image_io import load_image
    from gen.data.pairs import AlignedPairs
    depth = np.linspace(0.5, 10.0, 64, dtype=np.float32).reshape(8, 8)  # metres, float TIFF
    Image.fromarray(depth, "F").save(tmp_path / "d.tif")
    with pytest.warns(UserWarning, match=r"d\.tif: this float image uses only 0\.\.10 .*data\.max_16bit"):
        load_image(tmp_path / "d.tif", 1)
    scaled = np.asarray(load_image(tmp_path / "d.tif", 1, max_16bit=10.0))
    assert np.allclose(scaled, depth * 25.5, atol=1e-3)  # 0..10 m -> 0..255, unrounded
    (tmp_path / "train").mkdir()
    halves = [np.full((8, 8), 100, np.uint16), np.linspace(500, 4000, 64).reshape(8, 8).astype(np.uint16)]
    Image.fromarray(np.concatenate(halves, axis=1)).save(tmp_path / "train" / "p.png")
    ds = AlignedPairs(tmp_path / "train", channels_a=1, channels_b=1, geometry=NONE, train=False)
    with pytest.warns(UserWarning, match=r"p\.png: this 16-bit image uses only 0\.\.4000"):
        ds[0]
