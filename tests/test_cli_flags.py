"""Small things users meet at the command line (issue 24): flags a run would ignore are refused, the
end-of-run summary gives a command that works, config errors name their keys, the logged LR is the
LR the step ran with."""
from __future__ import annotations

import pytest

from gen import config
from trainers import DDPMTrainer, Pix2PixTrainer
import sample
from conftest import tiny_overrides
from test_ddpm import ddpm_overrides, write_toy


def run(*args) -> int:
    """sample.py in this process (the CLI's own entry point; no interpreter start per call)."""
    return sample.main([str(a) for a in args])


@pytest.mark.parametrize("argv, command, parsed", [
    # no command word: the default command, even for a run directory named like it
    (["run", "--output", "o"], "run", {"run_dir": "run", "given": set(), "steps": 50}),
    (["--steps", "3", "r", "--output", "o"], "run", {"run_dir": "r", "given": {"steps"}, "steps": 3}),
    # key=value overrides anywhere on the line; the run directory is the first item that is not one
    (["evaluate", "a=1", "r", "--split", "val", "b=2"], "evaluate",
     {"run_dir": "r", "overrides": ["a=1", "b=2"], "split": "val", "given": set()}),
    (["compare", "r", "x=1", "--data", "d", "s", "--output", "o", "--set", "y=2"], "compare",
     {"run_dirs": ["r", "s"], "overrides": ["y=2", "x=1"]}),
    (["metrics", "r", "--output", "c.png", "s"], "metrics", {"run_dirs": ["r", "s"], "output": "c.png"}),
])
def test_each_command_line_parses_to_its_command(argv, command, parsed):
    args, runs = sample.parse(argv)
    assert runs is getattr(sample, command)
    assert {k: getattr(args, k) for k in parsed} == parsed


def test_commands_that_load_runs_share_their_flags_and_metrics_refuses_them(capsys):
    for argv in (["r", "--output", "o"], ["compare", "r", "--data", "d", "--output", "o"], ["evaluate", "r"]):
        args, _ = sample.parse(argv + ["--device", "cpu", "--precision", "bf16", "--overwrite"])
        assert (args.device, args.precision, args.overwrite) == ("cpu", "bf16", True)
    with pytest.raises(SystemExit) as exit_:
        sample.parse(["metrics", "r", "--device", "cpu"])
    assert exit_.value.code == 2 and "unrecognized arguments: --device cpu" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    from conftest import write_aligned

    root = tmp_path_factory.mktemp("p2p")
    write_aligned(root / "data" / "train", 4, seed=0)
    write_aligned(root / "data" / "val", 2, seed=1)
    write_aligned(root / "inputs", 2, size=16, seed=2)
    cfg = config.load(None, tiny_overrides(root / "run", root / "data", **{"train.max_steps": 2}))
    Pix2PixTrainer(cfg).fit()
    return root


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddpm")
    write_toy(root / "data" / "train", n=16)
    trainer = DDPMTrainer(config.load(None, ddpm_overrides(root / "run", root / "data",
                                                           **{"train.max_steps": 2})))
    trainer.fit()
    return root, trainer


@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "4"], "--batch-size"),
    (["--num", "3", "--steps", "5"], "--num, --steps"),
    (["--seed", "1", "--scheduler", "ddpm"], "--scheduler, --seed"),
    (["--full-size"], "--full-size"),
    (["--samples-per-input", "2"], "--samples-per-input"),
])
def test_translator_refuses_the_sampling_flags_it_would_ignore(pix2pix_run, tmp_path, flags, named, capsys):
    code = run(pix2pix_run / "run", "--input", pix2pix_run / "inputs", "--output", tmp_path / "o", *flags)
    assert code == 2
    assert f"is a translator: it does not read {named}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written


def test_translator_runs_with_its_own_flags(pix2pix_run, tmp_path, capsys):
    code = run(pix2pix_run / "run", "--input", pix2pix_run / "inputs", "--output", tmp_path / "o",
               "--inference", "eval")
    assert code == 0 and "wrote 2 images" in capsys.readouterr().out


def test_unconditional_ddpm_refuses_translator_flags_and_its_summary_command_works(ddpm_run, tmp_path,
                                                                                   capsys):
    root, trainer = ddpm_run
    for flags, named in ((["--direction", "BtoA"], "--direction"), (["--inference", "eval"], "--inference"),
                         (["--samples-per-input", "2"], "--samples-per-input")):
        assert run(root / "run", "--output", tmp_path / "o", *flags) == 2
        assert named in capsys.readouterr().err
    summary = trainer.summary(root / "run" / "export", None)
    assert "--input" not in summary and f"sample.py {root / 'run'} --num 4 --output DIR" in summary
    assert run(root / "run", "--num", "4", "--output", tmp_path / "s", "--steps", "2") == 0
    assert "wrote 4 samples" in capsys.readouterr().out


def test_evaluate_refuses_sampling_flags_for_a_translator(pix2pix_run, tmp_path, capsys):
    code = run("evaluate", pix2pix_run / "run", "--split", "val", "--steps", "5", "--output", tmp_path / "e")
    assert code == 2
    assert "does not read --steps" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, named", [
    ({"ddpm.ngf": 12}, r"model.generator='ddpm_tiny', ddpm.ngf=12.*multiples of norm_groups=8"),
])
def test_a_width_the_network_cannot_take_names_the_keys(tmp_path, overrides, named):
    write_toy(tmp_path / "data" / "train", n=4)
    cfg = config.load(None, ddpm_overrides(tmp_path / "run", tmp_path / "data", **overrides))
    with pytest.raises(ValueError, match=named):
        DDPMTrainer(cfg).fit()


def test_group_norm_width_names_the_model_keys(tmp_path, aligned_root):
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root,
                                           **{"model.norm": "group", "model.ngf": 36}))
    with pytest.raises(ValueError, match=r"model.generator='unet', model.ngf=36, model.norm='group'"):
        Pix2PixTrainer(cfg).fit()


def test_the_lr_logged_at_a_step_is_the_lr_that_step_ran_with(tmp_path, aligned_root):
    """max_steps 4, decay from step 2: the steps run with factors 1, 1, 1, 0.5 (linear_decay of step
    index 0..3); the LR logged at the last step is 0.5 * lr, not the 0 of a step that never runs."""
    cfg = config.load(None, tiny_overrides(tmp_path / "run", aligned_root, **{
        "train.max_steps": 4, "train.log_every": 1, "train.lr_decay_start": 0.5, "train.lr": 1e-3}))
    trainer = Pix2PixTrainer(cfg)
    logged = []
    log = trainer.accelerator.log
    trainer.accelerator.log = lambda values, step=None, **kw: (logged.append((step, values)),
                                                                log(values, step=step, **kw))
    trainer.fit()
    lrs = {step: v["train/lr/generator"] for step, v in logged if "train/lr/generator" in v}
    assert lrs == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 5e-4})
