"""DDPM: the ddpm-style U-Net against diffusers' UNet2DModel, scheduler wiring, the sampling pipeline,
learning a toy distribution, conditioning, kill/resume with the EMA, and sample.py."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image
from safetensors.torch import load_file

from gen import config, pipelines
from gen.models import create_model
from gen.pipelines.diffusion import DiffusionSamplingPipeline
from trainers import DDPMTrainer, checkpoint
from conftest import run_sample
from test_runs import train_cli

# Toy distribution: solid-colour 8x8 images, R = +0.6, G = -0.6, B uniform in [-0.5, 0.5] per image.
TOY_MEAN = np.array([0.6, -0.6, 0.0])
TOY_STD = np.array([0.0, 0.0, 1 / np.sqrt(12)])


def write_toy(folder, n=48, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rgb = np.array([0.6, -0.6, rng.uniform(-0.5, 0.5)])
        pixel = np.round((rgb + 1) * 127.5).astype(np.uint8)
        Image.fromarray(np.broadcast_to(pixel, (8, 8, 3)).copy()).save(folder / f"{i:03d}.png")
    return folder


def ddpm_overrides(run_dir, root, **extra):
    items = {
        "method": "ddpm",
        "run.dir": run_dir,
        "data.kind": "images",
        "data.root": root,
        "data.val": "null",
        "data.test": "null",
        "data.preprocess": "crop",
        "data.load_size": 8,
        "data.crop_size": 8,
        "model.generator": "ddpm_tiny",
        "train.batch_size": 16,
        "train.max_steps": 6,
        "train.lr": 2e-3,
        "train.beta1": 0.9,
        "train.lr_decay_start": 1.0,
        "train.log_every": 2,
        "train.validate_every": 1000,
        "train.ckpt_every": 3,
        "ddpm.sample_steps": 5,
        "ddpm.num_samples": 4,
        "ddpm.ema_decay": 0.99,
        "log.wandb": "disabled",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def stat_error(x: torch.Tensor) -> float:
    """Distance of per-channel mean and std of samples (N, 3, H, W) from the toy distribution's."""
    mean = x.mean(dim=(0, 2, 3)).numpy()
    std = x.mean(dim=(2, 3)).std(dim=0).numpy()  # spread across images (each image is one colour)
    return float(np.abs(mean - TOY_MEAN).sum() + np.abs(std - TOY_STD).sum())


def test_ddpm_cifar10_preset_matches_diffusers_parameter_count():
    ours = create_model("ddpm_cifar10")
    ref = UNet2DModel(sample_size=32, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters()) == 35_746_307
    assert sum(p.numel() for p in create_model("ddpm_small").parameters()) == 2_245_763


def test_ddpm_unet_shapes_timesteps_and_any_size():
    torch.manual_seed(0)
    net = create_model("ddpm_tiny", in_channels=4, out_channels=3).eval()
    x = torch.randn(2, 4, 16, 16)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == (2, 3, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([5, 5])), net(x, torch.tensor([900, 900])))  # t is used
    assert torch.equal(net(x, 7), net(x, torch.tensor([7, 7])))  # a scalar t broadcasts
    assert net.forward_any_size(torch.randn(1, 4, 13, 19), torch.tensor([3])).shape == (1, 3, 13, 19)
    with pytest.raises(ValueError, match="timesteps"):
        net(x)


def test_scheduler_wiring_add_noise_and_one_reverse_step():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(2, 3, 8, 8, generator=gen)
    at0 = sched.add_noise(x0, noise, torch.tensor([0, 0]))
    # alpha_bar_0 = 1 - beta_0 = 1 - 1e-4: x scaled by 0.99995 plus 1% of the noise.
    assert torch.allclose(at0, x0, atol=0.05)
    torch.testing.assert_close(at0, (1 - 1e-4) ** 0.5 * x0 + 1e-4 ** 0.5 * noise, rtol=0, atol=1e-5)
    t = 500
    x_t = sched.add_noise(x0, noise, torch.tensor([t, t]))
    step = sched.step(noise, t, x_t, generator=gen)  # the true noise as the model's prediction
    torch.testing.assert_close(step.pred_original_sample, x0, rtol=0, atol=1e-4)


def test_pipeline_is_deterministic_under_a_seed_for_every_scheduler():
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny").eval(), DDPMScheduler())
    pipe.sample_size = 8
    for name, steps in (("ddpm", 10), ("ddim", 5), ("dpm", 5)):
        a = pipe(2, steps, name, torch.Generator().manual_seed(3), progress=False)
        b = pipe(2, steps, name, torch.Generator().manual_seed(3), progress=False)
        c = pipe(2, steps, name, torch.Generator().manual_seed(4), progress=False)
        assert a.shape == (2, 3, 8, 8) and torch.equal(a, b) and not torch.equal(a, c), name
    with pytest.raises(ValueError, match="unconditional"):
        pipe(condition=torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddpm")
    write_toy(tmp / "data" / "train")
    # v-prediction: its x0 estimate at high noise is well-conditioned, so 150 steps already reach the
    # toy statistics (epsilon needs several times more; the conditional test trains epsilon).
    cfg = config.load(None, ddpm_overrides(tmp / "run", tmp / "data", **{
        "train.max_steps": 150, "train.ckpt_every": 150, "ddpm.prediction_type": "v_prediction"}))
    trainer = DDPMTrainer(cfg)
    trainer.fit()
    return tmp, trainer


def test_ddpm_learns_the_toy_distribution(toy_run):
    tmp, trainer = toy_run
    gen = torch.Generator().manual_seed(0)
    trained = pipelines.load(tmp / "run")(32, 20, "ddim", gen, progress=False)
    torch.manual_seed(0)
    untrained_pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny").eval(), DDPMScheduler())
    untrained_pipe.sample_size = 8
    untrained = untrained_pipe(32, 20, "ddim", torch.Generator().manual_seed(0), progress=False)
    err_trained, err_untrained = stat_error(trained), stat_error(untrained)
    assert err_trained < 0.5 * err_untrained, (err_trained, err_untrained)
    assert err_trained < 0.5


def test_export_round_trip_holds_the_ema_weights(toy_run):
    tmp, trainer = toy_run
    pipe = pipelines.load(tmp / "run")
    assert isinstance(pipe, DiffusionSamplingPipeline) and pipe.sample_size == 8
    ema = {k: v.clone() for k, v in trainer.pipeline().unet.state_dict().items()}
    for (name, p), avg in zip(pipe.unet.named_parameters(), trainer.ema.shadow_params):
        assert torch.equal(p.detach(), avg.cpu()), name  # the EMA's own shadow weights
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, ema[k]), k
    live = trainer.unwrap("unet").state_dict()
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # the export is the EMA, not the live weights
    # diffusers' own loader reads the same export
    again = DiffusionSamplingPipeline.from_pretrained(tmp / "run" / "export")
    x = again(2, 5, "ddim", torch.Generator().manual_seed(1), size=(8, 8), progress=False)
    assert torch.equal(x, pipe(2, 5, "ddim", torch.Generator().manual_seed(1), progress=False))


def write_conditional(root, n=32, seed=0):
    """A/ is a solid gray level (dark or light), B/ is red for light inputs and blue for dark ones."""
    rng = np.random.default_rng(seed)
    for sub in ("A", "B"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        light = i % 2 == 0
        level = rng.uniform(190, 250) if light else rng.uniform(5, 65)
        a = np.full((8, 8, 3), level, np.uint8)
        b = np.zeros((8, 8, 3), np.uint8)
        b[..., 0 if light else 2] = 220
        Image.fromarray(a).save(root / "train" / "A" / f"{i:03d}.png")
        Image.fromarray(b).save(root / "train" / "B" / f"{i:03d}.png")
    return root


def test_conditional_ddpm_uses_its_condition(tmp_path):
    root = write_conditional(tmp_path / "data")
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", root, **{
        "data.kind": "paired", "data.layout": "folders", "data.flip": "false", "train.max_steps": 120,
        "train.ckpt_every": 120, "ddpm.prediction_type": "v_prediction"}))
    DDPMTrainer(cfg).fit()
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.condition_channels == 3
    light, dark = torch.full((4, 3, 8, 8), 0.8), torch.full((4, 3, 8, 8), -0.8)
    out_light = pipe(
        num_inference_steps=20, generator=torch.Generator().manual_seed(0), condition=light, progress=False
    )
    out_dark = pipe(
        num_inference_steps=20, generator=torch.Generator().manual_seed(0), condition=dark, progress=False
    )
    red_minus_blue = lambda x: float((x[:, 0] - x[:, 2]).mean())  # noqa: E731
    assert red_minus_blue(out_light) > 0.5 and red_minus_blue(out_dark) < -0.5, \
        (red_minus_blue(out_light), red_minus_blue(out_dark))
    with pytest.raises(ValueError, match="conditioned"):
        pipe(2, 5)


def test_v_prediction_trains_and_logs_timestep_quartiles(tmp_path):
    write_toy(tmp_path / "data" / "train", n=16)
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", tmp_path / "data", **{
        "ddpm.prediction_type": "v_prediction", "train.max_steps": 4, "train.log_every": 4,
        "train.max_grad_norm": 1.0, "train.warmup_steps": 2}))
    trainer = DDPMTrainer(cfg)
    trainer.build_data()
    trainer.build()
    trainer.prepare()
    batch = trainer.to_device(next(iter(trainer.train_loader(trainer.train_set, 0))))
    losses = [float(trainer.train_step(batch)["MSE"].detach()) for _ in range(4)]
    assert all(np.isfinite(losses))
    extras = trainer.pop_log_extras()
    assert extras and all(k.startswith("MSE_t_q") for k in extras)
    assert trainer.q_count.sum() == 0  # reset after reading
    assert trainer.noise_scheduler.config.prediction_type == "v_prediction"


def final_ddpm_state(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    state = torch.load(ckpt / "state.pt", weights_only=True)
    return load_file(str(ckpt / "models" / "unet.safetensors")), state["extra"]["ema"]["shadow_params"]


@pytest.fixture(scope="module")
def ddpm_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddpm_ref")
    write_toy(tmp / "data" / "train", n=16)
    train_cli(ddpm_overrides(tmp / "ref", tmp / "data"))
    return tmp


@pytest.mark.parametrize(
    "fault",
    [
        "after_checkpoint:3",
        pytest.param("during_checkpoint:6", marks=pytest.mark.slow),
        pytest.param("after_step:4", marks=pytest.mark.slow),
    ],
)
def test_killed_ddpm_run_resumes_to_identical_weights_and_ema(ddpm_reference, tmp_path, fault):
    args = ddpm_overrides(tmp_path / "run", ddpm_reference / "data")
    killed = train_cli(args, {"GEN_FAULT": fault}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train_cli(args)
    assert "resumed from" in resumed.stdout + resumed.stderr
    (ref_w, ref_ema), (got_w, got_ema) = (
        final_ddpm_state(ddpm_reference / "ref"),
        final_ddpm_state(tmp_path / "run"),
    )
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    assert len(ref_ema) == len(got_ema) and all(torch.equal(a, b) for a, b in zip(ref_ema, got_ema))


def test_sample_cli_writes_samples_and_grid(toy_run, tmp_path):
    run_dir = toy_run[0] / "run"
    out = tmp_path / "out"
    proc = run_sample(run_dir, "--num", 3, "--steps", 4, "--scheduler", "dpm", "--seed", 1, "--output", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == ["grid.png", "sample_00000.png", "sample_00001.png", "sample_00002.png"]
    assert Image.open(out / "sample_00000.png").size == (8, 8)
    bad = run_sample(run_dir, "--input", tmp_path, "--output", out)
    assert bad.returncode == 2 and "unconditional" in bad.stderr and "Traceback" not in bad.stderr


def test_sample_cli_conditional_k_samples_per_input_at_input_size(tmp_path):
    torch.manual_seed(0)
    pipe = DiffusionSamplingPipeline(
        create_model("ddpm_tiny", in_channels=6, out_channels=3).eval(), DDPMScheduler()
    )
    pipe.sample_size = 16
    pipe.save_export(tmp_path / "export")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (13, 19, 3), dtype=np.uint8)).save(inputs / "odd.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(inputs / "gray.png")
    out = tmp_path / "out"
    proc = run_sample(
        tmp_path / "export", "--input", inputs, "--samples-per-input", 3, "--steps", 2, "--output", out
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        ["grid.png"] + [f"{s}_{k}.png" for s in ("odd", "gray") for k in range(3)])
    assert Image.open(out / "odd_0.png").size == (19, 13)
    a, b = (np.asarray(Image.open(out / f"odd_{k}.png")) for k in (0, 1))
    assert not np.array_equal(a, b)  # k samples of one input differ


def test_channels_last_gives_the_same_network_outputs_and_samples():
    """The CPU default (channels_last) computes what NCHW computes, up to float rounding: the U-Net's
    output to 1e-5; the pipeline samples in it on the CPU, whatever layout it was given."""
    torch.manual_seed(0)
    net = create_model("ddpm_tiny").eval()
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 400, 999])
    nchw = net(x, t)
    nhwc = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(nhwc, nchw, rtol=1e-5, atol=1e-5)
    pipe = DiffusionSamplingPipeline(net.to(memory_format=torch.contiguous_format), DDPMScheduler())
    pipe.sample_size = 16
    pipe(2, 10, "ddim", torch.Generator().manual_seed(0), progress=False)
    assert net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # the CPU default
