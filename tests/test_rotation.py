"""Rotation-prediction pre-training (Gidaris et al. 2018) and fine-tuning a segmenter from it."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gen import config
from trainers import RotationTrainer, SegmentationTrainer
from trainers.rotation import four_rotations
from test_segmentation import overrides, write_colour_classes


def write_upright_scenes(folder, n=8, size=32, seed=0):
    """Photos with a bright top and dark bottom (so 'up' is learnable) and random blocks; labels too."""
    write_colour_classes(folder, n, size, seed)
    ramp = np.linspace(1.0, 0.2, size)[:, None, None]
    for i in range(n):
        photo = np.asarray(Image.open(folder / f"{i}.jpg"), dtype=np.float64)
        Image.fromarray((photo * ramp).astype(np.uint8)).save(folder / f"{i}.jpg", quality=95)


def test_four_rotations_batch():
    x = torch.arange(8.0).reshape(2, 1, 2, 2)
    rotated, labels = four_rotations(x)
    assert rotated.shape == (8, 1, 2, 2) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(rotated[2], torch.rot90(x[0], 1, dims=(1, 2)))  # every image, all four ways


def test_rotation_pretraining_learns_and_initialises_a_segmenter(tmp_path):
    write_upright_scenes(tmp_path / "data" / "train", 8)
    write_upright_scenes(tmp_path / "data" / "val", 2, seed=1)
    torch.manual_seed(0)
    rot = config.load(None, overrides(tmp_path, **{"method": "rotation", "run.dir": tmp_path / "rot",
                                                   "train.max_steps": 40, "train.sample_every": 40,
                                                   "train.ckpt_every": 40, "model.norm": "instance"}))
    trainer = RotationTrainer(rot)
    trainer.fit()
    assert trainer.validate(40)["rotation_acc"] >= 0.75  # chance is 0.25

    seg = config.load(None, overrides(tmp_path, **{"model.init_from": tmp_path / "rot", "train.max_steps": 1,
                                                   "model.norm": "instance", "train.lr": 1e-12}))
    t = SegmentationTrainer(seg)
    t.build()
    encoder = load_file(str(tmp_path / "rot" / "export" / "encoder" / "diffusion_pytorch_model.safetensors"))
    state = t.models["segmenter"].state_dict()
    downs = [k for k in encoder if k.startswith("downs.")]
    assert downs and all(torch.equal(state[k], encoder[k]) for k in downs)

    bad = config.load(None, overrides(tmp_path, **{"model.init_from": tmp_path / "rot", "model.ngf": 4,
                                                   "model.norm": "instance"}))
    with pytest.raises(ValueError, match="does not fit this U-Net"):
        SegmentationTrainer(bad).build()
