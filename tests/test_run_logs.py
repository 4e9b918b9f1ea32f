"""Logs and reports that survive (issue 24, kind 6): RUN_DIR/metrics.jsonl and the wandb history
after a real SIGKILL and a resume, the `sample.py metrics` command, and run / report folders that
still hold every file their offline wandb run names after being moved."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import ROOT, run_sample, tiny_overrides, write_aligned
from wandb_records import history, read_history, records, wait_finished

from gen.compare import Comparison, write_report
from gen.curves import LEGEND, PANEL_H, PANEL_W, read_metrics
from trainers import runlog
from trainers.wandb_report import log_comparison


def train(args: list[str], fault: str | None = None, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true", **env_extra)
    env.pop("GEN_FAULT", None)
    if fault:
        env["GEN_FAULT"] = fault
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A pix2pix run (log every step, checkpoint every 4) SIGKILLed after step 7, then resumed to
    step 8: {"run": its folder, "killed_rows": metrics.jsonl at the kill, "out": the resume's output}."""
    tmp = tmp_path_factory.mktemp("killed")
    write_aligned(tmp / "data" / "train", 8, seed=0)
    write_aligned(tmp / "data" / "val", 2, seed=1)
    extra = {"log.wandb": "offline", "train.max_steps": 8, "train.log_every": 1, "train.ckpt_every": 4,
             "train.validate_every": 3}
    args = tiny_overrides(tmp / "run", tmp / "data", **extra)
    # Launched as from a notebook or test runner that used wandb itself: its WANDB_SERVICE is inherited.
    # A run joining that service would leave the killed run's stream open there, and the resume would
    # fail with "run ID ... is in use"; train.py runs its own service.
    code = ("import os, time, wandb; wandb.setup(); print(os.environ['WANDB_SERVICE'], flush=True); "
            "time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true"))
    try:
        service = parent.stdout.readline().strip()
        assert service, "the stand-in parent's wandb service did not start"
        killed = train(args, fault="after_step:7", WANDB_SERVICE=service)
        assert killed.returncode == -9, killed.stderr[-2000:]
        rows = read_metrics(tmp / "run" / "metrics.jsonl")
        done = train(args, WANDB_SERVICE=service)
    finally:
        parent.kill()
        parent.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    wait_finished(sorted((tmp / "run").glob("wandb/offline-run-*"))[-1])  # the copies below read it whole
    return {"run": tmp / "run", "killed_rows": rows, "out": done.stdout + done.stderr}


def test_metrics_jsonl_keeps_every_step_once_after_kill_and_resume(killed_run):
    killed = killed_run["killed_rows"]
    assert [r["step"] for r in killed] == [1, 2, 3, 4, 5, 6]  # flushed as logged: on disk at the kill
    rows = read_metrics(killed_run["run"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # 5 and 6 dropped on resume, logged again once
    # Steps 1-4 kept; 5 and 6, logged again by the resumed run, equal the killed run's: one curve.
    assert rows[:6] == killed
    assert {"train/G_L1", "train/D", "train/lr/generator"} <= set(rows[0])
    assert {"val/L1", "val/PSNR", "train/G_L1"} <= set(rows[2])  # losses and validation: one line
    assert all(isinstance(v, float) and v > 0 for v in (r["train/G_L1"] for r in rows))


def test_wandb_history_after_resume_holds_every_step_before_the_checkpoint(killed_run):
    run_dir = killed_run["run"]
    segments = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(segments) == 2
    history_rows = read_history(run_dir)  # the union of both segments' transaction logs
    by_step: dict[int, dict] = {}
    for row in history_rows:
        by_step.setdefault(row["_step"], {}).update(row)
    rows = read_metrics(run_dir / "metrics.jsonl")  # what gen wrote: the values wandb must hold
    for row in rows:
        logged = by_step.get(row["step"], {})
        for key, value in row.items():
            if key != "step":
                assert logged.get(key) == value, (row["step"], key)
    assert {3, 6, 8} <= {s for s, row in by_step.items() if "samples/grid" in row}
    # How much of steps 1-4 the killed segment holds depends on when wandb's writer last flushed
    # before the kill (often nothing): the resume logs again exactly the steps it lacks, each once.
    killed: dict[int, set] = {}
    for row in (r for log in segments[0].glob("run-*.wandb") for r in history(log)):
        killed.setdefault(row["_step"], set()).update(row)
    wanted = {r["step"]: set(r) - {"step"} | ({"samples/grid"} if r["step"] == 3 else set()) for r in rows}
    lost = [s for s in range(1, 5) if not wanted[s] <= killed.get(s, set())]
    resumed = {r["_step"] for log in segments[1].glob("run-*.wandb") for r in history(log)}
    assert sorted(s for s in resumed if s <= 4) == lost
    if lost:
        assert f"wandb: logged again {len(lost)} step(s) up to step 4" in killed_run["out"]
    else:
        assert "logged again" not in killed_run["out"]
    assert f"wandb sync {run_dir}/wandb/offline-run-*" in killed_run["out"]  # every segment


def referenced_files(segment: Path) -> list[Path]:
    """Every file the offline run in `segment` names: its run files, media in history and summary,
    and artifact manifest entries (absolute local paths)."""
    found: list[Path] = []

    def media(value) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("path"), str) and "_type" in value:
                found.append(segment / "files" / value["path"])
            for name in value.get("filenames", []) if isinstance(value.get("filenames"), list) else []:
                found.append(segment / "files" / name)
            for v in value.values():
                media(v)

    for log in segment.glob("run-*.wandb"):
        for rec in records(log):
            kind = rec.WhichOneof("record_type")
            if kind == "files":
                found += [segment / "files" / f.path for f in rec.files.files]
            elif kind == "artifact":
                found += [Path(e.local_path) for e in rec.artifact.manifest.contents if e.local_path]
            elif kind in ("history", "summary"):
                items = rec.history.item if kind == "history" else rec.summary.update
                for item in items:
                    media(json.loads(item.value_json))
    return found


def assert_self_contained(folder: Path, tmp_path: Path) -> list[Path]:
    """Move `folder` elsewhere (copy, then delete the original): every file each of its offline
    wandb runs names must exist inside the copy. Returns the files named."""
    moved = tmp_path / "moved" / folder.name
    shutil.copytree(folder, moved, symlinks=True)
    shutil.rmtree(folder)
    named = []
    for segment in sorted(moved.glob("wandb/offline-run-*")):
        files = referenced_files(segment)
        inside = moved.resolve()
        missing = [str(p) for p in files if not p.is_file() or not p.resolve().is_relative_to(inside)]
        assert not missing, missing[:5]
        named += files
    return named


def test_moved_training_run_still_holds_every_file_its_wandb_runs_name(killed_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run["run"], run_dir, symlinks=True)  # the fixture's own folder stays
    named = assert_self_contained(run_dir, tmp_path)
    assert len(list((tmp_path / "moved" / "run").glob("wandb/offline-run-*"))) == 2
    assert any("media/images/samples/grid" in str(p) for p in named)
    assert any(p.name == "requirements.txt" for p in named)


def comparison() -> Comparison:
    g = torch.Generator().manual_seed(0)
    rows = [[torch.rand(3, 8, 8, generator=g) * 2 - 1 for _ in range(3)] for _ in range(2)]
    table = [{"run": "ground truth (real photos)", "method": "real", "PSNR": None},
             {"run": "p2p", "method": "pix2pix", "PSNR": 21.5, "LPIPS": "unavailable"}]
    return Comparison(["input", "ground truth", "p2p"], rows, table)


def test_moved_compare_report_syncs_whole(tmp_path):
    out = tmp_path / "report"
    result = comparison()
    write_report(result, out)
    log_comparison(result, out, "offline")
    history = read_history(out)
    logged = {k: v for row in history for k, v in row.items()}
    assert logged["comparison/columns/p2p"]["count"] == 2  # one image per input row
    assert "comparison/grid" in logged
    named = assert_self_contained(out, tmp_path)
    moved = tmp_path / "moved" / "report"
    files = next(moved.glob("wandb/offline-run-*/files"))
    cells = [p for p in named if "comparison/columns/" in str(p)]
    assert len(cells) == 6 and all(Image.open(p).size == (8, 8) for p in cells)  # 2 rows x 3 columns
    summary = {}
    for rec in records(next(files.parent.glob("run-*.wandb"))):
        if rec.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.summary.update})
    assert summary["comparison/p2p/PSNR"] == 21.5  # the numeric metrics, without an artifact
    assert "comparison/p2p/LPIPS" not in summary
    assert not (moved / "wandb" / "data").exists()  # offline: no artifact staged anywhere


def test_compare_tables_stage_their_files_inside_the_report(tmp_path):
    out = tmp_path / "report"
    result = comparison()
    write_report(result, out)
    run_files = log_comparison(result, out, "offline", tables=True)
    wait_finished(run_files.parent)
    staged = [Path(e.local_path) for log in run_files.parent.glob("run-*.wandb") for rec in _artifacts(log)
              for e in rec.manifest.contents]
    # Online the Tables upload from here at once; none goes to ~/.local/share/wandb.
    assert len(staged) >= 9 and all(p.is_file() and p.is_relative_to(out.resolve() / "wandb") for p in staged)
    assert "WANDB_DATA_DIR" not in os.environ or not os.environ["WANDB_DATA_DIR"].startswith(str(out))


def _artifacts(log: Path):
    for rec in records(log):
        if rec.WhichOneof("record_type") == "artifact":
            yield rec.artifact


def test_runlog_drops_lines_after_the_resumed_step_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "train/L1": s / 10}) + "\n" for s in range(1, 7))
                    + '{"step": 7, "train/L')  # killed mid-write
    log = runlog.RunLog(tmp_path, resume_step=4)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    log.log({"train/L1": torch.tensor(0.5), "train/n": 3, "img": Image.new("RGB", (2, 2))}, step=5)
    log.log({"val/L1": float("nan"), "val/note": "unavailable"}, step=5)  # same step: the same line
    log.log({"train/L1": 0.25}, step=6)
    log.close()
    rows = read_metrics(path)
    assert rows[4:] == [{"step": 5, "train/L1": 0.5, "train/n": 3, "val/L1": None, "val/note": "unavailable"},
                        {"step": 6, "train/L1": 0.25}]
    assert len(path.read_text().splitlines()) == 6  # one line per step


def test_runlog_of_another_process_writes_nothing(tmp_path):
    log = runlog.RunLog()  # what every process but the main one holds
    log.log({"train/L1": 1.0}, step=1)
    log.sync()
    log.close()
    assert list(tmp_path.iterdir()) == []


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_metrics_command_prints_and_plots_runs(tmp_path):
    write_metrics(tmp_path / "a", [{"step": s, "train/L1": 1 / s, "val/PSNR": 10.0 + s} for s in (1, 2, 3)])
    write_metrics(tmp_path / "b", [{"step": 2, "train/L1": 0.8}, {"step": 4, "train/L1": None},
                                   {"step": 6, "train/L1": 0.2}])
    png = tmp_path / "curves.png"
    proc = run_sample("metrics", tmp_path / "a", tmp_path / "b", "--keys", "train/*", "--output", png)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("train/L1") and " a " in line and "last 0.33333 (step 3)" in line
               for line in lines)
    assert any(" b " in line and "3 points, steps 2..6" in line and "min 0.2" in line for line in lines)
    assert not any("val/PSNR" in line for line in lines)
    image = Image.open(png).convert("RGB")
    assert image.size == (PANEL_W, LEGEND + PANEL_H)  # one metric: one panel
    colours = {c for _, c in image.getcolors(1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours  # a line per run
    again = run_sample("metrics", tmp_path / "a", "--output", png)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr


def test_metrics_command_errors_name_the_file_and_the_keys(tmp_path):
    write_metrics(tmp_path / "a", [{"step": 1, "train/L1": 0.5}])
    proc = run_sample("metrics", tmp_path / "a", "--keys", "val/*")
    assert proc.returncode == 2 and "--keys val/*" in proc.stderr and "train/L1" in proc.stderr
    proc = run_sample("metrics", tmp_path / "missing")
    assert proc.returncode == 2 and str(tmp_path / "missing" / "metrics.jsonl") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_replay_skips_what_an_earlier_segment_holds(tmp_path):
    write_metrics(tmp_path, [{"step": s, "train/L1": s / 10} for s in (1, 2, 3, 4, 5)])
    (tmp_path / "samples").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "samples" / "grid_00000002.png")
    present = {1: {"train/L1"}, 2: {"train/L1"}}
    lost = runlog.lost_rows(tmp_path, upto=4, present=present)
    assert sorted(lost) == [2, 3, 4] and lost[3] == {"train/L1": 0.3}
    assert lost[2] == {"samples/grid": tmp_path / "samples" / "grid_00000002.png"}
    assert not math.isnan(lost[4]["train/L1"])


def test_torn_grid_is_not_replayed(tmp_path):
    good, torn = tmp_path / "grid_00000002.png", tmp_path / "grid_00000003.png"
    Image.new("RGB", (4, 4), "red").save(good)
    torn.write_bytes(good.read_bytes()[:20])  # a kill mid-save
    assert runlog._image(torn) is None and runlog._image(good) is not None


def test_empty_wandb_id_left_by_a_kill_is_replaced(tmp_path, aligned_root):
    from gen import config
    from trainers import Pix2PixTrainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb_id.txt").write_text("")  # created, killed before the id was written
    overrides = tiny_overrides(run_dir, aligned_root, **{"log.wandb": "offline", "train.max_steps": 2,
                                                         "train.ckpt_every": 2, "train.validate_every": 2})
    Pix2PixTrainer(config.load(None, overrides)).fit()
    run_id = (run_dir / "wandb_id.txt").read_text()
    segments = [p.name.rsplit("-", 1)[-1] for p in run_dir.glob("wandb/offline-run-*")]
    assert len(run_id) == 8 and segments == [run_id]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [2]
    assert not list(run_dir.glob("*.tmp"))
