"""Continuing a run with another config: a different architecture is refused naming the keys, a longer
schedule really continues (LRs from the current config and step), a shorter one is an error, and the
old config is kept beside the new one. The LR schedules are rebuilt from the resumed step: a resumed run
has the LRs of one that never stopped."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from gen import config
from gen.curves import METRICS_FILE, read_metrics
from trainers import Pix2PixTrainer, checkpoint
from trainers.budget import LRPlan
from conftest import run_sample, run_train, tiny_overrides


def generator(run_dir):
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return load_file(str(ckpt / "models" / "generator.safetensors"))


def test_other_architecture_is_refused_naming_the_keys(tmp_path, aligned_root):
    run_train(*tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 2}))
    for key, value in (("model.ngf", 16), ("model.norm", "instance"), ("data.channels_b", 1),
                       ("model.upsample", "bilinear")):
        overrides = tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 4, key: value})
        proc = run_train(*overrides, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
        assert key in proc.stderr and "new run.dir" in proc.stderr and "size mismatch" not in proc.stderr


def test_extending_a_finished_run_trains_at_the_new_schedule(tmp_path, aligned_root):
    extra = {
        "train.max_steps": 4,
        "train.ckpt_every": 1,
        "train.keep_checkpoints": 10,
        "train.lr_decay_start": 0.0,
    }
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **extra))).fit()
    finished = generator(tmp_path / "run")
    longer = Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "run", aligned_root,
                                                             **dict(extra, **{"train.max_steps": 8}))))
    longer.setup()
    assert longer.step == 4
    lr = longer.optimizers["generator"].param_groups[0]["lr"]
    assert abs(lr - 2e-4 * (8 - 4) / 8) < 1e-12  # linear decay from step 0 over 8 steps, at step 4; not 0
    longer.train_one_step()
    longer.after_step()
    params = {k for k, _ in longer.unwrap("generator").named_parameters()}  # not BN running stats
    moved = generator(tmp_path / "run")
    assert not all(torch.equal(finished[k], moved[k]) for k in params)  # the weights moved: LR was not 0
    assert (tmp_path / "run" / "config_until_step_00000004.yaml").is_file()
    assert config.load(tmp_path / "run" / "config.yaml").train.max_steps == 8
    longer.release_run_dir()  # a live trainer holds run.dir: a second writer would be refused

    proc = run_train(*tiny_overrides(tmp_path / "run", aligned_root, **dict(extra, **{"train.max_steps": 2})),
                     check=False)
    assert proc.returncode == 1 and "train.max_steps=2 is below the step" in proc.stderr
    assert (
        config.load(tmp_path / "run" / "config.yaml").train.max_steps == 8
    )  # the refused config is not recorded


def test_evaluate_takes_overrides_after_flags(tmp_path, aligned_root):
    run_train(*tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 1, "data.test": "val"}))
    proc = run_sample(
        "evaluate", tmp_path / "run", "--split", "test", "data.preprocess=none", "--grid-rows", 1
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"images": 2' in proc.stdout
    first = run_sample("evaluate", "data.preprocess=none", tmp_path / "run", "--output", tmp_path / "e2")
    assert first.returncode == 0, first.stderr[-2000:]  # an override before the run directory
    for flag in ("--grid-rows", "--max-images"):
        bad = run_sample("evaluate", tmp_path / "run", flag, 0, "--output", tmp_path / "e3")
        assert bad.returncode == 2 and f"{flag} 0: must be at least 1" in bad.stderr


def test_evaluate_saves_every_output_by_input_stem(tmp_path, aligned_root):
    run_train(*tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 1, "data.test": "val"}))
    proc = run_sample("evaluate", tmp_path / "run", "--save-outputs", "--max-images", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "run" / "eval_test" / "outputs"
    assert sorted(p.name for p in out.iterdir()) == ["000.png"] and '"images": 1' in proc.stdout
    again = run_sample("evaluate", tmp_path / "run", "--save-outputs")
    assert again.returncode == 2 and "already exist" in again.stderr and "--overwrite" in again.stderr
    assert run_sample("evaluate", tmp_path / "run", "--save-outputs", "--overwrite").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png"]


def test_resumed_adam_moments_follow_the_parameters_memory_format():
    """An NCHW checkpoint resumed with channels_last (train.channels_last's auto choice differs between
    CPU and GPU): fused Adam continues exactly as the uninterrupted run, instead of mixing strides."""
    import copy

    from trainers.checkpoint import match_state_layout

    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    grads = [torch.randn_like(w) for _ in range(4)]
    straight = torch.nn.Parameter(w.clone())
    opt = torch.optim.Adam([straight], lr=0.1, fused=True)
    for g in grads:
        straight.grad = g.clone()
        opt.step()
    first = torch.nn.Parameter(w.clone())
    opt = torch.optim.Adam([first], lr=0.1, fused=True)
    for g in grads[:2]:
        first.grad = g.clone()
        opt.step()
    saved = copy.deepcopy(opt.state_dict())  # NCHW moments
    resumed = torch.nn.Parameter(first.detach().clone().contiguous(memory_format=torch.channels_last))
    opt = torch.optim.Adam([resumed], lr=0.1, fused=True)
    opt.load_state_dict(saved)
    match_state_layout(opt)
    assert opt.state[resumed]["exp_avg"].stride() == resumed.stride()
    for g in grads[2:]:
        resumed.grad = g.clone().contiguous(memory_format=torch.channels_last)
        opt.step()
    torch.testing.assert_close(resumed.detach(), straight.detach(), rtol=0, atol=1e-6)


def logged_lrs(run_dir) -> dict[int, float]:
    return {row["step"]: row["train/lr/generator"] for row in read_metrics(run_dir / METRICS_FILE)
            if "train/lr/generator" in row}


def test_a_resumed_run_has_the_lrs_of_an_uninterrupted_one(tmp_path, aligned_root):
    """Warmup over 4 steps, then linear decay: a factor that differs at every step. Resumed from step 4,
    every LR from step 5 on (held by the optimizers, logged, and so the weights) is the uninterrupted
    run's; a schedule restarted at 0, or left at the LR the optimizer was saved with, is not."""
    extra = {"train.max_steps": 8, "train.ckpt_every": 4, "train.log_every": 1, "train.warmup_steps": 4,
             "train.lr_decay_start": 0.0, "train.keep_checkpoints": 5, "train.lr": 1e-3}
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **extra))
    Pix2PixTrainer(cfg).fit()
    straight = logged_lrs(tmp_path / "run")
    factors = [0.25, 0.5, 0.75, 1.0, 0.5, 0.375, 0.25, 0.125]  # of step index 0..7 (logged at 1..8)
    assert straight == pytest.approx({i + 1: 1e-3 * f for i, f in enumerate(factors)}, rel=1e-12)
    ckpts = checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")
    final = load_file(str(ckpts[0] / "models" / "generator.safetensors"))
    shutil.rmtree(ckpts[0])  # back to step 4

    resumed = Pix2PixTrainer(cfg)
    resumed.setup()
    assert resumed.step == 4
    for name, sched in resumed.schedulers.items():  # the LR step 5 runs with
        assert sched.last_epoch == 4 and sched.get_last_lr() == [straight[5]], name
        assert resumed.optimizers[name].param_groups[0]["lr"] == straight[5], name
    while resumed.step < resumed.end:
        resumed.train_one_step()
        resumed.after_step()
    resumed.finish()
    resumed.release_run_dir()
    assert logged_lrs(tmp_path / "run") == straight  # steps 5-8 logged again by the resumed run, equal
    got = load_file(str(checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")[0] / "models" /
                        "generator.safetensors"))
    assert all(torch.equal(final[k], got[k]) for k in final)


def test_schedules_rebuilt_at_a_step_continue_as_the_stepped_ones():
    """schedules_at(step) on a fresh LambdaLR whose optimizer holds a checkpoint's state: the same LRs,
    now and at every later step, as the schedule stepped there; a new base LR applies from that step."""
    factor = LRPlan(12, 0.25, warmup_steps=3).factor

    def schedule(lr):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

    opt, stepped = schedule(0.1)
    for _ in range(5):
        opt.step()
        stepped.step()
    for lr in (0.1, 0.3):
        fresh_opt, fresh = schedule(lr)
        fresh_opt.load_state_dict(opt.state_dict())  # the LR saved with the optimizer: 0.1 * factor(5)
        rebuilt = checkpoint.schedules_at({"g": fresh}, lr, 5)["g"]
        assert rebuilt.optimizer is fresh_opt and rebuilt.last_epoch == 5
        lrs = []
        for _ in range(7):
            lrs.append(fresh_opt.param_groups[0]["lr"])
            assert rebuilt.get_last_lr() == [lrs[-1]]
            fresh_opt.step()
            rebuilt.step()
        assert lrs == [lr * factor(step) for step in range(5, 12)]


def test_another_ddpm_objective_is_refused_naming_the_keys(tmp_path):
    """A run trained toward epsilon is not continued toward v (e.g. a shipped config whose default recipe
    changed): the refusal names the keys and the values that continue it; a loss weighting may change."""
    from test_ddpm import ddpm_overrides, write_toy
    root = write_toy(tmp_path / "d" / "train", 8).parent
    base = {"train.max_steps": 2, "ddpm.num_samples": 1, "ddpm.sample_steps": 2}
    run_train(*ddpm_overrides(tmp_path / "run", root, **base))
    changed = {**base, "train.max_steps": 3, "ddpm.prediction_type": "v_prediction",
               "ddpm.zero_terminal_snr": "true"}
    proc = run_train(*ddpm_overrides(tmp_path / "run", root, **changed), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert "ddpm.prediction_type: 'epsilon' -> 'v_prediction'" in proc.stderr and "new run.dir" in proc.stderr
    assert "ddpm.prediction_type=epsilon ddpm.zero_terminal_snr=false" in proc.stderr
    assert checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")[0].name == "step_00000002"
    proc = run_train(*ddpm_overrides(tmp_path / "run", root, **{**base, "train.max_steps": 3,
                                                                 "ddpm.snr_gamma": 5}), check=False)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "resume: ddpm.snr_gamma changed None -> 5.0" in proc.stdout
