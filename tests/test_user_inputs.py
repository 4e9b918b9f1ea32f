"""What users feed sample.py and the pipelines: no lost output, no overwritten input, no garbage written
as results, counts and step ranges checked with the flag named, and one inference path."""
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from gen import config, pipelines
from gen.data.output_names import output_stems
from gen.models import create_model
from gen.pipelines import DiffusionSamplingPipeline, SegmentationPipeline, TranslationPipeline
from trainers import DDPMTrainer
from conftest import run_sample
from test_ddpm import ddpm_overrides, write_toy


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translator")
    torch.manual_seed(0)
    TranslationPipeline(create_model("unet", num_downs=5, ngf=4), inference="eval").save_pretrained(
        tmp / "export"
    )
    return tmp / "export"


@pytest.fixture(scope="module")
def conditional_ddpm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cddpm")
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny", in_channels=6, out_channels=3).eval(),
                                     DDPMScheduler(num_train_timesteps=20, timestep_spacing="trailing"))
    pipe.sample_size = 8
    pipe.save_export(tmp / "export")
    return tmp / "export"


def write_inputs(folder, names, size=(12, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_output_names_keep_inputs_that_share_a_stem_apart(tmp_path):
    files = [
        tmp_path / n for n in ("tile.jpg", "tile.png", "IMG_1.JPG", "IMG_1.jpeg", "x.png", "tile_jpg.png")
    ]
    stems = output_stems(files)
    assert stems == ["tile_jpg", "tile_png", "IMG_1_JPG", "IMG_1_jpeg", "x", "tile_jpg_2"]
    assert len({s.lower() for s in stems}) == len(files)
    tricky = [tmp_path / n for n in ("tile.jpg", "tile.png", "tile_jpg.png", "tile_jpg_2.png", "grid.png")]
    stems = output_stems(tricky, reserved=["grid"])
    assert len({s.lower() for s in stems} | {"grid"}) == len(tricky) + 1 and "grid" not in stems


def test_translate_writes_one_file_per_input_and_counts_them(translator, tmp_path):
    inputs = write_inputs(tmp_path / "in", ["tile.jpg", "tile.png", "IMG_1.JPG", "IMG_1.jpeg", "x.png"])
    proc = run_sample(translator, "--input", inputs, "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(["tile_jpg.png", "tile_png.png", "IMG_1_JPG.png", "IMG_1_jpeg.png", "x.png"])
    assert "wrote 5 images" in proc.stdout


def test_never_overwrites_an_input_or_an_existing_file_unless_asked(translator, tmp_path):
    inputs = write_inputs(tmp_path / "in", ["a.png", "b.png"])
    before = (inputs / "a.png").read_bytes()
    proc = run_sample(translator, "--input", inputs, "--output", inputs)
    assert proc.returncode == 2 and "overwrite input" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_sample(translator, "--input", inputs, "--output", inputs, "--overwrite")
    assert proc.returncode == 2  # an input is never replaced, --overwrite or not
    assert (inputs / "a.png").read_bytes() == before and sorted(p.name for p in inputs.iterdir()) == [
        "a.png",
        "b.png",
    ]

    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"the user's own file")
    proc = run_sample(translator, "--input", inputs, "--output", out)
    assert proc.returncode == 2 and "already exist" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "b.png").read_bytes() == b"the user's own file" and not (
        out / "a.png"
    ).exists()  # nothing written
    proc = run_sample(translator, "--input", inputs, "--output", out, "--overwrite")
    assert proc.returncode == 0 and Image.open(out / "b.png").size == (12, 10)


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--steps", "0"], "--steps 0"),
        (["--steps", "-5"], "--steps -5"),
        (["--steps", "21"], "--steps 21"),
        (["--samples-per-input", "0", "--steps", "2"], "--samples-per-input 0"),
    ],
)
def test_conditional_sampling_flags_out_of_range_are_named(conditional_ddpm, tmp_path, flags, named):
    inputs = write_inputs(tmp_path / "in", ["a.png"])
    proc = run_sample(conditional_ddpm, "--input", inputs, "--output", tmp_path / "out", *flags)
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_conditional_ddpm_samples_at_training_size_unless_full_size(conditional_ddpm, tmp_path):
    inputs = write_inputs(tmp_path / "in", ["big.png", "big.jpg"], size=(40, 24))
    proc = run_sample(conditional_ddpm, "--input", inputs, "--output", tmp_path / "out", "--steps", 2,
                      "--scheduler", "dpm")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big_jpg.png", "big_png.png", "grid.png"]
    assert Image.open(tmp_path / "out" / "big_png.png").size == (40, 24)  # resized back to the input's size
    full = run_sample(
        conditional_ddpm, "--input", inputs, "--output", tmp_path / "full", "--steps", 2, "--full-size"
    )
    assert full.returncode == 0 and Image.open(tmp_path / "full" / "big_png.png").size == (40, 24)
    a, b = (np.asarray(Image.open(tmp_path / d / "big_png.png")) for d in ("out", "full"))
    assert not np.array_equal(a, b)  # a different computation, not the same one relabelled


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm"])
def test_every_sampler_works_at_every_valid_step_count(conditional_ddpm, scheduler):
    pipe = pipelines.load(conditional_ddpm)
    cond = torch.zeros(1, 3, 8, 8)
    for steps in (1, 2, 7, 19, 20):
        out = pipe(num_inference_steps=steps, scheduler=scheduler, condition=cond, progress=False,
                   generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all() and out.shape == (1, 3, 8, 8), (scheduler, steps)
    for steps in (0, 21):
        with pytest.raises(ValueError, match=f"num_inference_steps={steps}.*1..20"):
            pipe(num_inference_steps=steps, scheduler=scheduler, condition=cond, progress=False)


def test_unconditional_counts_are_checked(tmp_path):
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny").eval(), DDPMScheduler(num_train_timesteps=20))
    pipe.save_export(tmp_path / "export")
    for flags, named in (
        (["--num", "0", "--steps", "2"], "--num 0"),
        (["--batch-size", "0", "--steps", "2"], "--batch-size 0"),
        (["--steps", "1000", "--scheduler", "dpm"], "--steps 1000"),
    ):
        proc = run_sample(tmp_path / "export", "--output", tmp_path / "out", *flags)
        assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[
            -800:
        ]
    proc = run_sample(tmp_path / "export", "--output", tmp_path / "out", "--num", 3, "--steps", 20,
                      "--scheduler", "dpm")
    assert proc.returncode == 0 and "wrote 3 samples" in proc.stdout, proc.stderr[-2000:]
    again = run_sample(tmp_path / "export", "--output", tmp_path / "out", "--num", 3, "--steps", 2)
    assert again.returncode == 2 and "already exist" in again.stderr


def test_broken_weights_are_an_error_not_black_images(translator, tmp_path):
    net = create_model("unet", num_downs=5, ngf=4)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    TranslationPipeline(net, inference="eval").save_pretrained(tmp_path / "nan")
    inputs = write_inputs(tmp_path / "in", ["a.png"])
    proc = run_sample(tmp_path / "nan", "--input", inputs, "--output", tmp_path / "out")
    assert proc.returncode == 2 and "non-finite" in proc.stderr and not list((tmp_path / "out").glob("*.png"))
    seg = SegmentationPipeline(
        create_model("unet", num_downs=5, ngf=4, out_channels=3, out_activation="none"), 3
    )
    with torch.no_grad():
        next(seg.net.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        seg(torch.zeros(1, 3, 32, 32))  # argmax of NaN logits would be a plausible-looking class-0 map


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm"])
def test_training_grid_and_export_sample_the_same_images(tmp_path, scheduler):
    """The in-memory pipeline of the training grid and the exported one: same timesteps, same samples."""
    root = write_toy(tmp_path / "data" / "train", n=16).parent
    cfg = config.load(
        None,
        ddpm_overrides(
            tmp_path / "run",
            root,
            **{
                "train.max_steps": 2,
                "train.batch_size": 4,
                "ddpm.sample_scheduler": scheduler,
                "ddpm.sample_steps": 10,
                "ddpm.num_samples": 4,
            },
        ),
    )
    trainer = DDPMTrainer(cfg)
    trainer.fit()
    exported = pipelines.load(tmp_path / "run")
    a = trainer.pipeline()(4, 10, scheduler, torch.Generator().manual_seed(0), progress=False)
    b = exported(4, 10, scheduler, torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(a, b)


def test_label_map_inputs_render_as_in_training(tmp_path):
    """labels -> photo: the dataset's own label PNG (palette indices with the file's own colours, or
    8-bit ids) gives exactly the output evaluate computes from the training rendering."""
    from gen.data import build_paired
    from trainers import Pix2PixTrainer
    from test_segmentation import overrides, write_colour_classes
    write_colour_classes(tmp_path / "data" / "train", 4)
    write_colour_classes(tmp_path / "data" / "val", 2, seed=1)
    cfg = config.load(
        None,
        overrides(
            tmp_path,
            **{
                "method": "pix2pix",
                "data.direction": "AtoB",
                "train.max_steps": 2,
                "data.load_size": 32,
                "data.preprocess": "crop",
            },
        ),
    )
    Pix2PixTrainer(cfg).fit()
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.label_input == {"num_classes": 3, "first_label": 1, "ignore_label": None}
    item = build_paired(cfg.data, "val", train=False)[0]
    expected = pipe(item["input"][None])
    ids = np.asarray(Image.open(tmp_path / "data" / "val" / "0.png"))  # raw ids 1..3, mode L
    as_palette = Image.fromarray(ids.astype(np.uint8), "P")
    as_palette.putpalette(
        [255, 0, 255, 10, 20, 30, 200, 200, 0, 0, 90, 90] + [0] * 756
    )  # the file's own colours
    for img in (Image.open(tmp_path / "data" / "val" / "0.png"), as_palette):
        assert torch.equal(pipe(pipe.input_from_image(img)), expected)
    rendered = Image.fromarray(
        ((item["input"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    )
    assert torch.equal(pipe(pipe.input_from_image(rendered)), expected)  # an RGB map in gen's palette
    odd = np.array(rendered)
    odd[0, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"colours \['#010203'\] are not in the class palette"):
        pipe.input_from_image(Image.fromarray(odd))
    inputs = tmp_path / "labels"
    inputs.mkdir()
    as_palette.save(inputs / "0.png")
    proc = run_sample(
        tmp_path / "run", "--input", inputs, "--output", tmp_path / "photos", "--inference", "paper"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "photos" / "0.png")),
                          np.asarray(pipelines.load(tmp_path / "run").translate_image(as_palette)))


def test_every_documented_loader_restores_the_sampling_settings(tmp_path):
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny", in_channels=6, out_channels=3).eval(),
                                     DDPMScheduler(num_train_timesteps=20))
    pipe.sample_size, pipe.label_input = 16, {"num_classes": 3, "first_label": 1, "ignore_label": 0}
    pipe.save_export(tmp_path / "export")
    for loaded in (
        pipelines.load(tmp_path / "export"),
        DiffusionSamplingPipeline.from_pretrained(tmp_path / "export"),
    ):
        assert loaded.sample_size == 16
        assert loaded.label_input == {"num_classes": 3, "first_label": 1, "ignore_label": 0}
        ids = np.array([[0, 1], [2, 3]], np.uint8)  # 0 = the dataset's ignored value: rendered black
        cond = loaded.condition_from_image(Image.fromarray(ids, "L"))
        assert cond.shape == (1, 3, 2, 2) and torch.equal(cond[0, :, 0, 0], torch.full((3,), -1.0))
        assert loaded.scheduler.config.num_train_timesteps == 20


def test_conditional_samples_do_not_depend_on_the_other_files_in_the_folder(conditional_ddpm, tmp_path):
    """An input's noise is named by the seed and its file name (gen.seeding), everywhere."""
    inputs = write_inputs(tmp_path / "in", ["a.png", "b.png"], size=(8, 8))
    out = tmp_path / "out"
    proc = run_sample(conditional_ddpm, "--input", inputs, "--output", out, "--steps", 3, "--seed", 5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pipe = pipelines.load(conditional_ddpm)
    from gen.data.transforms import to_pil
    for name in ("a", "b"):
        cond = pipe.condition_from_image(Image.open(inputs / f"{name}.png"))
        expected = pipe.sample_for(cond, 1, 3, "ddim", 5, f"{name}.png")
        written = np.asarray(Image.open(out / f"{name}.png"))
        assert np.array_equal(written, np.asarray(to_pil(expected[0])))


def test_compare_refuses_runs_that_share_a_folder_name(translator, tmp_path):
    import shutil
    for parent in ("exp1", "exp2"):
        shutil.copytree(translator, tmp_path / parent / "p2p" / "export")
    from gen.compare import compare_runs
    from gen.data.evaluation import EvalData
    with pytest.raises(ValueError, match="share a folder name"):
        runs = [tmp_path / "exp1" / "p2p", tmp_path / "exp2" / "p2p"]
        compare_runs(EvalData("test", "paired", items=[]), runs)


def test_bit_depth_16_is_refused_where_it_cannot_apply(conditional_ddpm, translator, tmp_path):
    inputs = write_inputs(tmp_path / "in", ["a.png"])
    for export in (conditional_ddpm, translator):  # a DDPM; a 3-channel translator
        proc = run_sample(export, "--input", inputs, "--output", tmp_path / "o", "--bit-depth", 16,
                          "--steps", 2)
        assert proc.returncode == 2 and "--bit-depth 16 is for translators with single-channel" in proc.stderr
    assert not (tmp_path / "o").exists()
