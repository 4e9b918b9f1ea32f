"""Rotation-prediction pre-training (Gidaris et al. 2018) and fine-tuning a segmenter from it."""
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gen import config
from gen.models import create_model
from trainers import RotationTrainer, SegmentationTrainer
from trainers.pretrained_encoder import encoder_of, load_pretrained_encoder
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
                                                   "train.max_steps": 40, "train.validate_every": 40,
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


def test_fcn_encoder_pretrains_by_rotation_and_stays_frozen_when_asked(tmp_path):
    """FCN-32s-fixed (Long et al. Table 1): the rotation-pretrained encoder is loaded, then frozen:
    bit-identical weights and norm statistics after training, none of them in the optimizer."""
    write_upright_scenes(tmp_path / "data" / "train", 8)
    write_upright_scenes(tmp_path / "data" / "val", 2, seed=1)
    fcn = {"model.generator": "fcn32s", "model.ngf": 4, "model.num_downs": "null"}
    rot = config.load(None, overrides(tmp_path, **{"method": "rotation", "run.dir": tmp_path / "rot",
                                                   "train.max_steps": 4, "train.validate_every": 4,
                                                   "train.ckpt_every": 4, **fcn}))
    RotationTrainer(rot).fit()
    encoder = load_file(str(tmp_path / "rot" / "export" / "encoder" / "diffusion_pytorch_model.safetensors"))
    stages = {k: v for k, v in encoder.items() if k.startswith("stages.")}
    frozen = {"model.init_from": tmp_path / "rot", "model.freeze": "encoder", "train.max_steps": 3}
    seg = config.load(None, overrides(tmp_path, **frozen, **fcn))
    t = SegmentationTrainer(seg)
    t.fit()
    net = t.unwrap("segmenter")
    after = net.state_dict()
    assert stages and all(torch.equal(after[k], v) for k, v in stages.items())  # weights and BN statistics
    in_optimizer = {id(p) for group in t.optimizers["segmenter"].param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in net.stages.parameters()}
    assert in_optimizer == {id(p) for p in net.parameters() if p.requires_grad}
    head = load_file(str(tmp_path / "run" / "export" / "segmenter" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(head["head.0.weight"], encoder["head.0.weight"])  # the rest did learn
    unfrozen = config.load(None, overrides(tmp_path, **{"model.freeze": "encoder", **fcn}))
    with pytest.raises(ValueError, match="model.freeze=encoder .* set model.init_from"):
        SegmentationTrainer(unfrozen).build()
    with pytest.raises(ValueError, match="model.freeze"):
        config.load(None, overrides(tmp_path, **{"method": "rotation", "model.freeze": "encoder"}))


def test_pretrained_encoder_copies_only_the_encoder_of_its_own_architecture(tmp_path):
    torch.manual_seed(0)
    unet, fcn = create_model("unet", num_downs=5, ngf=4), create_model("fcn32s", ngf=4)
    assert encoder_of(unet) is unet.downs and encoder_of(fcn) is fcn.stages
    with pytest.raises(ValueError, match="DiffusionUNet has no encoder"):
        encoder_of(create_model("ddpm_tiny"))
    for name, net in (("unet", unet), ("fcn", fcn)):
        net.save_pretrained(tmp_path / name / "export" / "encoder")
    fresh = create_model("unet", num_downs=5, ngf=4)
    copied = load_pretrained_encoder(fresh, tmp_path / "unet")
    state = fresh.state_dict()
    assert copied == len([k for k in state if k.startswith("downs.")])
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items() if k.startswith("downs."))
    decoder = "ups.0.body.1.weight"
    assert not torch.equal(state[decoder], unet.state_dict()[decoder])  # only the encoder is copied
    with pytest.raises(ValueError, match=r"does not fit this U-Net \(e.g. no downs.\* tensors\)"):
        load_pretrained_encoder(fresh, tmp_path / "fcn")
    with pytest.raises(FileNotFoundError, match="no rotation-pretrained encoder"):
        load_pretrained_encoder(fresh, tmp_path / "nothing")
