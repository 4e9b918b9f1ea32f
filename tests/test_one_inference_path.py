"""One inference path: for the same weights and items, training's validation, `sample.py evaluate`,
`sample.py compare` and `sample.py` on a folder give the same figures and the same images, in the
precision users train in (bf16 autocast: `train.mixed_precision=auto` on GPUs and AVX-512 BF16 CPUs)
as in fp32. And a seed names a sample: DDPM outputs do not move with the folder's other files or the
batch size."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_sample, tiny_overrides, write_aligned
from gen import config, pipelines
from gen.compare import compare_runs
from gen.data.build import eval_data
from gen.data.transforms import to_pil
from gen.evaluate import evaluate
from gen.methods import Sampling, SavedOutputs
from gen.metrics.domain import ClassifierSettings
from gen.visualize import image_grid
from test_colorization import colorization_overrides, write_banded
from test_cyclegan import cyclegan_overrides, write_unpaired
from test_ddpm import ddpm_overrides, write_conditional, write_toy
from test_segmentation import overrides as segmentation_overrides, write_colour_classes
from trainers import TRAINERS

TINY_CLASSIFIER = ClassifierSettings(width=4, epochs=1, min_steps=3, batch=8)  # CycleGAN's judge, in ms
DDPM_SAMPLING = {"ddpm.sample_steps": 3, "ddpm.sample_scheduler": "ddpm", "ddpm.num_samples": 4}


def setup(method: str, tmp, precision: str):
    """(config, split) of a 2-step run of `method` trained in `precision`; images at their own size
    (data.preprocess=none), so an item written as PNG reads back as the same tensor."""
    common = {"train.max_steps": 2, "train.mixed_precision": precision, "data.preprocess": "none",
              "train.eval_batches": 2}
    if method == "pix2pix":  # dropout on at inference (the paper's noise) and batch statistics
        write_aligned(tmp / "d" / "train", 4, size=32)
        write_aligned(tmp / "d" / "val", 3, size=32, seed=1)
        return config.load(None, tiny_overrides(tmp / "run", tmp / "d", **common)), "val"
    if method == "cyclegan":  # 2 test images of A, 1 of B: the smaller domain is not repeated
        root = write_unpaired(tmp / "d", n=4, size=32)
        (root / "testB" / "1.png").unlink()
        return config.load(None, cyclegan_overrides(tmp / "run", root, **common)), "test"
    if method == "colorization":
        write_banded(tmp / "d" / "train", 4)
        write_banded(tmp / "d" / "val", 5, seed=1)
        return config.load(None, colorization_overrides(tmp / "run", tmp / "d", **{
            **common, "train.eval_batches": 1, "colorization.prior": "imagenet"})), "val"
    if method == "segmentation":
        write_colour_classes(tmp / "data" / "train", 4)
        write_colour_classes(tmp / "data" / "val", 3, seed=1)
        cfg = config.load(None, segmentation_overrides(tmp, **common))
        return cfg, "val"
    if method.startswith("ddpm"):  # DDPM trains on fixed-size crops: 8x8 crops of 8x8 images, exact
        common.pop("data.preprocess")
        common["run.seed"] = 3  # sample.py and evaluate sample with the run's seed unless told
    if method == "ddpm_conditional":
        root = write_conditional(tmp / "d", n=6)
        shutil.copytree(root / "train", root / "val")
        return config.load(None, ddpm_overrides(tmp / "run", root, **{
            **common, **DDPM_SAMPLING, "data.kind": "paired", "data.layout": "folders", "data.flip": "false",
            "data.val": "val"})), "val"
    write_toy(tmp / "d" / "train", 8)  # unconditional DDPM
    return config.load(None, ddpm_overrides(tmp / "run", tmp / "d", **{**common, **DDPM_SAMPLING,
                                                                        "data.train": "train"})), "train"


def write_items(items, folder, key: str) -> list[str]:
    """Each item's `key` tensor as folder/<name stem>.png (exact: the tensors come from 8-bit files)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for item in items:
        stem = item["name"].rsplit(".", 1)[0]
        to_pil(item[key]).save(folder / f"{stem}.png")
        names.append(stem)
    return names


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def networks_of(pipe) -> list[torch.nn.Module]:
    """The networks a loaded pipeline holds (a CycleGAN export's: both directions')."""
    nets = []
    for value in vars(pipe).values():
        for v in value.values() if isinstance(value, dict) else [value]:
            if isinstance(v, torch.nn.Module):
                nets.append(v)
            elif hasattr(v, "__dict__") and type(v).__module__.startswith("gen.pipelines"):
                nets += networks_of(v)
    return nets


METHODS = ["pix2pix", "cyclegan", "colorization", "segmentation", "ddpm_conditional", "ddpm"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", METHODS)
def test_validation_evaluate_compare_and_folder_agree(method, precision, tmp_path):
    cfg, split = setup(method, tmp_path, precision)
    trainer = TRAINERS[cfg.method](cfg)
    assert trainer.cfg.train.mixed_precision == precision
    trainer.fit()
    run = tmp_path / "run"
    # A loaded export's tensors in memory of their own, 64-byte aligned as the trainer's: kernels whose
    # summation order follows alignment (oneDNN on AMD EPYC) then compute what validation computed.
    nets = networks_of(pipelines.load_export(run))
    assert len(nets) == (2 if method == "cyclegan" else 1)
    assert all(t.data_ptr() % 64 == 0 for n in nets for t in [*n.parameters(), *n.buffers()])
    logged = trainer.validate(cfg.train.max_steps)  # what validation logs, for the final weights
    data = eval_data(cfg, split)
    if method == "ddpm":  # sample.py --num 4 in batches of 1 and 3, evaluate's samples, the grid
        outs = {}
        for batch in (1, 3):
            out = tmp_path / f"num_b{batch}"
            proc = run_sample(run, "--num", 4, "--batch-size", batch, "--steps", 3, "--scheduler", "ddpm",
                              "--output", out)
            assert proc.returncode == 0, proc.stderr[-2000:]
            outs[batch] = [pixels(out / f"sample_{i:05d}.png") for i in range(4)]
        _, grid = evaluate(run, data, grid_rows=4, max_images=4, saved=SavedOutputs(tmp_path / "saved"),
                           sampling=Sampling(1, 3, "ddpm"))
        saved = [pixels(tmp_path / "saved" / f"sample_{i:05d}.png") for i in range(4)]
        for i in range(4):
            assert np.array_equal(outs[1][i], outs[3][i]), f"sample {i} depends on --batch-size"
            assert np.array_equal(outs[1][i], saved[i]), f"sample {i}: evaluate differs from sample.py"
        samples = pipelines.load(run).sample_numbers(range(4), 3, "ddpm", 3)
        assert np.array_equal(np.asarray(logged["grid"]), np.asarray(image_grid([list(samples[:2]),
                                                                                   list(samples[2:])])))
        return
    n = len(trainer.validation_items(per_batch=4 if method == "colorization" else 1))
    grid_rows = 8 if method == "colorization" else n
    sampling = Sampling(1, 3, "ddpm")  # seed: the run's own
    scored, grid = evaluate(run, data, grid_rows=grid_rows, max_images=n,
                            saved=SavedOutputs(tmp_path / "saved"), sampling=sampling,
                            classifier=TINY_CLASSIFIER)
    metrics = {k: v for k, v in logged.items() if k != "grid"}
    assert metrics and all(scored[k] == v for k, v in metrics.items()), (metrics, scored)
    assert np.array_equal(np.asarray(logged["grid"]), np.asarray(grid)), "validation grid != evaluate grid"
    if method != "cyclegan":  # compare scores paired items (CycleGAN is scored on unpaired data only)
        table = compare_runs(data, [run], max_images=n, sampling=sampling).table
        row = table[0] if method == "colorization" else table[-1]  # (the gray baseline comes last)
        assert all(row[k] == v for k, v in metrics.items()), (metrics, row)
    # sample.py on a folder of the same inputs writes what evaluate saved
    if method == "cyclegan":
        items = [{"name": p.name, "image": img} for p, img in
                 zip(data.files["A"][:n], [data_item for data_item in _domain_images(data, n)])]
        key, saved_dir, flags = "image", tmp_path / "saved" / "AtoB", ["--direction", "AtoB"]
    else:
        items = [data.items[i] for i in range(n)]
        key = "image" if method == "colorization" else "input"
        saved_dir, flags = tmp_path / "saved", []
    if method == "ddpm_conditional":
        flags = ["--steps", 3, "--scheduler", "ddpm"]
    names = write_items(items, tmp_path / "in", key)
    proc = run_sample(run, "--input", tmp_path / "in", "--output", tmp_path / "folder", *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stem in names:
        written = pixels(tmp_path / "folder" / f"{stem}.png")
        assert np.array_equal(written, pixels(saved_dir / f"{stem}.png")), stem
    if method == "pix2pix":  # the pipelines' bf16 option is one option too: evaluate = folder under it
        evaluate(run, data, grid_rows=1, max_images=n, saved=SavedOutputs(tmp_path / "saved16"),
                 precision="bf16")
        proc = run_sample(run, "--input", tmp_path / "in", "--output", tmp_path / "folder16",
                          "--precision", "bf16")
        assert proc.returncode == 0, proc.stderr[-2000:]
        for stem in names:
            bf16 = pixels(tmp_path / "folder16" / f"{stem}.png")
            assert np.array_equal(bf16, pixels(tmp_path / "saved16" / f"{stem}.png")), stem
            assert not np.array_equal(bf16, pixels(tmp_path / "folder" / f"{stem}.png"))  # bf16 did run


def _domain_images(data, n):
    from gen.methods import DomainImages
    images = DomainImages({"A": data.files["A"][:n], "B": []}, data.geometry, dict(zip("AB", data.channels)))
    return [images[i]["image"] for i in range(len(images))]


@pytest.fixture(scope="module")
def conditional_export(tmp_path_factory):
    torch.manual_seed(0)
    from diffusers import DDPMScheduler
    from gen.models import create_model
    from gen.pipelines import DiffusionSamplingPipeline
    root = tmp_path_factory.mktemp("cond")
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny", in_channels=6, out_channels=3).eval(),
                                     DDPMScheduler(num_train_timesteps=20))
    pipe.sample_size = 8
    pipe.save_export(root / "export")
    return root


def test_conditional_samples_follow_the_file_not_its_position(conditional_export, tmp_path):
    """Adding a file that sorts first leaves every other output as it was; k = 2 keeps sample 0."""
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    for name in ("b.png", "c.png", "sub/d.png"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(inputs / name)
    common = ["--steps", 3, "--scheduler", "ddpm", "--seed", 7]
    run = conditional_export
    assert run_sample(run, "--input", inputs, "--output", tmp_path / "before", *common).returncode == 0
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(inputs / "a.png")
    assert run_sample(run, "--input", inputs, "--output", tmp_path / "after", *common).returncode == 0
    proc = run_sample(run, "--input", inputs, "--output", tmp_path / "k2", "--samples-per-input", 2, *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("b", "c", "sub/d"):
        before = pixels(tmp_path / "before" / f"{name}.png")
        assert np.array_equal(before, pixels(tmp_path / "after" / f"{name}.png")), name
        assert np.array_equal(before, pixels(tmp_path / "k2" / f"{name}_0.png")), name
        assert not np.array_equal(before, pixels(tmp_path / "k2" / f"{name}_1.png")), name
    # two inputs get two different noises; the file's name, not its content, names the noise
    assert not np.array_equal(pixels(tmp_path / "before" / "b.png"), pixels(tmp_path / "before" / "c.png"))


def test_unconditional_samples_do_not_depend_on_the_batch(conditional_export):
    from diffusers import DDPMScheduler
    from gen.models import create_model
    from gen.pipelines import DiffusionSamplingPipeline
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny", in_channels=3, out_channels=3).eval(),
                                     DDPMScheduler(num_train_timesteps=20))
    pipe.sample_size = 8
    for scheduler in ("ddpm", "ddim", "dpm"):
        whole = pipe.sample_numbers(range(5), 4, scheduler, seed=3)
        parts = torch.cat([pipe.sample_numbers(range(0, 2), 4, scheduler, 3),
                           pipe.sample_numbers(range(2, 5), 4, scheduler, 3)])
        assert torch.allclose(whole, parts, atol=1e-5), scheduler
        assert not torch.allclose(whole[0], whole[1])
        assert torch.allclose(pipe.sample_numbers(range(4, 5), 4, scheduler, 3), whole[4:], atol=1e-5)


def test_paper_inference_does_not_depend_on_the_batch():
    """pix2pix's test-time noise (dropout) and batch statistics are per image: an image's output is
    the same alone or in a batch, at any position."""
    from gen.models import create_model
    from gen.pipelines import TranslationPipeline
    torch.manual_seed(0)
    net = create_model("unet", num_downs=5, ngf=8, dropout=0.5)
    pipe = TranslationPipeline(net, inference="paper", seed=4)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    batch = pipe(x)
    for i in range(3):
        assert torch.equal(pipe(x[i:i + 1]), batch[i:i + 1])
    assert torch.equal(pipe(x.flip(0)), batch.flip(0))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pipeline_precision_is_its_own_under_any_caller_autocast(precision):
    """A pipeline runs in its own precision whatever autocast region it is called from."""
    from gen.models import create_model
    from gen.pipelines import TranslationPipeline
    torch.manual_seed(0)
    pipe = TranslationPipeline(create_model("unet", num_downs=5, ngf=8, dropout=0.0), inference="eval")
    pipe.with_precision(precision)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    plain = pipe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "fp32"):
        assert torch.equal(pipe(x), plain)
    fp32 = TranslationPipeline(pipe.net, inference="eval")(x)
    assert torch.equal(plain, fp32) == (precision == "fp32")
    assert plain.dtype == torch.float32


def test_exports_written_before_the_one_class_key_still_load(tmp_path):
    """pipeline.json files naming the network under generator_class / model_class load; one missing
    an entry its kind needs is an error naming the file and the entry."""
    import json
    from gen.models import create_model
    from gen.pipelines import SegmentationPipeline, TranslationPipeline
    torch.manual_seed(0)
    TranslationPipeline(create_model("unet", num_downs=5, ngf=8)).save_pretrained(tmp_path / "t")
    segmenter = create_model("unet", num_downs=5, ngf=8, out_channels=3)
    SegmentationPipeline(segmenter, 3).save_pretrained(tmp_path / "s")
    for folder, old in (("t", "generator_class"), ("s", "model_class")):
        meta_file = tmp_path / folder / "pipeline.json"
        meta = json.loads(meta_file.read_text())
        meta[old] = meta.pop("network_class")
        meta_file.write_text(json.dumps(meta))
        assert pipelines.load(tmp_path / folder).net.config.in_channels == 3
    meta = json.loads((tmp_path / "t" / "pipeline.json").read_text())
    del meta["inference"]
    (tmp_path / "t" / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="pipeline.json has no 'inference' entry"):
        pipelines.load(tmp_path / "t")


def test_ddpm_conditions_keep_the_16bit_scale_of_training(conditional_export, tmp_path):
    """A DDPM trained on 16-bit conditions with data.max_16bit reads sample.py's inputs on that scale."""
    from gen.data.transforms import from_pil
    pipe = pipelines.load(conditional_export)
    pipe.max_16bit = 1000.0
    pipe.save_export(tmp_path / "export")
    again = pipelines.load(tmp_path / "export")
    img = Image.fromarray(np.full((8, 8), 500, np.uint16))
    assert again.max_16bit == 1000.0
    cond = again.condition_from_image(img)
    assert torch.equal(cond, from_pil(img, 3, 1000.0)) and cond.mean() > -0.1  # 500 of 1000: mid-gray
    assert not torch.equal(cond, from_pil(img, 3))  # not 500 of 65535, near black
