"""model.init_from: a run starts from exactly the weights of a gen run, a converted reference
checkpoint or a diffusers U-Net (generators and discriminators), and a mismatch names the layer."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides, write_aligned
from gen import config
from gen.convert import to_reference
from gen.convert.__main__ import main as convert_main
from gen.models import create_model
from test_convert_diffusers import TINY, random_unet2d
from test_cyclegan import cyclegan_overrides, write_unpaired
from test_ddpm import ddpm_overrides, write_toy
from trainers import CycleGANTrainer, DDPMTrainer, Pix2PixTrainer


def saved(folder):
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def assert_holds(net, state):
    current = net.state_dict()
    assert set(current) == set(state)
    assert all(torch.equal(current[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("source")
    write_aligned(tmp / "data" / "train", 8, seed=0)
    write_aligned(tmp / "data" / "val", 2, seed=1)
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp / "run", tmp / "data"))).fit()
    return tmp


def test_pix2pix_starts_from_a_runs_generator_and_discriminator(pix2pix_run, tmp_path, capsys):
    export = pix2pix_run / "run" / "export"
    assert (export / "discriminator" / "config.json").is_file()  # exports keep D for fine-tuning
    cfg = config.load(
        None,
        tiny_overrides(
            tmp_path / "ft",
            pix2pix_run / "data",
            **{"model.init_from": pix2pix_run / "run", "train.max_steps": 1},
        ),
    )
    trainer = Pix2PixTrainer(cfg)
    trainer.setup()
    assert_holds(trainer.unwrap("generator"), saved(export / "generator"))
    assert_holds(trainer.unwrap("discriminator"), saved(export / "discriminator"))
    assert "model.init_from: generator <-" in capsys.readouterr().out
    assert trainer.step == 0  # weights only: the schedule starts fresh


def test_a_mismatching_network_names_the_layer(pix2pix_run, tmp_path):
    cfg = config.load(
        None,
        tiny_overrides(
            tmp_path / "ft", pix2pix_run / "data", **{"model.init_from": pix2pix_run / "run", "model.ngf": 4}
        ),
    )
    with pytest.raises(
        ValueError,
        match=r"generator does not fit.*downs\.0\.body\.0\.weight: source \(8, 3, 4, 4\) "
        r"vs this run \(4, 3, 4, 4\).*'channels': \(\[8, 16, 32, 64, 64\], \(4, 8,",
    ):
        Pix2PixTrainer(cfg).setup()
    missing = config.load(
        None,
        tiny_overrides(tmp_path / "ft2", pix2pix_run / "data", **{"model.init_from": tmp_path / "nothing"}),
    )
    with pytest.raises(FileNotFoundError, match="no gen export there"):
        Pix2PixTrainer(missing).setup()


def test_pix2pix_fine_tunes_a_converted_reference_checkpoint(pix2pix_run, tmp_path):
    torch.manual_seed(0)
    g = create_model("unet", num_downs=5, ngf=8)
    d = create_model("patchgan", ndf=8)
    torch.save(to_reference(g), tmp_path / "latest_net_G.pth")
    torch.save(to_reference(d), tmp_path / "latest_net_D.pth")
    assert convert_main(["reference", str(tmp_path), "--out", str(tmp_path / "converted")]) == 0
    cfg = config.load(
        None,
        tiny_overrides(tmp_path / "ft", pix2pix_run / "data", **{"model.init_from": tmp_path / "converted"}),
    )
    trainer = Pix2PixTrainer(cfg)
    trainer.setup()
    assert_holds(trainer.unwrap("generator"), g.state_dict())
    assert_holds(trainer.unwrap("discriminator"), d.state_dict())


def test_cyclegan_starts_from_a_converted_cyclegan_export(tmp_path):
    torch.manual_seed(1)
    nets = {
        "G_A": create_model("unet", num_downs=5, ngf=8, norm="instance", dropout=0.0),
        "G_B": create_model("unet", num_downs=5, ngf=8, norm="instance", dropout=0.0),
        "D_A": create_model("patchgan", in_channels=3, ndf=8, norm="instance"),
        "D_B": create_model("patchgan", in_channels=3, ndf=8, norm="instance"),
    }
    for role, net in nets.items():
        torch.save(to_reference(net), tmp_path / f"latest_net_{role}.pth")
    assert (
        convert_main(["reference", str(tmp_path), "--out", str(tmp_path / "converted"), "--dropout", "0"])
        == 0
    )
    write_unpaired(tmp_path / "data")
    cfg = config.load(
        None,
        cyclegan_overrides(
            tmp_path / "run", tmp_path / "data", **{"model.init_from": tmp_path / "converted"}
        ),
    )
    trainer = CycleGANTrainer(cfg)
    trainer.setup()
    for role, net in nets.items():
        assert_holds(trainer.unwrap(role), net.state_dict())


def test_ddpm_starts_from_a_diffusers_unet_in_its_layout(tmp_path):
    model = random_unet2d(**TINY)  # ddpm_tiny's shapes, diffusers' default embedding layout
    model.save_pretrained(tmp_path / "diffusers_unet")
    write_toy(tmp_path / "data" / "train", n=16)
    cfg = config.load(
        None,
        ddpm_overrides(
            tmp_path / "run", tmp_path / "data", **{"model.init_from": tmp_path / "diffusers_unet"}
        ),
    )
    trainer = DDPMTrainer(cfg)
    trainer.setup()
    net = trainer.unwrap("unet")
    assert net.config.time_flip_sin_to_cos and net.config.attention_head_dim == 8  # the source's layout
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 60])
    with torch.no_grad():
        out = net.eval()(x, t)
        assert ((out - model(x, t).sample).abs().max() / out.abs().max()).item() <= 1e-5
    assert all(torch.equal(s, p) for s, p in zip(trainer.ema.shadow_params, net.parameters()))  # EMA too


def test_same_shapes_other_function_and_wrong_export_kind_are_refused(pix2pix_run, tmp_path):
    """Instance norm and no norm have the same tensors; loading one into the other would run silently."""
    torch.manual_seed(2)
    instance = create_model("unet", num_downs=5, ngf=8, norm="instance", dropout=0.0)
    torch.save(to_reference(instance), tmp_path / "g.pth")
    assert convert_main(["reference", str(tmp_path / "g.pth"), "--out", str(tmp_path / "inst")]) == 0
    overrides = {"model.init_from": tmp_path / "inst", "model.norm": "none", "model.dropout": 0.0}
    cfg = config.load(None, tiny_overrides(tmp_path / "ft", pix2pix_run / "data", **overrides))
    with pytest.raises(ValueError, match=r"computes another function.*'norm': \('instance', 'none'\)"):
        Pix2PixTrainer(cfg).setup()
    for role in ("G_A", "G_B"):
        torch.save(to_reference(instance), tmp_path / f"latest_net_{role}.pth")
    assert convert_main(["reference", str(tmp_path), "--out", str(tmp_path / "cyc")]) == 0
    cfg = config.load(None, tiny_overrides(tmp_path / "ft2", pix2pix_run / "data",
                                           **{"model.init_from": tmp_path / "cyc"}))
    with pytest.raises(ValueError, match="a cyclegan export, but this run starts from a translation export"):
        Pix2PixTrainer(cfg).setup()


def test_ddpm_source_trained_toward_another_target_is_refused_naming_its_values(tmp_path):
    """A diffusers folder whose scheduler says v-prediction does not start an epsilon run (nor a gen
    epsilon export a v + zero-SNR one): the error gives the source's values; matching them loads."""
    from diffusers import DDPMScheduler
    model = random_unet2d(**TINY)
    model.save_pretrained(tmp_path / "src")
    DDPMScheduler(prediction_type="v_prediction", beta_end=0.012).save_pretrained(tmp_path / "src")
    write_toy(tmp_path / "data" / "train", n=16)
    start = {"model.init_from": tmp_path / "src"}
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", tmp_path / "data", **start))
    with pytest.raises(ValueError, match="values: ddpm.prediction_type=v_prediction ddpm.beta_end=0.012$"):
        DDPMTrainer(cfg).setup()
    cfg = config.load(None, ddpm_overrides(tmp_path / "run2", tmp_path / "data", **start, **{
        "ddpm.prediction_type": "v_prediction", "ddpm.beta_end": 0.012}))
    DDPMTrainer(cfg).setup()  # matched: it loads
    eps = config.load(None, ddpm_overrides(tmp_path / "eps", tmp_path / "data", **{"train.max_steps": 1}))
    DDPMTrainer(eps).fit()
    cfg = config.load(None, ddpm_overrides(tmp_path / "run3", tmp_path / "data", **{
        "model.init_from": tmp_path / "eps", "ddpm.prediction_type": "v_prediction",
        "ddpm.zero_terminal_snr": "true"}))
    with pytest.raises(ValueError, match="ddpm.prediction_type=epsilon ddpm.zero_terminal_snr=false"):
        DDPMTrainer(cfg).setup()
