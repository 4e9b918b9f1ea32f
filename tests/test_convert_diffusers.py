"""diffusers UNet2DModel <-> gen's ddpm U-Net: equal noise predictions, gen exports sampled by
diffusers' DDPMPipeline alone (gen not importable) with the same images, options gen lacks refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gen import pipelines
from gen.convert.__main__ import main as convert_main
from gen.convert.diffusers_unet import from_unet2d, gen_config, to_unet2d
from gen.models import create_model
from gen.pipelines.diffusion import DiffusionSamplingPipeline

# google/ddpm-cifar10-32's UNet2DModel configuration (Ho et al.'s CIFAR-10 model as diffusers ships it)
CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_eps=1e-6,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    time_embedding_type="positional",
    mid_block_scale_factor=1,
)
TINY = dict(
    sample_size=16,
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)


def random_unet2d(seed: int = 0, **config) -> UNet2DModel:
    torch.manual_seed(seed)
    model = UNet2DModel(**config).eval()
    with torch.no_grad():  # off the default init (zero biases, unit norms) so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_cifar10_unet2dmodel_converts_to_the_ddpm_cifar10_preset_with_equal_predictions():
    model = random_unet2d(**CIFAR10)
    net = from_unet2d(model)
    preset = create_model("ddpm_cifar10", downsample_padding=0)
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in preset.state_dict().items()
    }
    assert sum(p.numel() for p in net.parameters()) == 35_746_307
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 900])
    with torch.no_grad():
        assert relative(net(x, t), model(x, t).sample) <= 1e-5
        back = to_unet2d(net, 32)
        assert relative(back(x, t).sample, model(x, t).sample) <= 1e-5


def test_diffusers_default_layout_converts_too():
    """diffusers' own defaults: cos-first embedding, shift 0, 8-dim heads, eps 1e-5, symmetric padding."""
    model = random_unet2d(**TINY)
    net = from_unet2d(model)
    assert net.config.time_flip_sin_to_cos and net.config.attention_head_dim == 8
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 500])
    with torch.no_grad():
        assert relative(net(x, t), model(x, t).sample) <= 1e-5


@pytest.mark.parametrize(
    "option,value",
    [
        ("resnet_time_scale_shift", "scale_shift"),
        ("time_embedding_type", "fourier"),
        ("act_fn", "gelu"),
        ("center_input_sample", True),
    ],
)
def test_options_gen_does_not_have_are_refused_by_name(option, value):
    config = dict(UNet2DModel(**TINY).config, **{option: value})
    with pytest.raises(ValueError, match=option):
        gen_config(config)
    odd = dict(UNet2DModel(**TINY).config, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"))
    with pytest.raises(ValueError, match="CrossAttnDownBlock2D"):
        gen_config(odd)


def tiny_export(path, seed=0):
    torch.manual_seed(seed)
    unet = create_model("ddpm_tiny")
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="linear", timestep_spacing="trailing")
    DiffusionSamplingPipeline(unet.eval(), scheduler, sample_size=16).save_export(path / "export")
    return path


DIFFUSERS_ALONE = """
import sys
sys.modules["gen"] = None  # gen must not be needed: any import of it fails
import numpy as np, torch
from diffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained(sys.argv[1])
images = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=10,
              output_type="np").images
np.save(sys.argv[2], images)
"""


def test_gen_ddpm_export_samples_the_same_images_in_diffusers_alone(tmp_path):
    run = tiny_export(tmp_path / "run")
    out = tmp_path / "diffusers_folder"
    assert convert_main(["to-diffusers", str(run), "--out", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]
    proc = subprocess.run(
        [sys.executable, "-c", DIFFUSERS_ALONE, str(out), str(tmp_path / "d.npy")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = np.load(tmp_path / "d.npy")  # (B, H, W, C) in [0, 1]
    pipe = pipelines.load(run)
    ours = pipe(2, 10, "ddpm", torch.Generator().manual_seed(7), progress=False)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert theirs.shape == ours.shape == (2, 16, 16, 3)
    assert np.abs(theirs - ours).max() <= 1e-4
    assert convert_main(["to-diffusers", str(run), "--out", str(out)]) == 2  # never overwritten unasked


def test_conditional_export_has_no_diffusers_pipeline(tmp_path, capsys):
    unet = create_model("ddpm_tiny", in_channels=6, out_channels=3)
    DiffusionSamplingPipeline(unet, DDPMScheduler(num_train_timesteps=50), sample_size=16).save_export(
        tmp_path / "export"
    )
    assert convert_main(["to-diffusers", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "no condition input" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_diffusers_folder_becomes_a_gen_export_with_its_scheduler(tmp_path, capsys):
    model = random_unet2d(**TINY)
    folder = tmp_path / "ddpm-tiny"
    DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2").save_pretrained(
        folder / "scheduler"
    )
    model.save_pretrained(folder / "unet")
    assert convert_main(["diffusers", str(folder), "--out", str(tmp_path / "run")]) == 0
    assert "noise schedule from" in capsys.readouterr().out
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.scheduler.config.num_train_timesteps == 200 and pipe.sample_size == 16
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([42])
    with torch.no_grad():
        assert relative(pipe.unet(x, t), model(x, t).sample) <= 1e-5
    assert convert_main(["diffusers", "someone/not-cached-model", "--out", str(tmp_path / "x")]) == 2
    assert "not in the local Hugging Face cache" in capsys.readouterr().err


def test_to_diffusers_never_replaces_its_source_or_a_foreign_folder(tmp_path, capsys):
    run = tiny_export(tmp_path / "run")
    assert convert_main(["to-diffusers", str(run), "--out", str(run), "--overwrite"]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["export"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert convert_main(["to-diffusers", str(run), "--out", str(other), "--overwrite"]) == 2
    assert (other / "notes.txt").read_text() == "keep me" and "model_index.json" in capsys.readouterr().err
