"""Reference pix2pix/CycleGAN checkpoints -> gen presets: the shared fixtures' outputs reproduced,
the layout inferred from shapes, legacy keys handled, bad files refused, the CLI's export sampled."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from conftest import ROOT
from gen import pipelines
from gen.convert import convert_reference, read_state_dict, to_reference
from gen.convert.__main__ import main as convert_main
from gen.models import create_model, init_weights

FIXTURES = ROOT.parent / "shared" / "fixtures" / "jz"
CASES = {  # fixture -> (kind, preset, inferred options)
    "pix2pix_unet_256_ngf8": (
        "generator",
        "unet_256",
        dict(ngf=8, norm="batch", in_channels=3, out_channels=3),
    ),
    "cyclegan_resnet_9blocks_ngf8": (
        "generator",
        "resnet_9blocks",
        dict(ngf=8, norm="instance", dropout=0.0),
    ),
    "patchgan_n3_ndf8_in6": (
        "discriminator",
        "patchgan",
        dict(ndf=8, n_layers=3, in_channels=6, norm="batch"),
    ),
}


@pytest.fixture
def fixtures():
    if not FIXTURES.is_dir():
        pytest.skip(f"reference-format fixtures not found at {FIXTURES} (../shared exists only in CI/dev)")
    return FIXTURES


def randomise(net: nn.Module) -> nn.Module:
    """Random weights and batch-norm statistics, so a mis-mapped tensor shows in the output."""
    init_weights(net, 0.2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_fixture_outputs_are_reproduced(fixtures, name):
    conv = convert_reference(read_state_dict(fixtures / f"{name}.pth"), name)
    kind, preset, options = CASES[name]
    assert (conv.kind, conv.preset) == (kind, preset)
    assert {k: conv.options[k] for k in options} == options
    io = torch.load(fixtures / f"{name}.io.pt", weights_only=True)
    with torch.no_grad():
        out = conv.net(io["input"])
    assert out.shape == io["output"].shape
    assert (out - io["output"]).abs().max().item() <= 1e-5


def test_full_width_unet_256_round_trips_through_the_reference_layout():
    """ngf 64 (the published generators' width): 54,413,955 parameters, the reference's key names."""
    torch.manual_seed(0)
    net = randomise(create_model("unet_256"))
    state = to_reference(net)
    assert (
        "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight" in state
    )  # innermost
    conv = convert_reference(state)
    assert conv.preset == "unet_256" and conv.options["ngf"] == 64
    assert sum(p.numel() for p in conv.net.parameters()) == 54_413_955
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        assert torch.equal(conv.net(x), net(x))


@pytest.mark.parametrize(
    "preset,kw,size",
    [
        ("unet", dict(num_downs=6, ngf=4, norm="instance", dropout=0.0), 64),
        ("unet_128", dict(ngf=4, norm="batch"), 128),
        ("resnet_6blocks", dict(ngf=4, norm="batch", dropout=0.5), 32),
        ("patchgan", dict(ndf=4, n_layers=2, norm="instance", in_channels=4), 32),
        ("pixelgan", dict(ndf=4, norm="batch"), 16),
    ],
)
def test_any_depth_width_and_norm_is_inferred(preset, kw, size):
    torch.manual_seed(1)
    net = randomise(create_model(preset, **kw))
    # a U-Net's dropout is not in its weights: the caller states it (a ResNet's block layout shows it)
    conv = convert_reference(
        to_reference(net), dropout=kw.get("dropout") if preset.startswith("unet") else None
    )
    assert all(conv.options.get(k, v) == v for k, v in kw.items() if k != "num_downs"), conv.options
    if preset == "unet":
        assert conv.options["num_downs"] == 6
    x = torch.rand(2, net.config.in_channels, size, size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(conv.net(x), net(x))


def test_layers_the_reference_builds_without_bias_get_a_zero_bias():
    """The reference PixelDiscriminator's last conv has no bias with batch norm; with norm 'none' no
    conv but the always-biased ones has one. A bias the reference always has is never zero-filled."""
    torch.manual_seed(2)
    cases = (("pixelgan", dict(ndf=4), ["net.5.bias"], ["net.0.bias"]),
             ("unet", dict(num_downs=5, ngf=4, norm="none", dropout=0.0), ["model.model.1.model.1.bias"],
              ["model.model.3.bias"]))
    for preset, kw, absent, present in cases:
        net = randomise(create_model(preset, **kw))  # init_weights zeroes every bias
        state = to_reference(net)
        assert not set(absent) & set(state) and set(present) <= set(state)
        conv = convert_reference(state, dropout=0.0 if preset == "unet" else None)
        assert any("zero bias" in n for n in conv.notes)
        x = torch.randn(1, net.config.in_channels, 32, 32)
        with torch.no_grad():
            assert torch.equal(conv.net(x), net(x))
    outermost = dict(to_reference(net))
    del outermost["model.model.3.bias"]  # the reference always biases the last up-conv
    with pytest.raises(ValueError, match=r"missing keys \['model.model.3.bias'\]"):
        convert_reference(outermost, dropout=0.0)
    with torch.no_grad():
        net.downs[1].body[1].bias.fill_(0.1)
    with pytest.raises(ValueError, match="builds that layer without a bias"):
        to_reference(net)


def test_legacy_instance_norm_statistics_and_dataparallel_prefix_are_dropped():
    torch.manual_seed(3)
    net = randomise(create_model("resnet_6blocks", ngf=4))
    state = to_reference(net)
    # PyTorch < 0.4 saved running statistics for InstanceNorm layers (model.2 is the first norm)
    state.update(
        {
            "model.2.running_mean": torch.zeros(4),
            "model.2.running_var": torch.ones(4),
            "model.2.num_batches_tracked": torch.tensor(0),
            "model.10.conv_block.2.running_mean": torch.zeros(16),
        }
    )
    state = {f"module.{k}": v for k, v in state.items()}
    conv = convert_reference(state)
    assert any("InstanceNorm running statistics" in n for n in conv.notes)
    assert any("module." in n for n in conv.notes)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(conv.net(x), net(x))


def test_mismatched_and_foreign_state_dicts_name_the_keys():
    torch.manual_seed(4)
    state = to_reference(create_model("unet", num_downs=5, ngf=4))
    extra = dict(state, **{"model.model.1.model.9.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \['model.model.1.model.9.weight'\]"):
        convert_reference(extra, "g.pth")
    missing = {k: v for k, v in state.items() if k != "model.model.1.model.5.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['model.model.1.model.5.weight'\]"):
        convert_reference(missing, "g.pth")
    wrong = dict(state, **{"model.model.1.model.1.weight": torch.zeros(9, 4, 4, 4)})
    with pytest.raises(ValueError, match=r"model.model.1.model.1.weight has shape \(9, 4, 4, 4\)"):
        convert_reference(wrong, "g.pth")
    ddpm = create_model("ddpm_tiny").state_dict()  # another architecture entirely
    with pytest.raises(ValueError, match="not a reference pix2pix/CycleGAN network.*conv_in"):
        convert_reference(ddpm, "unet.pth")


class Booby:
    """Unpickling this would create a file: a refused load must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bad_files_are_refused_without_unpickling(tmp_path, fixtures):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((fixtures / "pix2pix_unet_256_ngf8.pth").read_bytes()[:100_000])
    with pytest.raises(ValueError, match="truncated.pth: not a readable torch checkpoint"):
        read_state_dict(truncated)
    marker = tmp_path / "ran.txt"
    whole_model = tmp_path / "whole_model.pth"
    torch.save({"net": Booby(marker)}, whole_model)
    with pytest.raises(ValueError, match="pickled Python objects.*does not unpickle"):
        read_state_dict(whole_model)
    assert not marker.exists()
    module = tmp_path / "module.pth"
    torch.save(nn.Conv2d(1, 1, 1), module)  # torch.save(net) instead of net.state_dict()
    with pytest.raises(ValueError, match="pickled Python objects"):
        read_state_dict(module)
    net = create_model("patchgan", ndf=4)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(1, 6, 32, 32)).mean().backward()
    opt.step()
    optimizer = tmp_path / "latest_net_D_optimizer.pth"
    torch.save(opt.state_dict(), optimizer)
    with pytest.raises(ValueError, match="an optimizer state"):
        read_state_dict(optimizer)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")


def test_cli_export_samples_like_the_reference_and_never_overwrites(tmp_path, fixtures, capsys):
    out = tmp_path / "facades_label2photo"
    args = [
        "reference",
        str(fixtures / "pix2pix_unet_256_ngf8.pth"),
        "--out",
        str(out),
        "--discriminator",
        str(fixtures / "patchgan_n3_ndf8_in6.pth"),
        "--inference",
        "eval",
    ]
    assert convert_main(args) == 0
    printed = capsys.readouterr().out
    assert "unet_256(" in printed and "patchgan(" in printed and "dropout 0.5 assumed" in printed
    assert (out / "export" / "discriminator" / "config.json").is_file()
    pipe = pipelines.load(out)
    io = torch.load(fixtures / "pix2pix_unet_256_ngf8.io.pt", weights_only=True)
    assert (pipe(io["input"]) - io["output"]).abs().max().item() <= 1e-5  # eval: the fixture's semantics
    paper = pipelines.load(out, inference="paper")
    assert not torch.allclose(paper(io["input"]), io["output"], atol=1e-3)  # dropout + batch statistics
    assert convert_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    # a discriminator given as the generator is refused by name
    assert (
        convert_main(["reference", str(fixtures / "patchgan_n3_ndf8_in6.pth"), "--out", str(tmp_path / "d")])
        == 2
    )
    assert "a discriminator (patchgan), given as the generator" in capsys.readouterr().err


def test_reference_checkpoint_folder_becomes_a_cyclegan_export(tmp_path):
    torch.manual_seed(5)
    folder = tmp_path / "checkpoints" / "horse2zebra"
    folder.mkdir(parents=True)
    nets = {
        "G_A": create_model("resnet_6blocks", ngf=4),
        "G_B": create_model("resnet_6blocks", ngf=4),
        "D_A": create_model("patchgan", in_channels=3, ndf=4),
        "D_B": create_model("patchgan", in_channels=3, ndf=4),
    }
    for role, net in nets.items():
        torch.save(to_reference(randomise(net)), folder / f"latest_net_{role}.pth")
    torch.save({"state": {}, "param_groups": []}, folder / "latest_net_G_A_optimizer.pth")  # ignored by name
    assert convert_main(["reference", str(folder), "--out", str(tmp_path / "run")]) == 0
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for direction, role in (("AtoB", "G_A"), ("BtoA", "G_B")):
        pipe = pipelines.load(tmp_path / "run", direction=direction)
        with torch.no_grad():
            assert torch.equal(pipe(x), nets[role](x))
        assert (tmp_path / "run" / "export" / direction / "discriminator" / "config.json").is_file()


def test_an_incomplete_export_is_named_not_looked_up_online(tmp_path, fixtures):
    """diffusers reads a missing local folder as a hub id; gen checks the folder first."""
    out = tmp_path / "converted"
    assert convert_main(["reference", str(fixtures / "pix2pix_unet_256_ngf8.pth"), "--out", str(out)]) == 0
    shutil.rmtree(out / "export" / "generator")
    with pytest.raises(FileNotFoundError, match="generator/config.json not found: the export is incomplete"):
        pipelines.load(out)


def test_cyclegan_unets_have_no_dropout_unless_train_opt_says_so(tmp_path, capsys):
    """The reference CycleGAN trains with no_dropout=True; its train_opt.txt, when present, decides."""
    torch.manual_seed(6)
    folder = tmp_path / "checkpoints" / "maps_cyclegan"
    folder.mkdir(parents=True)
    for role in ("G_A", "G_B"):
        net = create_model("unet", num_downs=5, ngf=4, norm="instance", dropout=0.0)
        torch.save(to_reference(randomise(net)), folder / f"latest_net_{role}.pth")
    assert convert_main(["reference", str(folder), "--out", str(tmp_path / "a")]) == 0
    assert "dropout 0 (the reference trains CycleGAN without dropout" in capsys.readouterr().out
    assert pipelines.load(tmp_path / "a").net.config.dropout_levels == []
    (folder / "train_opt.txt").write_text(
        "----------------- Options ---------------\n"
        "               no_dropout: False                  \t[default: True]\n"
        "                    model: cycle_gan\n"
        "----------------- End -------------------\n")
    assert convert_main(["reference", str(folder), "--out", str(tmp_path / "b")]) == 0
    assert "no_dropout: False" in capsys.readouterr().out


def test_generators_that_are_not_image_translators_are_refused(tmp_path, capsys):
    """The reference's colorization model maps L -> ab (1 -> 2 channels): not a translator gen can run."""
    torch.save(to_reference(create_model("unet", num_downs=5, ngf=4, in_channels=1, out_channels=2)),
               tmp_path / "latest_net_G.pth")
    assert convert_main(["reference", str(tmp_path / "latest_net_G.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "1 -> 2 channels" in capsys.readouterr().err and not (tmp_path / "o" / "export").exists()
