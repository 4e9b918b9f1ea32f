"""The dense segmentation predictor: learns a colour -> class rule, exports, and labels a folder."""
import numpy as np
import torch
from PIL import Image

from gen import config, pipelines
from gen.evaluate import evaluate
from gen.data.build import eval_data
from trainers import SegmentationTrainer
from conftest import grid_size


def write_colour_classes(folder, n=8, size=32, seed=0):
    """Blocky photos of pure red/green/blue regions; label = 1 + the colour's index (raw ids 1..3)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        classes = np.kron(rng.integers(0, 3, (4, 4)), np.ones((size // 4, size // 4), int))
        photo = (np.eye(3)[classes] * 200 + 30).astype(np.uint8)
        Image.fromarray(photo).save(folder / f"{i}.jpg", quality=95)
        Image.fromarray((classes + 1).astype(np.uint8), "L").save(folder / f"{i}.png")


def overrides(tmp_path, **extra):
    items = {"method": "segmentation", "run.dir": tmp_path / "run", "data.kind": "segmentation",
             "data.root": tmp_path / "data", "data.train": "train", "data.val": "val", "data.test": "val",
             "data.num_classes": 3, "data.first_label": 1, "data.direction": "BtoA", "data.load_size": 36,
             "data.crop_size": 32, "model.generator": "unet", "model.num_downs": 5, "model.ngf": 8,
             "model.dropout": 0.0, "train.batch_size": 4, "train.lr": 2e-3, "train.max_steps": 60,
             "train.log_every": 20, "train.validate_every": 60, "train.ckpt_every": 60,
             "log.wandb": "disabled"}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def test_segmenter_learns_exports_and_labels_a_folder(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 8)
    write_colour_classes(tmp_path / "data" / "val", 2, seed=1)
    torch.manual_seed(0)
    cfg = config.load(None, overrides(tmp_path))
    trainer = SegmentationTrainer(cfg)
    trainer.build_data()
    trainer.build()
    trainer.prepare()
    before = trainer.validate(0)["mean_iu"]
    trainer = SegmentationTrainer(cfg)
    trainer.fit()
    result, grid = evaluate(tmp_path / "run", eval_data(cfg, "test"), grid_rows=2)
    assert result["images"] == 2 and result["mean_iu"] > 0.9 and result["mean_iu"] > before + 0.3, (
        before,
        result,
    )
    assert grid.size == grid_size(3, 2, 32)

    pipe = pipelines.load(tmp_path / "run")
    photo = Image.open(tmp_path / "data" / "val" / "0.jpg").crop((0, 0, 29, 23))  # odd size
    out = pipe.translate_image(photo)
    truth = np.asarray(Image.open(tmp_path / "data" / "val" / "0.png"))[:23, :29]
    assert out.size == (29, 23) and out.mode == "P"
    assert (np.asarray(out) == truth).mean() > 0.9  # raw ids 1..3, as in the dataset


def test_segmentation_needs_photo_to_labels(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="data.direction=BtoA"):
        config.load(None, overrides(tmp_path, **{"data.direction": "AtoB"}))


def test_fcn8s_segmenter_trains_and_exports(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 4)
    write_colour_classes(tmp_path / "data" / "val", 1, seed=1)
    cfg = config.load(None, overrides(tmp_path, **{"model.generator": "fcn8s", "model.num_downs": "null",
                                                   "train.max_steps": 4, "train.validate_every": 4,
                                                   "train.ckpt_every": 4}))
    SegmentationTrainer(cfg).fit()
    pipe = pipelines.load(tmp_path / "run")
    assert type(pipe.net).__name__ == "FCN" and pipe.net.config.variant == "fcn8s"
    assert pipe.method == "segmentation (FCN-8s, transposed upsampling)"  # compare's method column
    assert pipe(torch.rand(1, 3, 40, 50) * 2 - 1).shape == (1, 40, 50)


def test_fcn_score_of_labels_to_photo_run(tmp_path):
    """A segmenter scores a pix2pix labels -> photo run's outputs against the input labels; the same
    segmenter on the real photos gives the ground-truth row."""
    from gen.evaluate import evaluate
    from trainers import Pix2PixTrainer
    write_colour_classes(tmp_path / "data" / "train", 8)
    write_colour_classes(tmp_path / "data" / "val", 2, seed=1)
    torch.manual_seed(0)
    SegmentationTrainer(config.load(None, overrides(tmp_path))).fit()
    gan = config.load(None, overrides(tmp_path, **{"method": "pix2pix", "run.dir": tmp_path / "gan",
                                                   "data.direction": "AtoB", "train.max_steps": 4,
                                                   "train.validate_every": 4, "train.ckpt_every": 4}))
    Pix2PixTrainer(gan).fit()
    result, _ = evaluate(tmp_path / "gan", eval_data(gan, "test"), None, 2, segmenter=tmp_path / "run")
    truth, fake = result["fcn_score_ground_truth"], result["fcn_score"]
    assert set(truth) == set(fake) == {"pixel_acc", "mean_acc", "mean_iu", "fw_iu"}
    assert truth["pixel_acc"] > 0.9  # the segmenter reads real photos well ...
    assert fake["pixel_acc"] < truth["pixel_acc"]  # ... and a 4-step generator's photos worse


def test_grayscale_photos_train_a_one_channel_segmenter(tmp_path):
    write_colour_classes(tmp_path / "data" / "train", 4)
    write_colour_classes(tmp_path / "data" / "val", 1, seed=1)
    cfg = config.load(None, overrides(tmp_path, **{"data.channels_b": 1, "train.max_steps": 2,
                                                   "train.validate_every": 2, "train.ckpt_every": 2}))
    SegmentationTrainer(cfg).fit()
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.net.config.in_channels == 1
    from PIL import Image
    assert pipe.translate_image(Image.new("RGB", (40, 24))).size == (40, 24)  # colour input read as gray
