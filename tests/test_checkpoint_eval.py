"""Scoring a run's kept checkpoints, not only its final export (trainers/snapshot.py, `sample.py
evaluate RUN --checkpoint STEP|all`): a checkpoint's export is the export the run would have written
at that step, so the best step and the final one are scored through the same inference path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_sample, run_train, tiny_overrides, write_aligned
from kill_campaign import method_setup
from gen.pipelines.base import export_differences
from trainers.snapshot import export_checkpoint, steps


def folder_bytes(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_same_export(got: Path, ref: Path) -> None:
    assert export_differences(got, ref) == []


# Every trainer's export, rebuilt from its last checkpoint, is its final export bit for bit: the
# generator EMA (pix2pix-augment-ema, cyclegan's pools beside), the DDPM EMAModel, bf16 (ddpm-edm).
@pytest.mark.parametrize("method", ["pix2pix-augment-ema", "cyclegan", "cut", "ddpm-edm", "colorization-gan"])
def test_last_checkpoint_exports_the_final_export(method, tmp_path):
    run = tmp_path / "run"
    run_train(*method_setup(method, tmp_path / "data", run))
    assert steps(run) == [6, 8]
    snapshot = export_checkpoint(run, 8, tmp_path / "snap" / "export")
    assert_same_export(snapshot, run / "export")
    assert list((tmp_path / "snap").iterdir()) == [snapshot]  # no temporary folder left beside it
    earlier = export_checkpoint(run, 6, tmp_path / "snap6" / "export")
    differences = export_differences(earlier, run / "export")
    assert differences and all(".safetensors: " in d for d in differences), \
        "step 6's export has step 8's weights, or differs in more than its weights"


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt_eval")
    run = tmp / "run"
    run_train(*method_setup("pix2pix-augment-ema", tmp / "data", run))
    return run


def test_evaluate_checkpoint_scores_like_the_final_export(pix2pix_run, tmp_path):
    final = run_sample("evaluate", pix2pix_run, "--split", "val", "--output", tmp_path / "final")
    assert final.returncode == 0, final.stderr
    last = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "8",
                      "--output", tmp_path / "step8")
    assert last.returncode == 0, last.stderr
    got = json.loads((tmp_path / "step8" / "metrics.json").read_text())
    ref = json.loads((tmp_path / "final" / "metrics.json").read_text())
    assert got == ref
    assert not (tmp_path / "step8" / "export").exists()  # scored from a temporary folder
    kept = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "8", "--keep-export",
                      "--output", tmp_path / "kept")
    assert kept.returncode == 0, kept.stderr
    assert_same_export(tmp_path / "kept" / "export", pix2pix_run / "export")  # kept, to sample it


def test_evaluate_every_kept_checkpoint(pix2pix_run, tmp_path):
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "all",
                      "--output", tmp_path / "all")
    assert proc.returncode == 0, proc.stderr
    folders = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert folders == ["step_00000006", "step_00000008"]
    six, eight = (json.loads((tmp_path / "all" / f / "metrics.json").read_text()) for f in folders)
    assert six["L1"] != eight["L1"]
    table = [line for line in proc.stdout.splitlines() if line.startswith(("| 6 |", "| 8 |"))]
    assert len(table) == 2 and f"{eight['L1']:.4g}" in table[1]
    again = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "all",
                       "--output", tmp_path / "all")
    assert again.returncode == 2 and "metrics.json" in again.stderr  # results are never overwritten


def test_default_output_of_a_checkpoint_is_named_by_its_step(tmp_path):
    run = tmp_path / "run"
    write = tmp_path / "data"
    write_aligned(write / "train", 4, seed=0)
    write_aligned(write / "val", 2, seed=1)
    run_train(*tiny_overrides(run, write, **{"train.max_steps": 4, "train.ckpt_every": 2}))
    proc = run_sample("evaluate", run, "--split", "val", "--checkpoint", "2")
    assert proc.returncode == 0, proc.stderr
    assert (run / "eval_val_step_00000002" / "metrics.json").is_file()


@pytest.mark.parametrize("value, words", [("5", ["no complete checkpoint at step 5", "[6, 8]"]),
                                           ("best", ["--checkpoint 'best'", "'all'"])])
def test_a_step_that_is_not_kept_is_named(pix2pix_run, tmp_path, value, words):
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", value,
                      "--output", tmp_path / "x")
    assert proc.returncode == 2
    for w in words:
        assert w in proc.stderr
    assert not (tmp_path / "x").exists()


def test_keep_export_never_replaces_the_runs_own_export(pix2pix_run, tmp_path):
    shutil.copytree(pix2pix_run / "export", tmp_path / "before")
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "6", "--keep-export",
                      "--output", pix2pix_run, "--overwrite")
    assert proc.returncode == 2 and "would replace the run's own export" in proc.stderr
    assert_same_export(pix2pix_run / "export", tmp_path / "before")
    assert not (pix2pix_run / "metrics.json").exists()
    (tmp_path / "o" / "export").mkdir(parents=True)  # an export already there: only with --overwrite
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "6", "--keep-export",
                      "--output", tmp_path / "o")
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_save_outputs_of_checkpoints_beside_a_final_evaluation(pix2pix_run, tmp_path):
    final = run_sample("evaluate", pix2pix_run, "--split", "val", "--save-outputs",
                       "--output", tmp_path / "f")
    assert final.returncode == 0, final.stderr
    (tmp_path / "all" / "step_00000008" / "outputs").mkdir(parents=True)
    (tmp_path / "all" / "step_00000008" / "outputs" / "x.png").write_bytes(b"")  # a folder in use
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "all", "--save-outputs",
                      "--output", tmp_path / "all")
    assert proc.returncode == 2 and "already holds files" in proc.stderr
    assert not (tmp_path / "all" / "step_00000006").exists()  # refused before step 6 was scored
    (tmp_path / "all" / "step_00000008" / "outputs" / "x.png").unlink()
    proc = run_sample("evaluate", pix2pix_run, "--split", "val", "--checkpoint", "8", "--save-outputs",
                      "--output", tmp_path / "s8")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "s8" / "outputs").iterdir()) == sorted(
        p.name for p in (tmp_path / "f" / "outputs").iterdir())


def test_moved_data_gone_init_source_and_a_gpu_precision(tmp_path):
    """A checkpoint is exported where plain evaluate works: data moved (given as data.root=...), the
    model.init_from source deleted (the checkpoint holds every weight), an fp16 (GPU) config on a CPU."""
    data, source = tmp_path / "data", tmp_path / "source"
    write_aligned(data / "train", 4, seed=0)
    write_aligned(data / "val", 2, seed=1)
    run_train(*tiny_overrides(source, data, **{"train.max_steps": 2, "train.ckpt_every": 2}))
    run = tmp_path / "run"
    run_train(*tiny_overrides(run, data, **{"train.max_steps": 4, "train.ckpt_every": 2,
                                            "model.init_from": source, "train.deterministic": "true"}))
    shutil.rmtree(source)
    moved = tmp_path / "moved"
    data.rename(moved)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("mixed_precision: fp32", "mixed_precision: fp16"))
    assert "mixed_precision: fp16" in cfg.read_text()
    torch.use_deterministic_algorithms(False)  # as a plain evaluate runs; the run's config says true
    rng, det = torch.get_rng_state(), torch.are_deterministic_algorithms_enabled()
    lines = []
    export_checkpoint(run, 4, tmp_path / "snap" / "export", [f"data.root={moved}"], say=lines.append)
    assert torch.equal(torch.get_rng_state(), rng) and torch.are_deterministic_algorithms_enabled() == det
    assert "is gone" in lines[0]
    assert_same_export(tmp_path / "snap" / "export", run / "export")
    proc = run_sample("evaluate", run, "--split", "val", "--checkpoint", "2", f"data.root={moved}")
    assert proc.returncode == 0, proc.stderr


def test_flags_a_checkpoint_does_not_read_are_refused_without_a_final_export(tmp_path):
    data = tmp_path / "data"
    write_aligned(data / "train", 4, seed=0)
    write_aligned(data / "val", 2, seed=1)
    run = tmp_path / "run"
    run_train(*tiny_overrides(run, data, **{"train.max_steps": 4, "train.ckpt_every": 2}))
    shutil.rmtree(run / "export")  # a run killed before its export
    proc = run_sample("evaluate", run, "--split", "val", "--checkpoint", "4", "--steps", "7")
    assert proc.returncode == 2 and "does not read --steps" in proc.stderr
    # with every checkpoint: refused after the first export, and --keep-export leaves none behind
    proc = run_sample("evaluate", run, "--split", "val", "--checkpoint", "all", "--steps", "7",
                      "--keep-export", "--output", tmp_path / "all")
    assert proc.returncode == 2 and "does not read --steps" in proc.stderr
    assert "exported" not in proc.stdout and not (tmp_path / "all").exists()
    # --keep-export --overwrite over a kept export: a refused command leaves that export as it was
    kept = tmp_path / "kept"
    assert run_sample("evaluate", run, "--split", "val", "--checkpoint", "2", "--keep-export",
                      "--output", kept).returncode == 0
    before = folder_bytes(kept / "export")
    proc = run_sample("evaluate", run, "--split", "val", "--checkpoint", "4", "--steps", "7", "--keep-export",
                      "--overwrite", "--output", kept)
    assert proc.returncode == 2 and "does not read --steps" in proc.stderr
    assert folder_bytes(kept / "export") == before
    assert run_sample("evaluate", run, "--split", "val", "--checkpoint", "4").returncode == 0


def test_export_differences_names_what_differs(tmp_path):
    from safetensors.torch import save_file
    a, b = tmp_path / "a", tmp_path / "b"
    for d, meta in ((a, '{"kind": "translation", "steps": 3}'), (b, '{"steps": 3, "kind": "translation"}')):
        (d / "generator").mkdir(parents=True)
        (d / "pipeline.json").write_text(meta)
        save_file({"w": torch.ones(2)}, str(d / "generator" / "model.safetensors"))
    assert export_differences(a, b) == []  # JSON compared by value, not key order
    save_file({"w": torch.ones(2, dtype=torch.bfloat16)}, str(b / "generator" / "model.safetensors"))
    assert export_differences(a, b) == ["generator/model.safetensors: w differs"]  # dtype counts
    nan = torch.tensor([float("nan"), 0.0])
    save_file({"w": nan}, str(a / "generator" / "model.safetensors"))
    save_file({"w": nan.clone()}, str(b / "generator" / "model.safetensors"))
    assert export_differences(a, b) == []  # bit for bit: the same NaN is the same
    save_file({"w": torch.tensor([float("nan"), -0.0])}, str(b / "generator" / "model.safetensors"))
    assert export_differences(a, b) == ["generator/model.safetensors: w differs"]  # -0.0 is not 0.0
    save_file({"w": nan}, str(b / "generator" / "model.safetensors"), metadata={"format": "pt"})
    assert export_differences(a, b) == ["generator/model.safetensors: metadata differs"]
    (b / "generator" / "model.safetensors").unlink()
    assert "generator/model.safetensors" in export_differences(a, b)[0]
