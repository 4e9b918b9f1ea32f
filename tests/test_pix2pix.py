"""pix2pix: one step's losses against a hand computation, and learning on a tiny paired task."""
import copy

import pytest
import torch

from gen import config
from trainers import Pix2PixTrainer
from conftest import tiny_overrides


def make_trainer(tmp_path, root, **extra):
    cfg = config.load(None, tiny_overrides(tmp_path / "run", root, **extra))
    t = Pix2PixTrainer(cfg)
    t.build_data()
    t.build()
    t.prepare()
    return t


def softplus(x):
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)  # log(1 + e^x), stable


def test_one_step_losses_match_hand_computation(tmp_path, aligned_root):
    torch.manual_seed(0)
    t = make_trainer(tmp_path, aligned_root, **{"model.dropout": 0.0})
    g, d = t.models["generator"], t.models["discriminator"]
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    g_ref, d_ref = copy.deepcopy(g), copy.deepcopy(d)

    fake = g_ref(a)
    pred_fake, pred_real = d_ref(torch.cat([a, fake.detach()], 1)), d_ref(torch.cat([a, b], 1))
    d_fake = softplus(pred_fake).mean()        # -log(1 - sigmoid(x)) = log(1 + e^x)
    d_real = softplus(-pred_real).mean()       # -log(sigmoid(x)) = log(1 + e^-x)
    d_loss = 0.5 * (d_fake + d_real)
    d_loss.backward()
    with torch.no_grad():  # Adam's first step: p - lr * g / (|g| + eps) (bias corrections cancel)
        for p in d_ref.parameters():
            p -= 2e-4 * p.grad / (p.grad.abs() + 1e-8)
    g_gan = softplus(-d_ref(torch.cat([a, fake], 1))).mean()
    g_l1 = (fake - b).abs().mean()

    losses = t.train_step({"input": a, "target": b})
    expected = {"D_fake": d_fake, "D_real": d_real, "D": d_loss, "G_GAN": g_gan, "G_L1": g_l1,
                "G": g_gan + 100 * g_l1}
    for k, v in expected.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4, abs=1e-5), k


def test_l1_only_has_no_discriminator(tmp_path, aligned_root):
    t = make_trainer(tmp_path, aligned_root, **{"pix2pix.gan_mode": "none"})
    assert set(t.models) == {"generator"}
    losses = t.train_step({"input": torch.zeros(2, 3, 32, 32), "target": torch.ones(2, 3, 32, 32)})
    assert set(losses) == {"G_L1", "G"} and losses["G"].item() == pytest.approx(100 * losses["G_L1"].item())


def test_lsgan_discriminator_loss(tmp_path, aligned_root):
    torch.manual_seed(1)
    t = make_trainer(tmp_path, aligned_root, **{"pix2pix.gan_mode": "lsgan"})
    x = torch.randn(4, 1, 3, 3)
    assert t.gan_loss(x, True).item() == pytest.approx(((x - 1) ** 2).mean().item())
    assert t.gan_loss(x, False).item() == pytest.approx((x ** 2).mean().item())


def test_linear_decay_schedule(tmp_path, aligned_root):
    t = make_trainer(tmp_path, aligned_root, **{"train.max_steps": 10, "train.lr_decay_start": 0.5})
    opt, sched = t.optimizers["generator"], t.schedulers["generator"]
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == [2e-4] * 5
    assert lrs[5:] == pytest.approx([2e-4 * f for f in (1.0, 0.8, 0.6, 0.4, 0.2)])
    assert sched.get_last_lr()[0] == 0.0


def test_learns_tiny_paired_task(tmp_path, aligned_root):
    """B = 255 - A: validation L1 must fall well below the untrained generator's."""
    torch.manual_seed(0)
    t = make_trainer(
        tmp_path, aligned_root, **{"train.max_steps": 80, "train.lr": 1e-3, "pix2pix.lambda_gan": 0.1}
    )
    before = t.validate(0)["L1"]
    loader = iter(t.train_loader(t.train_set, 0))
    for _ in range(80):
        t.train_step(t.to_device(next(loader)))
    after = t.validate(80)["L1"]
    assert after < 0.5 * before, (before, after)


def test_bf16_autocast_and_grad_accumulation_train(tmp_path, aligned_root):
    """Mixed precision and accumulation from config: a short run finishes with finite weights, and
    with grad_accum 2 the optimizer steps once per 2 micro-batches (Adam's step count)."""
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{
        "train.mixed_precision": "bf16", "train.grad_accum": 2, "train.max_steps": 2,
        "train.validate_every": 2, "train.ckpt_every": 2, "train.log_every": 1}))
    t = Pix2PixTrainer(cfg)
    t.fit()
    state = t.optimizers["generator"].state_dict()["state"]
    assert all(int(s["step"]) == 2 for s in state.values())
    assert all(torch.isfinite(p).all() for p in t.unwrap("generator").parameters())


@pytest.mark.parametrize("option", ["train.channels_last=true", "train.optimizer_impl=foreach",
                                    "train.optimizer_impl=for_loop"])
def test_speed_options_give_the_same_training(aligned_root, tmp_path, option):
    """Each speed option computes the same updates: weights after 6 steps agree with the default run
    (fused Adam; kernels differ, so not bit for bit). Adam's early steps move each weight by about
    lr * sign(grad), so a gradient within rounding of 0 may move the other way: allow that for a few
    weights, no more."""
    def weights(run_dir, extra):
        t = Pix2PixTrainer(
            config.load(None, tiny_overrides(run_dir, aligned_root, **{"model.dropout": 0.0}) + extra)
        )
        t.fit()
        return t.unwrap("generator").state_dict()
    ref, got = weights(tmp_path / "ref", []), weights(tmp_path / "opt", [option])
    lr, steps = 2e-4, 6
    diffs = torch.cat(
        [(got[k].float() - ref[k].float()).abs().flatten() for k in ref if ref[k].is_floating_point()]
    )
    assert diffs.max() <= 2 * lr * steps, option
    assert (diffs > 1e-5).float().mean() < 1e-3, option  # all but a handful agree to float tolerance


def test_time_budget_stops_the_run_with_a_checkpoint_and_an_export(tmp_path, aligned_root, capsys):
    """A spent train.time_budget_minutes ends the run at the current step as if it were the last:
    checkpoint and export written, a message says so, and the same run.dir resumes from there."""
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{
        "train.max_steps": 1000, "train.ckpt_every": 1000, "train.time_budget_minutes": 1e-6}))
    trainer = Pix2PixTrainer(cfg)
    trainer.fit()
    assert trainer.step == 1
    said = capsys.readouterr().out
    assert (
        "stopped by train.time_budget_minutes=1e-06 at step 1 of 1000" in said
        and "run the same command" in said
    )
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000001"]
    assert (tmp_path / "run" / "export" / "pipeline.json").is_file()
    again = Pix2PixTrainer(cfg)
    again.fit()
    assert again.step == 2  # resumed at 1, one more step in a fresh budget
