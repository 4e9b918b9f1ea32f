"""Zhang-style colorization: Lab, bins, soft-encoding, rebalancing, annealed mean, metrics, learning,
export and sample.py on a folder."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color

from gen import config, pipelines
from gen.color import (
    annealed_mean,
    gamut_bins,
    join_lab,
    lab_to_rgb,
    rebalance_weights,
    rgb_to_lab,
    smooth_prior,
    soft_encode,
    split_lab,
    zhang_bins,
    zhang_prior,
)
from gen.metrics.colorization import AuCAccumulator, colourfulness
from trainers import ColorizationTrainer
from conftest import run_sample


def test_default_bins_are_the_papers_313(shared_data):
    bins = zhang_bins()
    assert bins.shape == (313, 2)
    shipped = np.load(shared_data / "zhang_colorization" / "pts_in_hull.npy")
    assert np.array_equal(bins, shipped)
    assert np.allclose(zhang_prior(), np.load(shared_data / "zhang_colorization" / "prior_probs.npy"))


def test_gamut_bins_follow_the_documented_rule():
    bins = gamut_bins(10)
    assert 200 <= len(bins) <= 280 and len(bins) != 313  # the rule gives fewer than the paper's 313
    assert np.all(bins % 10 == 0)
    assert len(gamut_bins(5)) > 3 * len(bins)  # finer grid, more bins
    assert [0, 0] in bins.tolist() and [100, -100] not in bins.tolist()  # gray is in gamut; a corner is not


def test_lab_matches_scikit_image_and_round_trips():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (6, 7, 3))
    rgb[0, :3] = [[0, 0, 0], [1, 1, 1], [1, 0, 0]]
    ours = rgb_to_lab(torch.tensor(rgb).permute(2, 0, 1)[None].float())
    ref = color.rgb2lab(rgb)
    assert np.abs(ours[0].permute(1, 2, 0).numpy() - ref).max() < 1e-3
    back = lab_to_rgb(ours)[0].permute(1, 2, 0).numpy()
    assert np.abs(back - rgb).max() < 1e-4
    assert np.abs(back - color.lab2rgb(ref)).max() < 1e-4
    l_norm, ab = split_lab(torch.tensor(rgb).permute(2, 0, 1)[None].float() * 2 - 1)
    assert l_norm.min() >= -1 and l_norm.max() <= 1 and ab.shape == (1, 2, 6, 7)
    assert torch.allclose(
        join_lab(l_norm, ab), torch.tensor(rgb).permute(2, 0, 1)[None].float() * 2 - 1, atol=1e-4
    )


def test_soft_encoding_rows():
    centres = torch.from_numpy(zhang_bins()).float()
    ab = torch.tensor([[[[0.0, 13.0]], [[0.0, -47.0]]]])  # (1, 2, 1, 2): gray and a blue-ish colour
    z = soft_encode(ab, centres, neighbours=5, sigma=5.0)
    assert z.shape == (1, 313, 1, 2)
    torch.testing.assert_close(z.sum(dim=1), torch.ones(1, 1, 2))
    assert ((z > 0).sum(dim=1) == 5).all()
    # Weights are the normalised Gaussian of the distances to the 5 nearest centres.
    d2 = ((centres - torch.tensor([0.0, 0.0])) ** 2).sum(1)
    near = d2.topk(5, largest=False)
    expected = torch.exp(-near.values / 50)
    torch.testing.assert_close(z[0, near.indices, 0, 0], expected / expected.sum())
    assert z[0, :, 0, 0].argmax() == d2.argmin()


def test_rebalancing_weights_have_expectation_one():
    rng = np.random.default_rng(1)
    centres = zhang_bins()
    counts = rng.integers(0, 1000, len(centres)).astype(float)
    prior = smooth_prior(counts, centres, sigma=5)
    assert np.isclose(prior.sum(), 1)
    w = rebalance_weights(prior, mix=0.5)
    assert np.isclose((prior * w).sum(), 1.0)
    assert np.allclose(rebalance_weights(prior, mix=1.0), 1.0)  # all uniform: no rebalancing
    w0 = rebalance_weights(prior, mix=0.0)
    assert np.allclose(w0 * prior, w0[0] * prior[0])  # mix 0: w proportional to 1 / prior
    assert w[prior.argmin()] > 1 > w[prior.argmax()]  # rare colours up, common colours down


def test_annealed_mean_limits():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, -60.0]])
    p = torch.tensor([0.2, 0.5, 0.3])
    logits = p.log().view(1, 3, 1, 1)
    mean = annealed_mean(logits, centres, temperature=1.0)[0, :, 0, 0]
    torch.testing.assert_close(mean, (p[:, None] * centres).sum(0))
    mode = annealed_mean(logits, centres, temperature=0.01)[0, :, 0, 0]
    torch.testing.assert_close(mode, centres[1], atol=1e-3, rtol=0)
    default = annealed_mean(logits, centres)[0, :, 0, 0]  # T = 0.38: between the two
    assert 25 < default[0] < 50
    with pytest.raises(ValueError):
        annealed_mean(logits, centres, temperature=0)


def test_auc_of_perfect_prediction_and_of_a_hand_computed_gray_baseline():
    ab_true = torch.tensor([0.0, 6.0, 120.0, 8.0, 0.0, 160.0]).view(1, 2, 1, 3)  # a: 0, 6, 120; b: 8, 0, 160
    bins = torch.tensor([[0, 1, 1]])
    perfect = AuCAccumulator(2)
    perfect.update(ab_true, ab_true, bins)
    assert perfect.scores() == {"AuC": 1.0, "AuC_rebalanced": 1.0}
    gray = AuCAccumulator(2)
    gray.update(torch.zeros_like(ab_true), ab_true, bins)  # errors: 8, 6, 200
    # Raw: pixel 1 counts for t >= 8 (143 of 151 thresholds), pixel 2 for t >= 6 (145), pixel 3 never.
    raw = (143 + 145) / (3 * 151)
    # Rebalanced: bin 0 holds pixel 1 (weight 1), bin 1 holds pixels 2 and 3 (weight 1/2 each).
    rebalanced = (143 + 0.5 * 145) / (2 * 151)
    got = gray.scores()
    assert got["AuC"] == pytest.approx(raw) and got["AuC_rebalanced"] == pytest.approx(rebalanced)


def test_colourfulness_by_hand():
    gray = torch.zeros(1, 3, 4, 4)
    assert colourfulness(gray) == [pytest.approx(0.0)]
    red_black = torch.tensor([[1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]]).view(1, 3, 1, 2)
    # rg = (255, 0), yb = (127.5, 0): std (127.5, 63.75), mean (127.5, 63.75) -> 1.3 * |(127.5, 63.75)|
    assert colourfulness(red_black)[0] == pytest.approx(1.3 * np.hypot(127.5, 63.75), rel=1e-5)


def write_banded(folder, n=24, size=32, seed=0):
    """Colour predictable from lightness: a bright yellow band over a dark blue one, at random heights."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        cut = rng.integers(8, size - 8)
        img[:cut] = (240, 220, 40)
        img[cut:] = (20, 30, 140)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def colorization_overrides(run_dir, root, **extra):
    items = {"method": "colorization", "run.dir": run_dir, "data.kind": "images", "data.root": root,
             "data.train": "train", "data.val": "val", "data.test": "val", "data.preprocess": "crop",
             "data.load_size": 32, "data.crop_size": 32, "model.generator": "unet", "model.num_downs": 5,
             "model.ngf": 8, "model.ndf": 8, "train.batch_size": 4, "train.max_steps": 40, "train.lr": 2e-3,
             "train.beta1": 0.9, "train.lr_decay_start": 1.0, "train.log_every": 10,
             "train.validate_every": 40, "train.ckpt_every": 40, "train.eval_batches": 1,
             "log.wandb": "disabled"}
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def banded_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    write_banded(root / "train", 24, seed=0)
    write_banded(root / "val", 4, seed=1)
    return root


def ab_error(pipe, root) -> float:
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 127.5 - 1).permute(2, 0, 1)
                          for p in sorted((root / "val").glob("*.png"))])
    l_norm, ab = split_lab(images)
    return float((pipe(l_norm).cpu() - ab).norm(dim=1).mean())


@pytest.mark.parametrize("loss", ["classification", "l2"])
def test_colorization_learns_colour_from_lightness(banded_root, tmp_path, loss):
    cfg = config.load(
        None, colorization_overrides(tmp_path / "run", banded_root, **{"colorization.loss": loss})
    )
    trainer = ColorizationTrainer(cfg)
    trainer.build_data()
    trainer.build()
    before = ab_error(trainer.pipeline(), banded_root)
    trainer = ColorizationTrainer(cfg)
    trainer.fit()
    after = ab_error(pipelines.load(tmp_path / "run"), banded_root)
    gray = ab_error(lambda l_norm: torch.zeros(l_norm.shape[0], 2, *l_norm.shape[-2:]), banded_root)
    assert after < 0.5 * gray and after < 0.5 * before, (before, after, gray)


def test_prior_is_cached_and_q_follows_the_bins(banded_root, tmp_path):
    cfg = config.load(None, colorization_overrides(tmp_path / "run", banded_root, **{
        "colorization.bins": "gamut", "train.max_steps": 2, "train.validate_every": 2,
        "train.ckpt_every": 2}))
    trainer = ColorizationTrainer(cfg)
    trainer.fit()
    q = len(gamut_bins(10))
    assert trainer.unwrap("generator").config.out_channels == q
    cache = tmp_path / "run" / "color_prior.json"
    stamp = cache.stat().st_mtime_ns
    again = ColorizationTrainer(cfg)
    again.build_data()
    again.build()
    assert cache.stat().st_mtime_ns == stamp  # read, not recomputed
    assert torch.equal(again.weights, trainer.weights)
    assert again.weights.shape == (q,)
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.bins.shape == (q, 2)
    with pytest.raises(ValueError, match="colorization.prior=imagenet"):
        bad = config.load(None, colorization_overrides(tmp_path / "r2", banded_root, **{
            "colorization.bins": "gamut", "colorization.prior": "imagenet"}))
        ColorizationTrainer(bad).build()


def test_colorization_needs_images_data(banded_root, tmp_path):
    with pytest.raises(ValueError, match="data.kind"):
        config.load(None, colorization_overrides(tmp_path / "run", banded_root, **{"data.kind": "paired"}))


def test_sample_cli_colorizes_any_size_keeping_l(banded_root, tmp_path):
    run = tmp_path / "run"
    ColorizationTrainer(config.load(None, colorization_overrides(run, banded_root, **{
        "train.max_steps": 2, "train.validate_every": 2, "train.ckpt_every": 2}))).fit()
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (21, 37, 3), dtype=np.uint8)).save(inputs / "colour.png")
    Image.fromarray(rng.integers(0, 255, (50, 19), dtype=np.uint8)).save(inputs / "gray.png")
    out = tmp_path / "out"
    proc = run_sample(run, "--input", inputs, "--output", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("colour.png", "gray.png"):
        src, got = Image.open(inputs / name).convert("RGB"), Image.open(out / name)
        assert got.size == src.size and got.mode == "RGB"
        l_src = color.rgb2lab(np.asarray(src) / 255.0)[..., 0]
        l_got = color.rgb2lab(np.asarray(got) / 255.0)[..., 0]
        assert np.median(np.abs(l_src - l_got)) < 1.0  # the input's own L (up to 8-bit rounding, gamut clips)


def test_sparse_soft_targets_give_the_dense_loss_and_gradient():
    """Zhang et al. eq. 2-3 from the K nearest bins (memory ~K) equals the dense (B, Q, H, W) form."""
    from gen.color import nearest_bins, soft_cross_entropy
    torch.manual_seed(0)
    centres = torch.from_numpy(zhang_bins()).float()
    ab = torch.rand(2, 2, 6, 5) * 160 - 80
    class_weights = torch.rand(len(centres)) + 0.5
    logits = torch.randn(2, len(centres), 6, 5, requires_grad=True)
    z = soft_encode(ab, centres, neighbours=5, sigma=5.0)  # dense reference
    dense = (-(z * torch.log_softmax(logits, 1)).sum(1) * class_weights[z.argmax(1)]).mean()
    (g_dense,) = torch.autograd.grad(dense, logits)
    idx, w = nearest_bins(ab, centres, neighbours=5, sigma=5.0, chunk=7)  # chunks split pixels oddly
    assert idx.shape == w.shape == (2, 5, 6, 5)
    assert torch.allclose(w.sum(1), torch.ones(2, 6, 5))
    assert torch.equal(idx[:, 0], z.argmax(1))  # nearest bin first
    sparse = soft_cross_entropy(logits, idx, w, class_weights)
    (g_sparse,) = torch.autograd.grad(sparse, logits)
    assert torch.allclose(sparse, dense, rtol=1e-6)
    assert torch.allclose(g_sparse, g_dense, rtol=1e-4, atol=1e-10)


def test_quarter_resolution_loss_scores_each_block_against_its_pixels():
    """Logits at 1/4 resolution: every full-resolution target pixel scores the prediction of its 4x4
    block, equal to the dense loss on nearest-upsampled logits (value and gradient)."""
    import torch.nn.functional as F

    from gen.color import nearest_bins, soft_cross_entropy
    torch.manual_seed(0)
    centres = torch.from_numpy(zhang_bins()).float()
    ab = torch.rand(2, 2, 8, 12) * 160 - 80
    class_weights = torch.rand(len(centres)) + 0.5
    logits = torch.randn(2, len(centres), 2, 3, requires_grad=True)
    z = soft_encode(ab, centres, neighbours=5, sigma=5.0)
    up = F.interpolate(logits, scale_factor=4, mode="nearest")
    dense = (-(z * torch.log_softmax(up, 1)).sum(1) * class_weights[z.argmax(1)]).mean()
    (g_dense,) = torch.autograd.grad(dense, logits)
    idx, w = nearest_bins(ab, centres)
    quarter = soft_cross_entropy(logits, idx, w, class_weights, stride=4)
    (g_quarter,) = torch.autograd.grad(quarter, logits)
    assert torch.allclose(quarter, dense, rtol=1e-6)
    assert torch.allclose(g_quarter, g_dense, rtol=1e-4, atol=1e-10)
    for shape, stride in (((3, 3), 4), ((2, 3), 1), ((4, 6), 4)):  # wrong size, missing or wrong stride
        with pytest.raises(ValueError, match="do not tile"):
            soft_cross_entropy(torch.randn(2, len(centres), *shape), idx, w, stride=stride)


def test_unet_output_stride_replaces_the_last_decoder_levels_by_a_1x1_head():
    from gen.models import create_model
    from gen.models.unet import UNet
    full = create_model("unet", num_downs=5, ngf=8, in_channels=1, out_channels=313, out_activation="none")
    quarter = create_model("unet", num_downs=5, ngf=8, in_channels=1, out_channels=313, out_activation="none",
                           output_stride=4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # removed: ups[0] ConvT(16 -> 313, 4x4) + bias, ups[1] ConvT(32 -> 8, 4x4) + BatchNorm(8);
    # added: the head's 1x1 Conv(32 -> 313) + bias
    assert count(full) - count(quarter) == (16 * 313 * 16 + 313) + (32 * 8 * 16 + 16) - (32 * 313 + 313)
    x = torch.randn(2, 1, 64, 32)
    assert quarter(x).shape == (2, 313, 16, 8)
    assert quarter.forward_any_size(torch.randn(1, 1, 30, 37)).shape == (1, 313, 8, 10)  # ceil(H / 4)
    with pytest.raises(ValueError, match="output_stride=32"):
        create_model("unet", num_downs=5, output_stride=32)
    with pytest.raises(ValueError, match="ddpm style at 1 only"):
        UNet(channels=(32, 64), block_style="ddpm", output_stride=2)


def test_colorization_at_quarter_resolution_learns_and_colorizes_any_size(banded_root, tmp_path):
    run = tmp_path / "run"
    cfg = config.load(None, colorization_overrides(run, banded_root, **{"colorization.output_stride": 4}))
    ColorizationTrainer(cfg).fit()
    pipe = pipelines.load(run)
    assert pipe.net.out_stride == 4
    gray = ab_error(lambda l_norm: torch.zeros(l_norm.shape[0], 2, *l_norm.shape[-2:]), banded_root)
    assert ab_error(pipe, banded_root) < 0.5 * gray
    odd = torch.rand(1, 3, 21, 30) * 2 - 1
    out = pipe.colorize(odd)
    assert out.shape == odd.shape
    # the input's own L (up to gamut clipping of the predicted colour)
    assert (split_lab(out)[0] - split_lab(odd)[0]).abs().median() < 0.01
    with pytest.raises(ValueError, match="colorization.output_stride=4 is for the classification"):
        ColorizationTrainer(config.load(None, colorization_overrides(tmp_path / "r2", banded_root, **{
            "colorization.output_stride": 4, "colorization.loss": "l2"}))).build()
    with pytest.raises(ValueError, match="trains on crops"):
        ColorizationTrainer(config.load(None, colorization_overrides(tmp_path / "r4", banded_root, **{
            "colorization.output_stride": 4, "data.preprocess": "none"}))).build()
    with pytest.raises(ValueError, match="colorization.output_stride"):
        config.load(None, colorization_overrides(tmp_path / "r3", banded_root,
                                                 **{"colorization.output_stride": 3}))
