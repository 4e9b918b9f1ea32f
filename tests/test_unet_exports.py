"""U-Net exports across the Pix2PixUNet / DiffusionUNet split (issue 23): a config.json written by
the one-class UNet loads as the class of its block style with the same weights and the outputs the
one-class UNet computed; new exports name their class, hold only its knobs and load by UNet too."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from gen.models import DiffusionUNet, Pix2PixUNet, UNet, create_model

WEIGHTS = "diffusion_pytorch_model.safetensors"

# config.json as the one-class UNet wrote it (save_pretrained of the unet / ddpm_tiny presets)
ONE_CLASS_PIX2PIX = {
    "_class_name": "UNet", "_diffusers_version": "0.42.1", "attention_head_dim": None, "attention_levels": [],
    "block_style": "pix2pix", "channels": [8, 16, 32, 64, 64], "downsample_padding": 1, "dropout": 0.5,
    "dropout_levels": [], "in_channels": 3, "layers_per_level": 2, "norm": "batch", "norm_eps": 1e-06,
    "norm_groups": 32, "out_activation": "tanh", "out_channels": 3, "output_stride": 1,
    "time_flip_sin_to_cos": False, "time_freq_shift": 1, "upsample": "transposed",
}
ONE_CLASS_DDPM = {
    "_class_name": "UNet", "_diffusers_version": "0.42.1", "attention_head_dim": None,
    "attention_levels": [1], "block_style": "ddpm", "channels": [16, 32], "downsample_padding": 1,
    "dropout": 0.1, "dropout_levels": [], "in_channels": 3, "layers_per_level": 1, "norm": "group",
    "norm_eps": 1e-06, "norm_groups": 8, "out_activation": "none", "out_channels": 3, "output_stride": 1,
    "time_flip_sin_to_cos": False, "time_freq_shift": 1, "upsample": "transposed",
}

# (config.json, output shape, sum, mean |y|): the figures the one-class UNet computed for
# `set_weights` and `probe` (recorded with it before the split)
LEGACY = {
    "pix2pix": ({**ONE_CLASS_PIX2PIX}, (2, 3, 32, 32), 495.242527, 0.410161),
    "pix2pix_unpool_stride4": ({**ONE_CLASS_PIX2PIX, "in_channels": 1, "out_channels": 5,
                                "channels": [8, 16, 32, 32, 32], "norm": "instance", "upsample": "unpool",
                                "out_activation": "none", "output_stride": 4},
                               (2, 5, 8, 8), -165.352766, 0.729838),
    # + ddpm knobs the one-class UNet accepted and ignored for pix2pix
    "pix2pix_bilinear": ({**ONE_CLASS_PIX2PIX, "channels": [8, 16, 32, 32, 32], "upsample": "bilinear",
                          "dropout_levels": [3], "attention_levels": [1], "norm_groups": 8},
                         (2, 3, 32, 32), 599.509966, 0.417641),
    "ddpm": ({**ONE_CLASS_DDPM}, (2, 3, 32, 32), 4592.158784, 0.777331),
    "ddpm_layout": ({**ONE_CLASS_DDPM, "attention_levels": [0, 1], "attention_head_dim": 8, "norm_eps": 1e-05,
                     "time_flip_sin_to_cos": True, "time_freq_shift": 0, "downsample_padding": 0},
                    (2, 3, 32, 32), 4801.518885, 0.823040),
}


def set_weights(net):
    """Deterministic weights that need no RNG: sinusoids scaled by 1/sqrt(fan-in)."""
    with torch.no_grad():
        for j, (_, p) in enumerate(net.named_parameters()):
            w = torch.sin(torch.arange(p.numel(), dtype=torch.float64) * 0.7 + j).reshape(p.shape)
            p.copy_(w / math.sqrt(max(1, p[0].numel())))
    return net


def probe(net):
    c = net.config.in_channels
    x = torch.sin(torch.arange(2 * c * 32 * 32, dtype=torch.float64) * 0.013).reshape(2, c, 32, 32).float()
    with torch.no_grad():
        return net(x) if isinstance(net, Pix2PixUNet) else net(x, torch.tensor([3, 500]))


def write_one_class_export(folder, config):
    """An export as the one-class UNet saved it: its config.json, the tensors under the same names."""
    style = Pix2PixUNet if config["block_style"] == "pix2pix" else DiffusionUNet
    knobs = {k: v for k, v in config.items() if k in style.knobs}
    folder.mkdir()
    save_file(set_weights(style(**knobs)).state_dict(), str(folder / WEIGHTS))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


@pytest.mark.parametrize("case", sorted(LEGACY))
def test_one_class_exports_load_as_their_style_with_the_old_outputs(tmp_path, case):
    config, shape, total, mean_abs = LEGACY[case]
    folder = write_one_class_export(tmp_path / case, config)
    net = UNet.from_pretrained(folder).eval()
    style = Pix2PixUNet if config["block_style"] == "pix2pix" else DiffusionUNet
    assert type(net) is style and net.block_style == config["block_style"]
    saved = load_file(str(folder / WEIGHTS))
    assert saved.keys() == net.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    y = probe(net).double()
    assert tuple(y.shape) == shape
    assert y.sum().item() == pytest.approx(total, rel=1e-5, abs=1e-3)
    assert y.abs().mean().item() == pytest.approx(mean_abs, rel=1e-5)
    # The style's own class loads it too; the other class refuses it by name.
    assert torch.equal(probe(style.from_pretrained(folder).eval()), probe(net))
    other = DiffusionUNet if style is Pix2PixUNet else Pix2PixUNet
    with pytest.raises(ValueError, match=f"describes a {style.__name__}"):
        other.from_pretrained(folder)


@pytest.mark.parametrize("preset,kw", [("unet", dict(num_downs=5, ngf=8)), ("ddpm_tiny", {})])
def test_new_exports_name_their_class_and_load_by_unet(tmp_path, preset, kw):
    torch.manual_seed(0)
    net = create_model(preset, **kw).eval()
    net.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == type(net).__name__
    # only its own knobs: no block_style, none of the other style's
    assert {k for k in saved if not k.startswith("_")} == set(type(net).knobs)
    loaded = UNet.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(net) and torch.equal(probe(loaded), probe(net))
    # a network never saved: its config names its class as well
    assert type(UNet.from_config(create_model(preset, **kw).config)) is type(net)


def test_a_re_saved_one_class_export_is_a_new_export(tmp_path):
    old = write_one_class_export(tmp_path / "old", ONE_CLASS_DDPM)
    UNet.from_pretrained(old).save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert saved["_class_name"] == "DiffusionUNet" and "block_style" not in saved and "norm" not in saved
    assert torch.equal(probe(UNet.from_pretrained(tmp_path / "new").eval()),
                       probe(UNet.from_pretrained(old).eval()))


def test_unet_keeps_the_one_class_signature():
    ddpm = UNet(channels=(16, 32), block_style="ddpm", norm="group", dropout_levels=(), out_activation="none",
                layers_per_level=1, attention_levels=(1,), norm_groups=8, dropout=0.1)
    assert type(ddpm) is DiffusionUNet and isinstance(ddpm, UNet)
    assert ddpm.state_dict().keys() == create_model("ddpm_tiny").state_dict().keys()
    pix = UNet(channels=(8, 16, 32, 64, 64), dropout_levels=())  # block_style pix2pix by default
    assert type(pix) is Pix2PixUNet
    assert sum(p.numel() for p in pix.parameters()) == sum(
        p.numel() for p in create_model("unet", num_downs=5, ngf=8).parameters())
    # the other style's knobs at a value that would change the network are refused, as before
    with pytest.raises(ValueError, match=r"\['norm_eps'\] apply to block_style='ddpm' only"):
        UNet(channels=(8, 16), norm_eps=1e-5)
    with pytest.raises(ValueError, match=r"\['dropout_levels'\] apply to block_style='pix2pix' only"):
        UNet.from_config({**ONE_CLASS_DDPM, "dropout_levels": [0]})
    with pytest.raises(TypeError, match="colour"):
        UNet(colour=3)


def test_each_class_takes_only_its_own_knobs():
    with pytest.raises(TypeError, match="attention_levels"):
        Pix2PixUNet(channels=(8, 16), attention_levels=(1,))
    with pytest.raises(TypeError, match="norm"):
        DiffusionUNet(channels=(16, 32), norm_groups=8, norm="batch")
    with pytest.raises(ValueError, match=r"dropout_levels \[5\] are outside 0..1"):
        Pix2PixUNet(channels=(8, 16), dropout_levels=(5,))
    with pytest.raises(ValueError, match=r"attention_levels \[2\] are outside 0..1"):
        DiffusionUNet(channels=(16, 32), norm_groups=8, attention_levels=(2,))
    with pytest.raises(ValueError, match="multiples of norm_groups=32"):
        DiffusionUNet(channels=(16, 32))
