"""The decoder's upsampling choices on hand-made inputs: fixed bilinear (zero insertion + the
[1/4, 1/2, 1/4] filter) reproduces linear interpolation; max unpooling puts values back at the
encoder's argmax positions; every choice builds, runs and trains through the U-Net."""
import pytest
import torch
from torch import nn

from gen.models import create_model
from gen.models.layers import max_unpool2x2
from gen.models.unet import BilinearUpsample


def test_bilinear_upsample_is_linear_interpolation():
    x = torch.tensor([[1.0, 3.0, 7.0], [5.0, 9.0, 2.0], [0.0, 4.0, 6.0]])[None, None]
    y = BilinearUpsample(1)(x)[0, 0]
    assert y.shape == (6, 6)
    assert torch.equal(y[::2, ::2], x[0, 0])  # original samples kept at even positions
    assert y[0, 1].item() == pytest.approx((1 + 3) / 2)  # between two columns
    assert y[1, 0].item() == pytest.approx((1 + 5) / 2)  # between two rows
    assert y[1, 1].item() == pytest.approx((1 + 3 + 5 + 9) / 4)  # centre of four
    ramp = torch.arange(5.0).expand(1, 1, 5, 5)  # a linear ramp stays a ramp with half the step
    assert torch.allclose(BilinearUpsample(1)(ramp)[0, 0, 2, :9], torch.arange(9.0) / 2)
    assert sum(p.numel() for p in BilinearUpsample(4).parameters()) == 0  # fixed, not learned


def test_unpooling_restores_values_at_argmax_positions():
    g = create_model("unet", num_downs=5, ngf=2, upsample="unpool", norm="none")
    down = g.downs[0]
    x = torch.tensor([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 6.0], [0.0, 2.0, 1.0, 1.0], [9.0, 1.0, 3.0, 7.0]])
    pooled, switches = down.pool(x[None, None])
    assert pooled[0, 0].tolist() == [[5.0, 8.0], [9.0, 7.0]]
    restored = max_unpool2x2(pooled, switches)[0, 0]
    expected = torch.zeros(4, 4)
    for r, c in [(0, 1), (1, 2), (3, 0), (3, 3)]:  # where the maxima were
        expected[r, c] = x[r, c]
    assert torch.equal(restored, expected)


@pytest.mark.parametrize("upsample", ["transposed", "bilinear", "unpool"])
def test_every_upsampling_choice_trains(upsample):
    torch.manual_seed(0)
    g = create_model("unet", num_downs=5, ngf=8, upsample=upsample, out_activation="none", dropout=0.0)
    # Smooth inputs: a fixed bilinear decoder cannot invent detail finer than its stride-2 skips carry.
    x = nn.functional.interpolate(torch.randn(4, 3, 8, 8), size=32, mode="bilinear", align_corners=False)
    target = x.flip(1)  # a per-pixel mapping every decoder can express
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = nn.functional.mse_loss(g(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (upsample, losses[0], losses[-1])
    assert g.forward_any_size(torch.randn(1, 3, 20, 27)).shape == (1, 3, 20, 27)


@pytest.mark.parametrize("factor", [2, 32])
def test_fcn_learned_upsampling_starts_bilinear(factor):
    from gen.models.fcn import bilinear_upsample
    x = torch.randn(1, 3, 6, 6)
    y = bilinear_upsample(3, factor)(x)
    ref = nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    inner = slice(factor, -factor)  # away from the zero-padded border
    assert y.shape == ref.shape
    assert torch.allclose(y[..., inner, inner], ref[..., inner, inner], atol=1e-5)


def test_fcn_variants_fuse_more_skips():
    from gen.models import create_model
    nets = {v: create_model(v, out_channels=5, ngf=4) for v in ("fcn32s", "fcn16s", "fcn8s")}
    assert [len(n.skip_scores) for n in nets.values()] == [0, 1, 2]
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    for net in nets.values():
        assert net.eval()(x).shape == (1, 5, 64, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        nets["fcn8s"](torch.randn(1, 3, 48, 48))


def test_fcn_built_from_config_keeps_its_bilinear_and_zero_skip_init():
    """The trainers' init (N(0, 0.02) for every conv) must leave FCN's own init alone; upsample=bilinear
    freezes the interpolation and the optimizer then never moves it."""
    from gen import config
    from gen.models.fcn import bilinear_kernel
    from trainers.builders import adam, build_generator
    for upsample in ("transposed", "bilinear"):
        cfg = config.load(None, ["model.generator=fcn8s", "model.ngf=4", f"model.upsample={upsample}",
                                 "data.kind=builtin", "data.builtin_size=64"])
        net = build_generator(cfg, 3, 5, out_activation="none")
        assert torch.equal(net.final_up.weight, bilinear_kernel(5, 8))
        assert all(torch.equal(u.weight, bilinear_kernel(5, 2)) for u in net.fuse_up)
        assert all(not c.weight.any() and not c.bias.any() for c in net.skip_scores)
        assert net.final_up.weight.requires_grad == (upsample == "transposed")
        opt = adam(cfg, net)
        loss = net(torch.randn(2, 3, 64, 64)).square().mean()
        loss.backward()
        opt.step()
        assert torch.equal(net.final_up.weight, bilinear_kernel(5, 8)) == (upsample == "bilinear")
    with pytest.raises(ValueError, match="model.upsample='unpool'"):
        build_generator(
            config.load(None, ["model.generator=fcn8s", "model.upsample=unpool", "data.kind=builtin"]),
            3,
            5,
            out_activation="none",
        )
