"""train.time_budget_minutes shapes the LR schedule (budget_schedule=fit) or says it will cut it
(budget_schedule=cut): LRPlan's values against hand computation, and whole runs on a clock that
advances one second per step, so the steps a budget allows are known exactly."""
import json

import pytest

from gen import config
from trainers import TRAINERS, Pix2PixTrainer
from trainers.budget import LRPlan, TimeBudget
from conftest import tiny_overrides


class StepClock:
    """A clock at `now` seconds that the wrapped train_step advances by one second per step."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget_trainer(tmp_path, root, precision="fp32", **extra):
    cfg = config.load(None, tiny_overrides(tmp_path / "run", root, **{
        "train.max_steps": 1000, "train.lr_decay_start": 0.5, "train.time_budget_minutes": 0.5,
        "train.log_every": 1, "train.validate_every": 1000, "train.ckpt_every": 10,
        "train.mixed_precision": precision, **extra}))
    trainer, clock = Pix2PixTrainer(cfg), StepClock()
    trainer.clock = clock
    step = trainer.train_step

    def timed_step(batch):
        clock.now += 1.0
        return step(batch)
    trainer.train_step = timed_step
    return trainer


def interrupt_at_20(tmp_path, root):
    """A fitted run (30 s at 1 s/step, planned to 30 steps) stopped after step 20, its checkpoint
    there (ckpt_every 10)."""
    first = budget_trainer(tmp_path, root)
    step = first.train_step

    def stop_after_20(batch):
        if first.step == 20:
            raise KeyboardInterrupt
        return step(batch)
    first.train_step = stop_after_20
    with pytest.raises(KeyboardInterrupt):
        first.fit()


def logged(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def test_one_knot_is_the_reference_linear_decay():
    """max_steps 10, decay from step 5 (Isola et al.): 1 x5, then 0.8 ... 0; warm-up over 3 steps."""
    plan = LRPlan(10, 0.5)
    assert [plan.factor(s) for s in range(11)] == pytest.approx([1] * 6 + [0.8, 0.6, 0.4, 0.2, 0])
    warm = LRPlan(12, 0.25, warmup_steps=3)  # decay from step 3 over 9 steps
    assert [warm.factor(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 8 / 9])
    assert LRPlan(100, 0.0).factor(20) == pytest.approx(0.8)


def test_a_replan_continues_from_the_current_factor_without_a_jump():
    plan = LRPlan(100, 0.5)
    plan.replan(10, 40)  # still constant at step 10: constant to 20, then to 0 at 40
    assert [plan.factor(s) for s in (10, 19, 20, 30, 40)] == pytest.approx([1, 1, 1, 0.5, 0])
    plan.replan(30, 50)  # mid-decay at 0.5: linear from 0.5 at 30 to 0 at 50
    assert [plan.factor(s) for s in (29, 30, 40, 50)] == pytest.approx([0.55, 0.5, 0.25, 0])
    assert plan.decay_from() == 20 and plan.horizon == 50
    copy = LRPlan(100, 0.5)
    copy.load_state_dict(json.loads(json.dumps(plan.state_dict())))
    assert [copy.factor(s) for s in range(51)] == [plan.factor(s) for s in range(51)]
    with pytest.raises(ValueError, match="horizon"):
        plan.replan(30, 30)


def test_time_budget_estimates_the_last_step_from_the_measured_pace():
    now = [100.0]
    budget = TimeBudget(1.0, 0, lambda: now[0])  # 60 s from t=100
    for step in range(1, 8):
        now[0] += 2.0  # 2 s per step
        budget.observe(step)
        if step < 7:
            assert budget.last_step(step) is None  # timed from step 2: 5 steps before an estimate
    assert budget.seconds_per_step(7) == pytest.approx(2.0)
    assert budget.last_step(7) == 7 + (60 - 14) // 2  # 46 s left at 2 s/step


def test_time_budget_keeps_time_for_the_last_validation_checkpoint_and_export():
    """12 s of the 46 s left go to the last step's validation (4 s), checkpoint (4 s) and export
    (about a checkpoint, 4 s): 34 s at 2 s/step."""
    now = [100.0]
    budget = TimeBudget(1.0, 0, lambda: now[0])
    for step in range(1, 8):
        now[0] += 2.0
        budget.observe(step)
    budget.timed("validation", 4.0)
    budget.timed("checkpoint", 4.0)
    assert budget.last_step(7) == 7 + (60 - 14 - 12) // 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fit_decays_the_lr_to_zero_within_the_budget(tmp_path, aligned_root, capsys, precision):
    """30 s at 1 s/step: timed from step 2, planned at step 7 to 30 steps, decay from step 15. Step k
    runs at factor(k - 1): 1 up to step 15, then (30 - (k - 1)) / 15; the run is complete at step 30
    with a checkpoint, and running it again trains no more."""
    trainer = budget_trainer(tmp_path, aligned_root, precision)
    trainer.fit()
    assert trainer.step == 30
    said = capsys.readouterr().out
    assert "the LR schedule is fitted to 30 steps (of train.max_steps=1000), decaying from step 15" in said
    assert "decay from step 15 to 0 at step 30" in said and "the run is complete" in said
    lrs = logged(tmp_path / "run", "train/lr/generator")
    expected = {k: 2e-4 * (1.0 if k <= 15 else (30 - (k - 1)) / 15) for k in range(1, 31)}
    assert lrs == pytest.approx(expected)
    assert logged(tmp_path / "run", "train/planned_steps") == {7: 30}
    assert "step_00000030" in {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}
    again = budget_trainer(tmp_path, aligned_root, precision)
    again.fit()
    assert again.step == 30 and "it is complete" in capsys.readouterr().out


def test_cut_keeps_max_steps_schedule_and_says_the_budget_will_cut_it(tmp_path, aligned_root, capsys):
    trainer = budget_trainer(tmp_path, aligned_root, **{"train.budget_schedule": "cut"})
    trainer.fit()
    assert trainer.step == 31  # the clock passes 30 s after step 31
    said = capsys.readouterr().out
    assert ("will stop this run near step 30 of train.max_steps=1000, so its LR decay (from step 500) "
            "will not run") in said
    assert set(logged(tmp_path / "run", "train/lr/generator").values()) == {2e-4}


def test_a_resumed_fitted_run_keeps_its_plan_and_replans_from_its_lr(tmp_path, aligned_root):
    """Interrupted at step 20 (checkpoint), resumed with a fresh 30 s budget: step 21 runs at the old
    plan's factor(20) = 10/15, then the new plan continues from there (no jump) to 0 in budget."""
    interrupt_at_20(tmp_path, aligned_root)
    again = budget_trainer(tmp_path, aligned_root)
    again.fit()
    lrs = logged(tmp_path / "run", "train/lr/generator")
    assert lrs[21] == pytest.approx(2e-4 * 10 / 15)
    assert again.lr_plan.knots[:2] == [(0, 1000), (7, 30)] and again.lr_plan.horizon == again.step
    later = [lrs[k] for k in range(21, again.step + 1)]
    assert all(a >= b for a, b in zip(later, later[1:])) and later[-1] < 2e-4 * 10 / 15 / 10


def test_a_fitted_run_resumed_with_cut_runs_on_to_max_steps(tmp_path, aligned_root, capsys):
    """budget_schedule=cut on resume: max_steps' schedule again, from the LR the plan had reached
    (factor(20) = 10/15), so the run is not held to the fitted horizon; its budget then cuts it."""
    interrupt_at_20(tmp_path, aligned_root)
    again = budget_trainer(tmp_path, aligned_root, **{"train.budget_schedule": "cut"})
    again.fit()
    assert again.lr_plan.knots[-1] == (20, 1000) and again.step > 30
    assert "train.budget_schedule=cut now: the LR decays from here to 0 at train.max_steps=1000" in (
        capsys.readouterr().out)
    lrs = logged(tmp_path / "run", "train/lr/generator")
    assert lrs[21] == pytest.approx(2e-4 * 10 / 15)
    assert lrs[22] == pytest.approx(2e-4 * 10 / 15 * (1000 - 21) / (1000 - 20))


def test_every_method_schedules_its_optimizers_by_the_run_plan(tmp_path):
    """One LR plan (and so one budget fit) for every optimizer of every method."""
    from kill_campaign import METHODS, PROCESSES, method_setup

    for method in METHODS:
        if method in PROCESSES:
            continue
        overrides = method_setup(method, tmp_path / method / "data", tmp_path / method / "run")
        cfg = config.load(None, overrides)
        trainer = TRAINERS[cfg.method](cfg)
        trainer.build_data()
        trainer.build()
        assert trainer.schedulers, method
        for name, sched in trainer.schedulers.items():
            assert sched.lr_lambdas == [trainer.lr_plan.factor], (method, name)
        trainer.lr_plan.replan(0, 4)  # what a budget fit does: every optimizer reaches LR 0 at step 4
        assert all(s.lr_lambdas[0](4) == 0 < s.lr_lambdas[0](3) for s in trainer.schedulers.values()), method
