"""Every file found or named: extensions and patterns in any letter case, subfolders and symlinks
followed (loops guarded), hidden folders skipped, ambiguous A/B names refused, and each split's
start-up line of what it found and skipped; sample.py --input mirrors subfolders."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

import sample
from gen import config
from gen.data import FolderPairs, Geometry, ImageFolder, build_images, data_report, scan_images
from gen.data.build import eval_data
from gen.data.output_names import mirrored_stems
from gen.data.pairs import AlignedPairs, SegmentationPairs
from gen.data.unpaired import UnpairedImages
from gen.models import create_model
from gen.pipelines import DiffusionSamplingPipeline, TranslationPipeline
from trainers import CycleGANTrainer, Pix2PixTrainer
from conftest import tiny_overrides, write_aligned
from test_cyclegan import cyclegan_overrides, write_unpaired

GEO = Geometry("resize_and_crop", 36, 32, flip=False)


def img(path: Path, size=(8, 8), fmt=None, value=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 0, 0)).save(path, fmt or "PNG")
    return path


def names(listing_or_files, root: Path) -> list[str]:
    files = getattr(listing_or_files, "files", listing_or_files)
    return [Path(p).relative_to(root).as_posix() for p in files]


# ---- patterns and extensions ---------------------------------------------------------------------

def test_pattern_and_extensions_match_in_any_letter_case(tmp_path):
    root = tmp_path / "data"
    for n in ("a.JPG", "d.Jpg", "b.jpeg", "plain2.jpg", "c.PNG", "sub/e.png", "sub/f.Png"):
        img(root / "train" / n, fmt="JPEG" if ".j" in n.lower() else "PNG")
    cfg = config.load(None, ["method=ddpm", "data.kind=images", f"data.root={root}", "data.pattern=*.jpg",
                             "model.generator=ddpm_tiny", "data.val=null", "log.wandb=disabled"])
    ds = build_images(cfg.data, "train", train=False)
    assert names(ds.files, root / "train") == ["a.JPG", "d.Jpg", "plain2.jpg"]  # b.jpeg is not *.jpg
    report = ds.listing.report("data train")
    assert report == (f"data train: 3 images in {root / 'train'}; skipped 3: "
                      "2 not matching '*.jpg' (b.jpeg, c.PNG), 1 not searched by '*.jpg' (sub/)")
    png = ImageFolder(root / "train", GEO, pattern="**/*.png", train=False)
    assert names(png.files, root / "train") == ["c.PNG", "sub/e.png", "sub/f.Png"]
    every = ImageFolder(root / "train", GEO, train=False)
    assert len(every) == 7 and every.listing.skips() == "nothing skipped"


def test_bad_pattern_and_empty_match_say_what_was_left_out(tmp_path):
    img(tmp_path / "b.jpeg")
    with pytest.raises(ValueError, match=r"no images matching '\*\.jpg' in .*; skipped 1: 1 not matching "
                                         r"'\*\.jpg' \(b\.jpeg\)"):
        ImageFolder(tmp_path, GEO, pattern="*.jpg")
    with pytest.raises(ValueError, match=r"pattern '/abs/\*\.png': expected a glob relative"):
        scan_images(tmp_path, pattern="/abs/*.png")


@pytest.mark.parametrize("pattern, path, hit", [
    ("*.jpg", "a.JPG", True), ("*.jpg", "b.jpeg", False), ("*.jpg", "s/a.jpg", False),
    ("**/*.png", "c.PNG", True), ("**/*.png", "x/y/c.png", True), ("cat/*.png", "Cat/1.png", True),
    ("[ab]*.png", "B1.png", True), ("[!ab]*.png", "b1.png", False), ("[!ab]*.png", "c1.png", True),
    ("x/**", "x/a/b.png", True), ("x/**", "y/a.png", False), ("?.png", "ab.png", False),
])
def test_glob_patterns_match_like_pathlib_but_in_any_case(pattern, path, hit):
    from gen.data.listing import GlobPattern
    assert GlobPattern(pattern).matches(tuple(path.split("/"))) is hit


def test_pattern_on_data_that_does_not_read_it_is_an_error(aligned_root, tmp_path):
    from gen.data import build_paired
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{"data.pattern": "*.jpg"}))
    with pytest.raises(ValueError, match=r"data.pattern='\*\.jpg' is read by data.kind=images only"):
        build_paired(cfg.data, "train", train=True)


# ---- symlinks, loops, hidden folders ----------------------------------------------------------------

def test_symlinks_followed_loops_guarded_hidden_folders_skipped(tmp_path):
    root, outside = tmp_path / "train", tmp_path / "elsewhere"
    img(root / "a.png")
    img(outside / "e.png")
    img(outside / "deep" / "f.png")
    img(tmp_path / "lone.png")
    os.symlink(outside, root / "linked")  # a symlinked subfolder
    os.symlink(tmp_path / "lone.png", root / "file_link.png")  # a symlinked file
    os.symlink(tmp_path / "missing.png", root / "gone.png")  # dangling
    os.symlink(root, root / "linked_root")  # a loop back to the split folder
    os.symlink(outside, root / "z_again")  # the same folder a second time
    img(root / ".thumbs" / "thumb.png")  # inside a hidden folder
    img(root / "._a.png")
    (root / "README.txt").write_text("about")
    listing = scan_images(root)
    assert names(listing, root) == ["a.png", "file_link.png", "linked/deep/f.png", "linked/e.png"]
    assert listing.skips() == (
        "skipped 6: 1 non-image (README.txt), 1 dangling link (gone.png), 2 hidden (._a.png, .thumbs/), "
        "1 symlink loop (linked_root/), 1 repeated folder link (z_again/)"
    )


def test_dangling_link_in_a_folder_pair_is_named_in_the_mismatch(tmp_path):
    img(tmp_path / "B" / "x.png")
    img(tmp_path / "A" / "y.png")
    img(tmp_path / "B" / "y.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "A" / "x.png")
    with pytest.raises(ValueError, match=r"only in B: \['x'\]; skipped 1: 1 dangling link \(A/x\.png\)"):
        FolderPairs(tmp_path, geometry=GEO)


# ---- paired layouts: ambiguous names, nested and symlinked folders -----------------------------------

@pytest.mark.parametrize("side", ["A", "B"])
def test_two_files_of_one_name_in_a_folder_pair_are_an_error_naming_both(tmp_path, side):
    for s in "AB":
        img(tmp_path / s / "x.png")
    img(tmp_path / side / "x.jpg", fmt="JPEG")
    with pytest.raises(ValueError, match=rf"ambiguous {side} name.*{side}/x\.jpg and .*{side}/x\.png"):
        FolderPairs(tmp_path, geometry=GEO)


def test_nested_and_symlinked_folders_in_aligned_and_folder_pairs(tmp_path):
    write_aligned(tmp_path / "aligned" / "sub", 2, size=36)
    write_aligned(tmp_path / "extra", 1, size=36, seed=3)
    os.symlink(tmp_path / "extra", tmp_path / "aligned" / "linked")
    ds = AlignedPairs(tmp_path / "aligned", geometry=GEO)
    assert names(ds.files, tmp_path / "aligned") == ["linked/000.png", "sub/000.png", "sub/001.png"]
    assert ds.listing.report("data train") == (
        f"data train: 3 pairs in {tmp_path / 'aligned'}; nothing skipped")

    split = tmp_path / "folders"
    for s, value in (("A", 10), ("B", 200)):
        img(split / s / "top.png", value=value)
        img(split / s / "n" / "x.png", value=value + 1)
        img(tmp_path / f"far{s}" / "y.png", value=value + 2)
        os.symlink(tmp_path / f"far{s}", split / s / "link")
    pairs = FolderPairs(split, geometry=GEO, train=False)
    got = [(a.relative_to(split).as_posix(), b.relative_to(split).as_posix()) for a, b in pairs.pairs]
    assert got == [("A/link/y.png", "B/link/y.png"), ("A/n/x.png", "B/n/x.png"), ("A/top.png", "B/top.png")]
    assert pairs.listing.report("data train").startswith("data train: 3 pairs in")
    item = pairs[1]  # A/n/x.png (red 11) with B/n/x.png (red 201): read as the pair they are
    assert item["input"][0, 0, 0].item() == pytest.approx(11 / 127.5 - 1, abs=1e-6)
    assert item["target"][0, 0, 0].item() == pytest.approx(201 / 127.5 - 1, abs=1e-6)


def test_aligned_layout_refuses_a_folder_pair_split(tmp_path):
    for s in "AB":
        img(tmp_path / s / "x.png", (16, 8))
    with pytest.raises(ValueError, match=r"holds A/ and B/ folders: set data.layout=folders"):
        AlignedPairs(tmp_path, geometry=GEO)


def test_nested_and_symlinked_folders_in_unpaired_data(tmp_path):
    img(tmp_path / "trainA" / "a.png")
    img(tmp_path / "trainA" / "sub" / "b.png")
    img(tmp_path / "moreB" / "c.png")
    img(tmp_path / "trainB" / "d.png")
    os.symlink(tmp_path / "moreB", tmp_path / "trainB" / "linked")
    (tmp_path / "trainB" / "notes.txt").write_text("x")
    ds = UnpairedImages(tmp_path, "train", GEO)
    assert names(ds.a_files, tmp_path) == ["trainA/a.png", "trainA/sub/b.png"]
    assert names(ds.b_files, tmp_path) == ["trainB/d.png", "trainB/linked/c.png"]
    assert ds.listing.report("data train") == (
        f"data train: 2 A + 2 B images (trainA, trainB) in {tmp_path}; "
        "skipped 1: 1 non-image (trainB/notes.txt)")


def test_unpaired_evaluation_lists_subfolders_and_reports(tmp_path):
    write_unpaired(tmp_path, n=2, size=36)
    img(tmp_path / "testA" / "nested" / "extra.png", (36, 36))
    cfg = config.load(None, cyclegan_overrides(tmp_path / "run", tmp_path))
    data = eval_data(cfg, "test")
    assert names(data.files["A"], tmp_path) == ["testA/0.png", "testA/1.png", "testA/nested/extra.png"]
    assert data.report == f"data test: 3 A + 2 B images (testA, testB) in {tmp_path}; nothing skipped"


# ---- segmentation ----------------------------------------------------------------------------------

def label(path: Path, value=1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8), "L").save(path)
    return path


def test_segmentation_reads_nested_pairs_and_reports_orphans_and_dangling_photos(tmp_path):
    split = tmp_path / "train"
    img(split / "1.jpg", fmt="JPEG")
    label(split / "1.png")
    img(split / "sub" / "2.jpg", fmt="JPEG")
    label(split / "sub" / "2.png", 2)
    label(split / "orphan.png")  # a label map with no photo
    os.symlink(tmp_path / "gone.jpg", split / "3.jpg")  # a dangling photo link ...
    label(split / "3.png")  # ... whose label is then left without a photo
    ds = SegmentationPairs(split, num_classes=3, geometry=Geometry("none", 8, 8, False), train=False)
    assert [(p.relative_to(split).as_posix(), q.relative_to(split).as_posix()) for p, q in ds.pairs] == [
        ("1.jpg", "1.png"), ("sub/2.jpg", "sub/2.png")]
    assert int(ds[1]["label"][0, 0]) == 2
    assert ds.listing.report("data train") == (
        f"data train: 2 pairs in {split}; skipped 3: 1 dangling link (3.jpg), "
        "2 label without photo (3.png, orphan.png)")


def test_segmentation_annot_layout_nested_and_ambiguous_photos(tmp_path):
    img(tmp_path / "train" / "d" / "1.png")
    label(tmp_path / "trainannot" / "d" / "1.png")
    label(tmp_path / "trainannot" / "lonely.png")
    ds = SegmentationPairs(tmp_path / "train", num_classes=3, geometry=Geometry("none", 8, 8, False))
    assert [p.relative_to(tmp_path).as_posix() for _, p in ds.pairs] == ["trainannot/d/1.png"]
    assert "1 label without photo (" in ds.listing.skips() and "trainannot/lonely.png" in ds.listing.skips()
    img(tmp_path / "train" / "d" / "1.jpg", fmt="JPEG")  # two photos would share the label d/1.png
    with pytest.raises(ValueError, match=r"ambiguous photo name.*d/1\.jpg and .*d/1\.png"):
        SegmentationPairs(tmp_path / "train", num_classes=3, geometry=Geometry("none", 8, 8, False))


# ---- the start-up report of a training run -------------------------------------------------------

def test_training_start_prints_each_split_found_and_skipped(aligned_root, tmp_path, capsys):
    (aligned_root / "train" / "README.txt").write_text("about")
    os.symlink(tmp_path / "missing.png", aligned_root / "train" / "gone.png")
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 1}))
    Pix2PixTrainer(cfg).fit()
    out = capsys.readouterr().out
    assert (f"data train: 8 pairs in {aligned_root / 'train'}; skipped 2: 1 non-image (README.txt), "
            "1 dangling link (gone.png)") in out
    assert f"data val: 2 pairs in {aligned_root / 'val'}; nothing skipped" in out


def test_cyclegan_training_start_prints_its_unpaired_splits(tmp_path, capsys):
    root = write_unpaired(tmp_path / "data", n=2, size=36)
    img(root / "trainA" / ".thumbs" / "t.png")
    cfg = config.load(None, cyclegan_overrides(tmp_path / "run", root, **{"train.max_steps": 1}))
    CycleGANTrainer(cfg).fit()
    out = capsys.readouterr().out
    assert (f"data train: 2 A + 2 B images (trainA, trainB) in {root}; "
            "skipped 1: 1 hidden (trainA/.thumbs/)") in out
    assert f"data val: 2 A + 2 B images (testA, testB) in {root}; nothing skipped" in out


def test_data_report_of_in_memory_and_unset_splits():
    assert data_report({"train": [0, 1, 2], "val": None}) == "data train: 3 items in memory"


# ---- sample.py --input with subfolders -------------------------------------------------------------

@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translator")
    torch.manual_seed(0)
    TranslationPipeline(create_model("unet", num_downs=5, ngf=4), inference="eval").save_pretrained(
        tmp / "export")
    return tmp / "export"


def written(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_sample_input_reads_subfolders_and_mirrors_them(translator, tmp_path, capsys):
    inp = tmp_path / "testA"
    for n in ("top.png", "a/x.png", "a/b/y.jpg", "a/b/y.png"):
        img(inp / n, (12, 10))
    img(tmp_path / "far" / "z.png", (12, 10))
    os.symlink(tmp_path / "far", inp / "linked")
    (inp / "a" / "notes.txt").write_text("x")
    assert sample.main([str(translator), "--input", str(inp), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    files = written(tmp_path / "out")
    assert files == ["a/b/y_jpg.png", "a/b/y_png.png", "a/x.png", "linked/z.png", "top.png"]
    assert f"input: 5 images in {inp}; skipped 1: 1 non-image (a/notes.txt)" in out
    assert f"wrote {len(files)} images" in out


def test_sample_input_with_only_subfolders(translator, tmp_path, capsys):
    img(tmp_path / "in" / "cats" / "1.png", (12, 10))
    img(tmp_path / "in" / "dogs" / "1.png", (12, 10))
    argv = [str(translator), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    assert sample.main(argv) == 0
    assert written(tmp_path / "o") == ["cats/1.png", "dogs/1.png"]
    assert "wrote 2 images" in capsys.readouterr().out


def test_sample_output_inside_the_input_is_never_read_or_overwritten(translator, tmp_path, capsys):
    inp = tmp_path / "in"
    img(inp / "a.png", (12, 10))
    img(inp / "s" / "b.png", (12, 10))
    out = inp / "results"
    assert sample.main([str(translator), "--input", str(inp), "--output", str(out)]) == 0
    assert written(out) == ["a.png", "s/b.png"]
    before = (inp / "s" / "b.png").read_bytes()
    assert sample.main([str(translator), "--input", str(inp), "--output", str(out), "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert "1 output folder (results/)" in text and text.count("wrote 2 images") == 2
    assert written(out) == ["a.png", "s/b.png"] and (inp / "s" / "b.png").read_bytes() == before
    assert sample.main([str(translator), "--input", str(inp), "--output", str(inp)]) == 2  # onto the inputs
    assert "overwrite input" in capsys.readouterr().err


def test_conditional_ddpm_input_mirrors_subfolders(tmp_path, capsys):
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny", in_channels=6, out_channels=3).eval(),
                                     DDPMScheduler(num_train_timesteps=20, timestep_spacing="trailing"))
    pipe.sample_size = 8
    pipe.save_export(tmp_path / "export")
    img(tmp_path / "in" / "grid.png")  # the reserved name, at the top only
    img(tmp_path / "in" / "s" / "grid.png")
    args = [str(tmp_path / "export"), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--steps", "2", "--samples-per-input", "2"]
    assert sample.main(args) == 0
    files = written(tmp_path / "out")
    assert files == ["grid.png", "grid_2_0.png", "grid_2_1.png", "s/grid_0.png", "s/grid_1.png"]
    assert "wrote 4 samples" in capsys.readouterr().out


def test_mirrored_stems_stay_distinct_per_folder(tmp_path):
    files = [tmp_path / n for n in ("grid.png", "a/x.jpg", "a/x.png", "a/grid.png", "t.jpg", "t.png/u.png")]
    assert [str(s) for s in mirrored_stems(tmp_path, files, reserved=["grid"])] == [
        "grid_2", "a/x_jpg", "a/x_png", "a/grid", "t_2", "t.png/u"]
