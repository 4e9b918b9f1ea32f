"""Parameter counts and shapes against the reference architectures; receptive fields by gradient."""
import pytest
import torch

from gen.models import DiffusionUNet, Pix2PixUNet, UNet, create_model, list_models


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,count", [("unet_256", 54_413_955), ("unet_128", 41_828_995), ("patchgan", 2_768_705),
                   ("ddpm_cifar10", 35_746_307)]
)
def test_reference_parameter_counts(name, count):
    assert n_params(create_model(name)) == count


@pytest.mark.parametrize("name", list_models())
def test_every_preset_rebuilds_from_its_config(name):
    """from_config(net.config), what loading an export does, builds the network with its overrides."""
    net = create_model(name, in_channels=2)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    for cls in {type(net), UNet} if isinstance(net, UNet) else {type(net)}:
        twin = cls.from_config(net.config)
        assert type(twin) is type(net) and {k: v.shape for k, v in twin.state_dict().items()} == shapes


def test_unet_presets_build_their_style():
    for name in list_models("generator"):
        if name.startswith(("unet", "ddpm")):
            net = create_model(name, **({"num_downs": 5, "ngf": 8} if name == "unet" else {}))
            assert isinstance(net, UNet)
            assert type(net) is (DiffusionUNet if name.startswith("ddpm") else Pix2PixUNet), name


def test_unet_256_and_patchgan_shapes():
    torch.manual_seed(0)
    g, d = create_model("unet_256").eval(), create_model("patchgan").eval()
    with torch.no_grad():
        y = g(torch.randn(1, 3, 256, 256))
        assert y.shape == (1, 3, 256, 256) and y.abs().max() <= 1  # tanh output
        assert d(torch.cat([y, y], 1)).shape == (1, 1, 30, 30)


def receptive_field(net, size):
    """Width of the input region that influences the centre output logit (by gradient)."""
    x = torch.randn(1, 6, size, size, requires_grad=True)
    out = net(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    cols = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero()
    return int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("n_layers,rf", [(1, 16), (2, 34), (3, 70), (4, 142), (5, 286)])
def test_patchgan_receptive_field_by_gradient(n_layers, rf):
    torch.manual_seed(0)
    net = create_model("patchgan", ndf=4, n_layers=n_layers, norm="none")  # norm off: no cross-pixel stats
    assert receptive_field(net, 320) == rf


def test_pixelgan_is_per_pixel():
    net = create_model("pixelgan", ndf=8).eval()
    assert net(torch.randn(2, 6, 17, 9)).shape == (2, 1, 17, 9)
    assert receptive_field(create_model("pixelgan", ndf=4, norm="none"), 16) == 1


def test_dropout_on_the_reference_levels():
    g = create_model("unet_256")
    with_dropout = [
        i for i, up in enumerate(g.ups) if any(isinstance(m, torch.nn.Dropout) for m in up.modules())
    ]
    assert with_dropout == [4, 5, 6]  # the three 8ngf blocks between the innermost and the 4ngf level


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_unet_any_size_and_norms(norm):
    g = create_model("unet", num_downs=5, ngf=8, norm=norm, in_channels=1, out_channels=2).eval()
    with torch.no_grad():
        assert g.forward_any_size(torch.randn(1, 1, 37, 50)).shape == (1, 2, 37, 50)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        g(torch.randn(1, 1, 40, 40))


def test_registry_errors_and_listing():
    assert {"unet", "unet_256", "unet_128", "patchgan", "pixelgan"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'unet_512'"):
        create_model("unet_512")
    with pytest.raises(ValueError, match="bad overrides"):
        create_model("patchgan", colour=3)
    with pytest.raises(ValueError, match="block_style"):
        UNet(block_style="transformer")


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    g = create_model("unet", num_downs=5, ngf=8).eval()
    g.save_pretrained(tmp_path)
    h = UNet.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(g(x), h(x))
    assert list(h.config.channels) == list(g.config.channels)
