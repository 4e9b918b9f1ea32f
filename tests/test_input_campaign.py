"""The input campaign: one table of bad or odd inputs, each with its expected behaviour -- converted,
skipped and named in the listing report, or a clear error that names the file or key. Datasets are
built and read directly (no training) so the whole table runs in seconds; whole runs are covered in
test_bad_input.py."""
import io
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gen import config, pipelines
from gen.data import FolderPairs, Geometry, ImageFolder
from gen.data.pairs import SegmentationPairs, collate
from gen.models import create_model
from gen.pipelines import SegmentationPipeline, TranslationPipeline
from gen.data.build import eval_data
from conftest import run_sample

GEO = Geometry("resize_and_crop", 36, 32, flip=False)


def rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def folder_with(tmp_path, name, write):
    """A 2-image folder: one good image and the case's file `name` written by write(path)."""
    d = tmp_path / "imgs"
    d.mkdir()
    rgb().save(d / "a_good.png")
    write(d / name)
    return d


def read_all(folder, geometry=GEO, channels=3):
    ds = ImageFolder(folder, geometry, channels=channels, train=False)
    return [ds[i]["image"] for i in range(len(ds))]


# ---- each case: (name, file name, writer, expected) where expected is
#      ("converted", check(tensor)) | ("skipped", report regex) | ("error", message regex)

def _truncated_jpeg(p):
    buf = io.BytesIO()
    rgb().save(buf, "JPEG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _cmyk(p):
    rgb().convert("CMYK").save(p, "JPEG")


def _sixteen_bit(p):
    Image.fromarray(np.full((30, 40), 65535, np.uint16)).save(p)


def _rgba(p):
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(p)  # fully transparent red: white on screen


def _palette(p):
    Image.new("RGB", (40, 30), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE).save(p)


def _exif_rotated(p):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees -> 20 wide, 40 high
    img.save(p, "JPEG", exif=exif)


def _is(value):
    return lambda t: torch.allclose(t, torch.full_like(t, value), atol=0.02)


CASES = [
    ("truncated JPEG", "b.jpg", _truncated_jpeg, ("error", r"cannot read image .*b\.jpg")),
    (
        "corrupt PNG bytes",
        "b.png",
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200))),
        ("error", r"cannot read image .*b\.png"),
    ),
    ("zero-byte file", "b.png", lambda p: p.write_bytes(b""), ("error", r"cannot read image .*b\.png")),
    (
        "text with an image extension",
        "b.jpg",
        lambda p: p.write_text("not an image"),
        ("error", r"cannot read image .*b\.jpg"),
    ),
    (
        "PNG content with a .jpg name",
        "b.jpg",
        lambda p: rgb().save(p, "PNG"),
        ("converted", lambda t: t.shape == (3, 32, 32)),
    ),
    ("CMYK JPEG", "b.jpg", _cmyk, ("converted", lambda t: t.shape == (3, 32, 32))),
    (
        "16-bit grayscale PNG",
        "b.png",
        _sixteen_bit,
        ("warned", (r"b\.png: a 16-bit grayscale image read as 8-bit RGB", _is(1.0))),
    ),
    ("RGBA, transparent", "b.png", _rgba, ("converted", _is(1.0))),
    ("palette PNG", "b.png", _palette, ("converted", lambda t: t[2].mean() > 0.9 and t[0].mean() < -0.9)),
    (
        "grayscale in an RGB set",
        "b.png",
        lambda p: Image.new("L", (40, 30), 255).save(p),
        ("converted", _is(1.0)),
    ),
    ("EXIF-rotated JPEG", "b.jpg", _exif_rotated, ("converted", lambda t: t.shape == (3, 32, 32))),
    (
        "very large image (6000x4000)",
        "b.png",
        lambda p: Image.new("RGB", (6000, 4000), (0, 255, 0)).save(p),
        ("converted", lambda t: t[1].mean() > 0.95),
    ),
    (
        "1x1 image",
        "b.png",
        lambda p: Image.new("RGB", (1, 1), (255, 255, 255)).save(p),
        ("converted", _is(1.0)),
    ),
    (
        "README beside the images",
        "README.txt",
        lambda p: p.write_text("about"),
        ("skipped", r"skipped 1: 1 non-image \(README.txt\)"),
    ),
    ("hidden .DS_Store", ".DS_Store", lambda p: p.write_bytes(b"\0\0"), ("silent", None)),
]


@pytest.mark.parametrize("name,file,write,expected", CASES, ids=[c[0] for c in CASES])
def test_image_file_kinds(tmp_path, name, file, write, expected):
    folder = folder_with(tmp_path, file, write)
    kind, detail = expected
    if kind == "error":
        with pytest.raises(ValueError, match=detail):
            read_all(folder)
    elif kind == "converted":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            images = read_all(folder)
        assert len(images) == 2 and all(t.shape == (3, 32, 32) for t in images)
        assert detail(images[1]), name
    elif kind == "warned":  # converted, with a warning that names the file
        with pytest.warns(UserWarning, match=detail[0]):
            images = read_all(folder)
        assert detail[1](images[1]), name
    elif kind == "skipped":  # left out and named in the listing's start-up report
        ds = ImageFolder(folder, GEO, train=False)
        assert len(read_all(folder)) == 1 and re.search(detail, ds.listing.report("data train"))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(read_all(folder)) == 1


def test_exif_orientation_is_applied(tmp_path):
    _exif_rotated(tmp_path / "r.jpg")
    ds = ImageFolder(tmp_path, Geometry("none", 0, 0, False), train=False)
    assert ds[0]["image"].shape == (3, 40, 20)  # stored 40x20, shown (and read) 20 wide, 40 high


def test_one_by_one_image_with_a_crop_names_the_file(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ValueError, match=r"crop_size 32 is larger than image .*dot\.png \(1x1"):
        read_all(tmp_path, Geometry("crop", 36, 32, False))


def test_mismatched_a_b_names(tmp_path):
    for sub, names in (("A", ["1", "2", "3"]), ("B", ["1", "2", "4"])):
        (tmp_path / sub).mkdir()
        for n in names:
            rgb().save(tmp_path / sub / f"{n}.png")
    with pytest.raises(ValueError, match=r"only in A: \['3'\], only in B: \['4'\]"):
        FolderPairs(tmp_path, geometry=GEO)


def test_different_sizes_in_one_batch_name_the_files(tmp_path):
    rgb(40, 30).save(tmp_path / "small.png")
    rgb(50, 30).save(tmp_path / "wide.png")
    ds = ImageFolder(tmp_path, Geometry("none", 0, 0, False), train=False)
    with pytest.raises(ValueError, match=r"different sizes .*small\.png.*wide\.png.*batch_size=1"):
        collate([ds[0], ds[1]])


def test_empty_and_missing_splits(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images .* in .*empty"):
        ImageFolder(tmp_path / "empty", GEO)
    cfg = config.load(None, ["method=ddpm", "data.kind=images", f"data.root={tmp_path}", "data.train=absent",
                             "model.generator=ddpm_tiny", "data.val=null", "log.wandb=disabled"])
    from gen.data import build_images
    with pytest.raises(FileNotFoundError, match=r"data.train='absent'"):
        build_images(cfg.data, "train", train=True)


def test_label_ids_out_of_range_name_the_file(tmp_path):
    rgb(40, 40).save(tmp_path / "x.jpg")
    Image.fromarray(np.full((40, 40), 40, np.uint8), "L").save(tmp_path / "x.png")
    ds = SegmentationPairs(
        tmp_path, num_classes=12, first_label=1, geometry=GEO, direction="BtoA", train=False
    )
    with pytest.raises(ValueError, match=r"x\.png: label values \[40\]"):
        ds[0]


@pytest.mark.parametrize("override,message", [
    ("train.lr=nan", "train.lr=nan is not a finite number"),
    ("train.batch_size=-2", "train.batch_size=-2 must be > 0"),
    ("cyclegan.lambda_a=-1", "cyclegan.lambda_a=-1.0 must be >= 0"),
    ("train.learning_rate=1", "unknown config key 'train.learning_rate'"),
    ("ddpm.beta_start=0.5", "ddpm.beta_start=0.5 must be below ddpm.beta_end"),
    ("colorization.temperature=0", "colorization.temperature=0.0 must be > 0"),
])
def test_config_values_name_the_key(override, message):
    base = ["method=ddpm", "data.kind=images", "data.root=/tmp", "model.generator=ddpm_tiny"]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        config.load(None, [*base, override])


def test_sample_cli_missing_run_dir_and_wrong_export(tmp_path):
    proc = run_sample(tmp_path / "no_such_run", "--input", tmp_path, "--output", tmp_path / "o")
    assert proc.returncode == 2 and "not found" in proc.stderr and "no_such_run" in proc.stderr
    assert "Traceback" not in proc.stderr
    # A translation export given where a segmenter is expected, and a segmentation export as a CycleGAN.
    torch.manual_seed(0)
    TranslationPipeline(create_model("unet", num_downs=5, ngf=8)).save_pretrained(tmp_path / "p2p")
    SegmentationPipeline(create_model("unet", num_downs=5, ngf=8, out_channels=12, out_activation="none"),
                         12).save_pretrained(tmp_path / "seg")
    with pytest.raises(
        ValueError, match="--direction chooses between the two generators of a CycleGAN export"
    ):
        pipelines.load(tmp_path / "seg", direction="BtoA")
    from test_segmentation import write_colour_classes
    write_colour_classes(tmp_path / "x", 1)  # the data exists; the runs are of the wrong kinds
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(config.to_yaml(config.load(None, [
        "data.kind=segmentation", f"data.root={tmp_path}", "data.num_classes=12", "data.train=x"])))
    from gen.evaluate import evaluate

    with pytest.raises(
        ValueError, match="needs a labels -> photo run on segmentation data and a segmentation run"
    ):
        evaluate(tmp_path / "p2p", eval_data(config.load(cfg_file), "train"), None, 1,
                        segmenter=tmp_path / "p2p")


def test_hidden_resource_forks_are_ignored_in_every_layout(tmp_path):
    """macOS copies leave `._x.png` beside `x.png`: junk with an image extension, never data."""
    from gen.data import scan_images
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "x.png")
        (tmp_path / sub / "._x.png").write_bytes(b"\0\5\x16\7 resource fork")
    assert [p.name for p in scan_images(tmp_path / "A").files] == ["x.png"]
    assert [p.name for p in scan_images(tmp_path, pattern="**/*").files] == ["x.png", "x.png"]
