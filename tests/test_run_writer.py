"""One writer per run, and resume that counts samples (issue 24, kind 5)."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from gen import config
from gen.data import ResumableSampler
from trainers import Pix2PixTrainer
from trainers.runlock import RunDirLocked, RunLock
from conftest import ROOT, tiny_overrides


def hold_lock(run_dir):
    """A live process holding the run directory's lock, as a training run does."""
    code = ("import sys, time; sys.path.insert(0, %r); from trainers.runlock import RunLock; "
            "RunLock(%r).acquire(); print('held', flush=True); time.sleep(300)") % (str(ROOT), str(run_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(
        tmp_path, aligned_root, capsys):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        cfg = config.load(None, tiny_overrides(run, aligned_root))
        with pytest.raises(RunDirLocked, match=rf"run.dir {run} is in use: PID {holder.pid} on host \S+"):
            Pix2PixTrainer(cfg).fit()
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Pix2PixTrainer(cfg).fit()  # kill -9 freed the lock: the next run takes it over and says so
    out = capsys.readouterr().out
    assert f"taking over from PID {holder.pid}" in out
    assert RunLock(run).holder() == {}  # a finished run leaves no holder
    with RunLock(run):  # and the directory is free again
        pass


def test_train_cli_refuses_a_live_run_dir(tmp_path, aligned_root):
    """Two train.py on one run.dir: the second ends with exit 1 and the holder's PID, the first trains on."""
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true")
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"),
                              *tiny_overrides(run, aligned_root, **{"train.max_steps": 100000,
                                                                    "train.ckpt_every": 100000})],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while RunLock(run).holder().get("pid") != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        second = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_overrides(run, aligned_root)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"is in use: PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.wait()


def drawn(trainer, count):
    """Names of the next `count` training samples the trainer's loader yields."""
    names = []
    while len(names) < count:
        names += next(trainer.loader)["name"]
    return names[:count]


@pytest.mark.parametrize("before, after", [
    ({"train.batch_size": 1}, {"train.batch_size": 2}),
    ({"train.batch_size": 2}, {"train.batch_size": 1}),
    ({"train.batch_size": 1, "train.grad_accum": 1}, {"train.batch_size": 1, "train.grad_accum": 2}),
])
def test_resume_continues_at_the_samples_drawn_whatever_the_batch(tmp_path, aligned_root, before, after):
    """8 images; 3 steps at batch 1 (3 samples), then batch 2: epoch 0 must still draw every image once."""
    run = tmp_path / "run"
    first = {"train.max_steps": 3, "train.ckpt_every": 3, **before}
    Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **first))).fit()
    resumed = Pix2PixTrainer(config.load(None, tiny_overrides(run, aligned_root, **{"train.max_steps": 20,
                                                                                    **after})))
    resumed.setup()
    try:
        seen = 3 * before["train.batch_size"] * before.get("train.grad_accum", 1)
        assert resumed.samples_seen == seen
        stream = [g % 8 for g in itertools.islice(ResumableSampler(8, seed=0), 16)]
        files = resumed.train_set.files
        assert drawn(resumed, 16 - seen) == [files[i].name for i in stream[seen:]]  # names: under the split
        epoch0 = stream[:8]
        assert sorted(epoch0) == list(range(8))  # so every image is drawn once in epoch 0
    finally:
        resumed.release_run_dir()
