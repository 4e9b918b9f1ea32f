"""EDM (Karras et al. 2022) as ddpm.formulation=edm: the preconditioning and loss against hand-computed
values and diffusers' EDM schedulers, the Karras sigmas, the samplers on data with a known answer,
training, the export and sample.py, the conditional model, resume under bf16, and refused keys."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EDMEulerScheduler
from PIL import Image

from gen import config, pipelines
from gen.convert.exports import write_diffusers_pipeline
from gen.data.transforms import to_pil
from gen.losses.edm import (TIME_SCALE, f_target, log_sigma_quartile, loss_weight, precondition,
                            sample_sigmas, unet_timestep)
from gen.models import create_model
from gen.pipelines.diffusion import DiffusionSamplingPipeline, make_scheduler
from gen.pipelines.edm import heun_step
from trainers import DDPMTrainer
from conftest import run_sample
from test_ddpm import ddpm_overrides, final_ddpm_state, stat_error, write_conditional, write_toy
from test_runs import train_cli

EDM = {"ddpm.formulation": "edm", "ddpm.sample_scheduler": "heun"}


def test_preconditioning_hand_values_identities_and_diffusers():
    # sigma = sigma_data = 0.5: sigma^2 + sigma_data^2 = 0.5
    c_skip, c_out, c_in, c_noise = precondition(torch.tensor(0.5), 0.5)
    assert float(c_skip) == pytest.approx(0.5)
    assert float(c_out) == pytest.approx(0.25 / math.sqrt(0.5))
    assert float(c_in) == pytest.approx(1 / math.sqrt(0.5))
    assert float(c_noise) == pytest.approx(math.log(0.5) / 4)
    assert float(unet_timestep(torch.tensor(0.5))) == pytest.approx(TIME_SCALE * math.log(0.5) / 4)
    sigma = torch.tensor([1e-6, 0.002, 0.3, 2.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = precondition(sigma, 0.5)
    torch.testing.assert_close(c_in * (sigma ** 2 + 0.25).sqrt(), torch.ones_like(sigma))
    torch.testing.assert_close(c_skip ** 2 * sigma ** 2 + (1 - c_skip) ** 2 * 0.25,
                               c_out ** 2)  # eq. 7: the effective target's variance is c_out^2 ...
    x, f = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 4, 4, dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    d = c_skip.view_as(s) * x + c_out.view_as(s) * f
    torch.testing.assert_close(d[0], x[0], atol=1e-5, rtol=0)  # sigma -> 0: D(x) -> x
    ref = EDMEulerScheduler(sigma_data=0.5)  # diffusers' "epsilon" EDM preconditioning is Karras Table 1
    torch.testing.assert_close(ref.precondition_inputs(x, s), c_in.view_as(s) * x)
    torch.testing.assert_close(ref.precondition_outputs(x, f, s), d)
    torch.testing.assert_close(ref.precondition_noise(sigma), c_noise)


def test_f_target_and_lambda_weighted_loss_equal_the_unit_f_space_loss():
    # y = 1, n = 0, sigma = sigma_data = 0.5: (y - c_skip y) / c_out = 0.5 / (0.25 / sqrt 0.5) = sqrt 2
    one = torch.ones(1, 1, 1, 1)
    assert float(f_target(one, 0 * one, torch.tensor([0.5]), 0.5)) == pytest.approx(math.sqrt(2))
    assert float(loss_weight(torch.tensor(0.5), 0.5)) == pytest.approx(0.5 / 0.0625)  # = 8
    torch.manual_seed(0)
    y, noise, f = torch.randn(3, 4, 3, 5, 5, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.4, 3.0, 60.0], dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    c_skip, c_out, _, _ = precondition(s, 0.5)
    x = y + s * noise
    torch.testing.assert_close(f_target(y, noise, sigma, 0.5), (y - c_skip * x) / c_out)
    d = c_skip * x + c_out * f
    weighted = loss_weight(sigma, 0.5) * (d - y).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(weighted, (f - f_target(y, noise, sigma, 0.5)).pow(2).mean(dim=(1, 2, 3)))


def test_training_sigmas_are_log_normal_from_the_global_generator():
    torch.manual_seed(3)
    sigma = sample_sigmas(20000, -1.2, 1.2)
    torch.manual_seed(3)
    assert torch.equal(sigma, (torch.randn(20000) * 1.2 - 1.2).exp())  # the checkpointed stream
    assert float(sigma.log().mean()) == pytest.approx(-1.2, abs=0.03)
    assert float(sigma.log().std()) == pytest.approx(1.2, abs=0.03)
    q = log_sigma_quartile(sigma, -1.2, 1.2)
    assert torch.bincount(q).tolist() == pytest.approx([5000] * 4, abs=250)  # quartiles of N(-1.2, 1.2^2)


def test_karras_sigmas_are_eq5_and_diffusers():
    sched = make_scheduler("euler", EDMEulerScheduler().config)
    sched.set_timesteps(3)
    # ((80^(1/7) + 0.002^(1/7)) / 2)^7 = 2.5152..., then 0.002 and the final 0
    torch.testing.assert_close(sched.sigmas, torch.tensor([80.0, 2.515219, 0.002, 0.0]))
    sched.set_timesteps(18)
    i = torch.arange(18, dtype=torch.float64)
    lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    eq5 = (hi + i / 17 * (lo - hi)) ** 7
    torch.testing.assert_close(sched.sigmas[:-1].double(), eq5, rtol=1e-6, atol=0)
    assert sched.sigmas[-1] == 0
    torch.testing.assert_close(sched.timesteps, eq5.float().log() / 4)  # c_noise of each sigma


def test_heun_step_hand_computed():
    # D(x) = x / 2, x = 1, sigma 2 -> 1: d = 0.25, x' = 0.75, d' = 0.375, x = 1 - (0.25 + 0.375) / 2
    half = lambda x, sigma: x / 2  # noqa: E731
    out = heun_step(half, torch.ones(1), torch.tensor(2.0), torch.tensor(1.0))
    assert float(out) == pytest.approx(0.6875)
    assert float(heun_step(half, torch.ones(1), torch.tensor(2.0), torch.tensor(0.0))) == pytest.approx(0.5)


def ode_error(stepper, steps: int, s_data: float = 0.5) -> float:
    """Data N(0, s_data^2): D(x; sigma) = x s^2 / (sigma^2 + s^2), and the probability-flow ODE carries x
    from sigma_max to x sqrt(sigma^2 + s^2) / sqrt(sigma_max^2 + s^2); the relative error at sigma_min."""
    sched = make_scheduler("euler", EDMEulerScheduler().config)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double()
    denoise = lambda x, sigma: x * s_data ** 2 / (sigma ** 2 + s_data ** 2)  # noqa: E731
    x = x_max = torch.tensor([80.0], dtype=torch.float64)
    for sigma, nxt in zip(sigmas[:-2], sigmas[1:-1]):  # to sigma_min, where the exact value is known
        x = stepper(denoise, x, sigma, nxt)
    exact = x_max * math.sqrt(0.002 ** 2 + s_data ** 2) / math.sqrt(80.0 ** 2 + s_data ** 2)
    return float((x - exact).abs() / exact)


def test_heun_is_second_order_on_gaussian_data():
    euler = lambda den, x, s, n: x + (n - s) * (x - den(x, s)) / s  # noqa: E731
    # twice the steps: Heun's error about 4x smaller (order 2), Euler's about 2x (order 1)
    e_heun, e_euler = [ode_error(heun_step, n) for n in (36, 72)], [ode_error(euler, n) for n in (36, 72)]
    assert e_heun[0] / e_heun[1] > 3.5 and e_euler[0] / e_euler[1] < 2.5, (e_heun, e_euler)
    assert e_heun[0] < 0.02 and e_heun[0] < e_euler[0] / 5


def ideal_pipeline(x0: torch.Tensor) -> DiffusionSamplingPipeline:
    """An EDM pipeline whose U-Net outputs the F that makes D(x; sigma) = x0 (data = one point x0),
    reading sigma back from the timestep the pipeline feeds it (TIME_SCALE * ln(sigma) / 4) and x from
    its c_in-scaled input: samplers must land on x0."""
    net = create_model("ddpm_tiny").eval()

    def ideal(model_in, t):
        sigma = (torch.as_tensor(t, dtype=torch.float64) * 4 / TIME_SCALE).exp().view(-1, 1, 1, 1)
        c_skip, c_out, c_in, _ = precondition(sigma, 0.5)
        x = model_in.double() / c_in
        return ((x0 - c_skip * x) / c_out).float()

    net.forward = ideal
    pipe = DiffusionSamplingPipeline(net, EDMEulerScheduler())
    pipe.sample_size = x0.shape[-1]
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", ["euler", "heun", "dpm"])
def test_every_sampler_lands_on_the_single_data_point(scheduler):
    x0 = torch.linspace(-0.9, 0.9, 3 * 8 * 8, dtype=torch.float64).view(1, 3, 8, 8)
    pipe = ideal_pipeline(x0)
    out = pipe(2, 6, scheduler, [torch.Generator().manual_seed(k) for k in range(2)], progress=False)
    torch.testing.assert_close(out.double(), x0.expand(2, -1, -1, -1), atol=2e-4, rtol=0)


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edm")
    write_toy(tmp / "data" / "train")
    cfg = config.load(None, ddpm_overrides(tmp / "run", tmp / "data", **EDM, **{
        "train.max_steps": 120, "train.ckpt_every": 120, "train.log_every": 10}))
    trainer = DDPMTrainer(cfg)
    trainer.fit()
    return tmp, trainer


def test_edm_trains_and_learns_the_toy_distribution(edm_run):
    import json
    tmp, trainer = edm_run
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    mse = [r["train/MSE"] for r in rows if "train/MSE" in r]
    assert len(mse) >= 10 and np.mean(mse[-3:]) < 0.6 * np.mean(mse[:2]), mse
    assert any("train/MSE_sigma_q3" in r for r in rows)
    pipe = pipelines.load(tmp / "run")
    assert pipe.formulation == "edm" and pipe.default_scheduler == "heun"
    trained = pipe.sample_numbers(range(32), 10, "heun", 0)
    torch.manual_seed(0)
    untrained = DiffusionSamplingPipeline(create_model("ddpm_tiny").eval(), EDMEulerScheduler())
    untrained.sample_size = 8
    err_trained = stat_error(trained)
    err_untrained = stat_error(untrained.sample_numbers(range(32), 10, "heun", 0))
    assert err_trained < 0.5 * err_untrained and err_trained < 0.5, (err_trained, err_untrained)


def test_export_samples_what_validation_samples_and_refuses_ddpm_samplers(edm_run, tmp_path):
    tmp, trainer = edm_run
    out = tmp_path / "out"
    proc = run_sample(tmp / "run", "--num", 3, "--steps", 4, "--output", out)  # the export's heun
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "heun, 4 steps" in proc.stdout
    mine = trainer.pipeline().sample_numbers(range(3), 4, "heun", None)  # training's grid: run.seed
    for i in range(3):
        written = np.asarray(Image.open(out / f"sample_{i:05d}.png"))
        assert np.array_equal(written, np.asarray(to_pil(mine[i])))
    for name in ("euler", "dpm"):
        torch.testing.assert_close(pipelines.load(tmp / "run").sample_numbers(range(2), 3, name, 5),
                                   trainer.pipeline().sample_numbers(range(2), 3, name, 5), rtol=0, atol=0)
    bad = run_sample(tmp / "run", "--num", 2, "--scheduler", "ddim", "--output", tmp_path / "bad")
    assert bad.returncode == 2 and "EDM" in bad.stderr and "heun" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="no EDM counterpart"):
        write_diffusers_pipeline(tmp / "run" / "export", tmp_path / "diffusers")
    again = DiffusionSamplingPipeline.from_pretrained(tmp / "run" / "export")  # diffusers' own loader
    assert again.formulation == "edm" and isinstance(again.scheduler, EDMEulerScheduler)
    torch.testing.assert_close(again.sample_numbers(range(2), 3, "heun", 1),
                               trainer.pipeline().sample_numbers(range(2), 3, "heun", 1), rtol=0, atol=0)


def test_ddpm_exports_refuse_edm_samplers(tmp_path):
    pipe = DiffusionSamplingPipeline(create_model("ddpm_tiny").eval(), DDPMScheduler())
    pipe.sample_size = 8
    pipe.save_export(tmp_path / "export")
    with pytest.raises(ValueError, match="does not sample this DDPM model"):
        pipe(1, 2, "heun")
    bad = run_sample(tmp_path / "export", "--num", 1, "--scheduler", "euler", "--output", tmp_path / "o")
    assert bad.returncode == 2 and "ddim" in bad.stderr and "Traceback" not in bad.stderr


def test_conditional_edm_trains_and_sample_cli_matches_validation(tmp_path):
    root = write_conditional(tmp_path / "data", n=8)
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", root, **{
        **EDM, "data.kind": "paired", "data.layout": "folders", "data.flip": "false", "train.max_steps": 3,
        "train.ckpt_every": 3, "ddpm.sample_scheduler": "euler"}))
    trainer = DDPMTrainer(cfg)
    trainer.fit()
    pipe = pipelines.load(tmp_path / "run")
    assert pipe.condition_channels == 3 and pipe.default_scheduler == "euler"
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(inputs / "light.png")
    out = tmp_path / "out"
    proc = run_sample(tmp_path / "run", "--input", inputs, "--samples-per-input", 2, "--steps", 3,
                      "--output", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cond = pipe.condition_from_image(Image.open(inputs / "light.png"))
    mine = trainer.pipeline().sample_for(cond, 2, 3, "euler", None, "light")
    for j in range(2):
        assert np.array_equal(np.asarray(Image.open(out / f"light_{j}.png")), np.asarray(to_pil(mine[j])))
    with pytest.raises(ValueError, match="conditioned"):
        pipe(2, 3)


def test_killed_edm_run_resumes_bit_exact_under_bf16(tmp_path):
    write_toy(tmp_path / "data" / "train", n=16)
    extra = {**EDM, "train.mixed_precision": "bf16"}
    DDPMTrainer(config.load(None, ddpm_overrides(tmp_path / "ref", tmp_path / "data", **extra))).fit()
    args = ddpm_overrides(tmp_path / "run", tmp_path / "data", **extra)
    killed = train_cli(args, {"GEN_FAULT": "after_checkpoint:3"}, check=False)  # SIGKILLed after step 3's
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = DDPMTrainer(config.load(None, args))
    resumed.fit()
    assert resumed.start_step == 3
    ref_w, ref_ema = final_ddpm_state(tmp_path / "ref")
    got_w, got_ema = final_ddpm_state(tmp_path / "run")
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    assert all(torch.equal(a, b) for a, b in zip(ref_ema, got_ema))


@pytest.mark.parametrize("bad, key", [
    ({"ddpm.prediction_type": "v_prediction"}, "ddpm.prediction_type"),
    ({"ddpm.zero_terminal_snr": True}, "ddpm.zero_terminal_snr"),
    ({"ddpm.snr_gamma": 5.0}, "ddpm.snr_gamma"),
    ({"ddpm.beta_schedule": "scaled_linear"}, "ddpm.beta_schedule"),
    ({"ddpm.beta_end": 0.03}, "ddpm.beta_end"),
    ({"ddpm.timestep_spacing": "leading"}, "ddpm.timestep_spacing"),
    ({"ddpm.sample_scheduler": "ddim"}, "ddpm.sample_scheduler"),
    ({"ddpm.edm_sigma_min": 90.0}, "ddpm.edm_sigma_min"),
    ({"ddpm.edm_p_std": 0}, "ddpm.edm_p_std"),
])
def test_edm_refuses_ddpm_only_keys(tmp_path, bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        config.load(None, ddpm_overrides(tmp_path / "r", tmp_path / "d", **{**EDM, **bad}))


@pytest.mark.parametrize("bad, key", [({"ddpm.edm_rho": 5.0}, "ddpm.edm_rho"),
                                      ({"ddpm.sample_scheduler": "heun"}, "ddpm.sample_scheduler")])
def test_ddpm_refuses_edm_keys(tmp_path, bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        config.load(None, ddpm_overrides(tmp_path / "r", tmp_path / "d", **bad))


def test_unset_sampler_is_the_formulations_own():
    """ddpm.sample_scheduler unset: DDIM for DDPM, Heun (Karras et al.'s) for EDM; set, as given."""
    base = ["method=ddpm", "data.kind=images", "data.root=photos"]
    assert config.load(None, base).ddpm.sampler == "ddim"
    assert config.load(None, base + ["ddpm.formulation=edm"]).ddpm.sampler == "heun"
    euler = config.load(None, base + ["ddpm.formulation=edm", "ddpm.sample_scheduler=euler"])
    assert euler.ddpm.sampler == "euler"


def test_compare_samples_each_run_with_its_own_sampler(edm_run, tmp_path):
    """sample.py compare without --scheduler: a DDPM run samples with DDIM and an EDM run with Heun
    (each export's default), in one table; a sampler given for both is refused for the one it cannot
    drive, naming it."""
    from gen.compare import compare_runs
    from gen.data.build import eval_data
    from gen.methods import Sampling

    tmp, _ = edm_run
    ddpm_dir = tmp_path / "ddpm"
    cfg = config.load(None, ddpm_overrides(ddpm_dir, tmp / "data", **{"data.test": "train"}))
    DDPMTrainer(cfg).fit()
    data = eval_data(cfg, "test")
    runs = [ddpm_dir, tmp / "run"]
    result = compare_runs(data, runs, grid_rows=1, max_images=2, sampling=Sampling(steps=2))
    assert any("ddpm: unconditional" in n and "ddim 2 steps" in n for n in result.notes), result.notes
    assert any("run: unconditional" in n and "heun 2 steps" in n for n in result.notes), result.notes
    with pytest.raises(ValueError, match="scheduler 'ddim' does not sample this EDM model"):
        compare_runs(data, runs, max_images=2, sampling=Sampling(steps=2, scheduler="ddim"))


def test_a_ddpm_export_samples_with_the_sampler_its_grids_used(tmp_path):
    """ddpm.sample_scheduler=dpm: the export's default is dpm, what sample.py, evaluate and compare
    use without --scheduler (one inference path), not DDIM."""
    write_toy(tmp_path / "data" / "train")
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", tmp_path / "data", **{
        "ddpm.sample_scheduler": "dpm", "train.max_steps": 1, "train.ckpt_every": 1}))
    DDPMTrainer(cfg).fit()
    assert pipelines.load(tmp_path / "run").default_scheduler == "dpm"


@pytest.mark.parametrize("shipped", ["configs/ddpm/cifar10.yaml", "configs/ddpm/facades_conditional.yaml"])
def test_a_shipped_ddpm_config_switched_to_edm_names_every_key_at_once(shipped):
    """The CPU configs set four DDPM-only keys (v + zero terminal SNR + min-SNR-5, DDIM): one error
    names them all with the overrides that reset them, and those overrides load."""
    from conftest import ROOT
    with pytest.raises(ValueError) as err:
        config.load(ROOT / shipped, ["ddpm.formulation=edm"])
    message = str(err.value)
    reset = message.rsplit("their defaults: ", 1)[1].split()
    assert sorted(k.split("=")[0] for k in reset) == ["ddpm.prediction_type", "ddpm.sample_scheduler",
                                                       "ddpm.snr_gamma", "ddpm.zero_terminal_snr"]
    assert config.load(ROOT / shipped, ["ddpm.formulation=edm", *reset]).ddpm.sampler == "heun"
