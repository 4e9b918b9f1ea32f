"""Multi-node launching proven on one machine: 2 "machines" x 1 process over gloo on 127.0.0.1, started
as documented (docs/slurm_multinode.sh under a stand-in srun, docs/accelerate_multinode.yaml), killed
(one node SIGKILLed) and restarted; the result equals one process with the doubled batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, tiny_overrides

ACCELERATE = Path(sys.executable).with_name("accelerate")
SYNC = {"model.norm": "sync_batch", "model.d_norm": "sync_batch", "model.dropout": 0.0, "train.max_steps": 4,
        "train.ckpt_every": 2, "train.validate_every": 4, "train.batch_size": 2, "train.lr": 1e-3}
# srun's part in the SLURM template: one task per node, here all on this machine. NODE<i>_ENV adds
# environment variables to node i's task (a fault to inject); each task logs to $NODE_LOG_DIR/node<i>.log.
SRUN = """#!/bin/bash
while [[ "${1:-}" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
  extra="NODE${i}_ENV"
  SLURM_NODEID=$i SLURM_PROCID=$i env ${!extra:-} "$@" > "$NODE_LOG_DIR/node$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(**extra) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", WANDB_SILENT="true", **extra)


def slurm_job(tmp: Path, args: list[str], **node_faults: str) -> tuple[int, list[str]]:
    """docs/slurm_multinode.sh as sbatch would run it on 2 nodes (stand-in srun and scontrol);
    node_faults: {"NODE1_ENV": "GEN_FAULT=..."}. -> (exit code, each node's log)."""
    stubs, logs = tmp / "stubs", tmp / f"logs{len(list(tmp.glob('logs*')))}"
    stubs.mkdir(exist_ok=True)
    logs.mkdir()
    (stubs / "srun").write_text(SRUN)
    (stubs / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")  # `show hostnames`: the first node
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = node_env(PATH=f"{stubs}:{ACCELERATE.parent}:{os.environ['PATH']}", SLURM_NNODES="2",
                   SLURM_JOB_NODELIST="node[0-1]", SLURM_SUBMIT_DIR=str(ROOT), MAIN_PORT=str(free_port()),
                   NODE_LOG_DIR=str(logs), **node_faults)
    proc = subprocess.run(["bash", str(ROOT / "docs" / "slurm_multinode.sh"), *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, [(logs / f"node{i}.log").read_text() for i in (0, 1)]


def accelerate_nodes(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Both machines started with docs/accelerate_multinode.yaml, as its header says."""
    port, config_file = free_port(), ROOT / "docs" / "accelerate_multinode.yaml"
    procs = [subprocess.Popen([str(ACCELERATE), "launch", "--config_file", str(config_file), "--machine_rank",
                               str(rank), "--main_process_port", str(port), "train.py", *args],
                              cwd=ROOT, env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out) for p, out in zip(procs, outs)]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from trainers import checkpoint
    ckpt = checkpoint.checkpoint_dirs(run_dir / "checkpoints")[0]
    return {f"{p.stem}.{k}": v for p in (ckpt / "models").glob("*.safetensors")
            for k, v in load_file(str(p)).items()}


def test_two_machines_train_survive_a_killed_node_and_equal_one_process(tmp_path, aligned_root):
    """Node 0 (the main process, which writes the checkpoints) is SIGKILLed while writing step 4's
    checkpoint; node 1 stops at its next collective. Both restart with the same command and resume
    from step 2, the last whole checkpoint; the weights equal one process with batch 4."""
    from gen import config
    from trainers import Pix2PixTrainer, checkpoint

    args = tiny_overrides(tmp_path / "run", aligned_root, **SYNC)
    code, logs = slurm_job(tmp_path, args, NODE0_ENV="GEN_FAULT=during_checkpoint:4")
    assert code != 0, logs
    assert "2 process(es), 4 images per step" in logs[0]
    assert "SIGKILL" in logs[0] and "SIGKILL" not in logs[1]  # node 1 was not killed: it stopped
    assert [d.name for d in checkpoint.checkpoint_dirs(tmp_path / "run" / "checkpoints")] == ["step_00000002"]
    assert not (tmp_path / "run" / "export").exists()

    nodes = accelerate_nodes(args)
    assert [n.returncode for n in nodes] == [0, 0], nodes[0].stdout[-3000:] + nodes[1].stdout[-3000:]
    assert "resumed from" in nodes[0].stdout and "(step 2," in nodes[0].stdout
    assert (tmp_path / "run" / "export" / "generator" / "config.json").is_file()

    one = dict(SYNC, **{"train.batch_size": 4})
    Pix2PixTrainer(config.load(None, tiny_overrides(tmp_path / "one", aligned_root, **one))).fit()
    got, want = final_weights(tmp_path / "run"), final_weights(tmp_path / "one")
    assert got.keys() == want.keys()
    assert max((got[k].float() - want[k].float()).abs().max().item() for k in want) < 2e-5


def test_plain_accelerate_launcher_with_several_processes_is_flagged(monkeypatch):
    """`accelerate launch --cpu --num_processes 2` starts ONE process (its plain launcher sets
    MASTER_ADDR but no world size): the start line says so; a real 2-process launch says nothing."""
    from trainers.devices import one_process_launch_note
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert "--multi_gpu --num_processes N" in one_process_launch_note(1)
    assert one_process_launch_note(2) == ""
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: what was asked for
    assert one_process_launch_note(1) == ""
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` with one process
    assert one_process_launch_note(1) == ""


@pytest.mark.slow
@pytest.mark.parametrize("flags, processes", [(["--cpu"], 1), (["--multi_gpu"], 2)])
def test_accelerate_launch_process_count_on_the_cpu(tmp_path, aligned_root, flags, processes):
    """What docs/multi_gpu.md says of Accelerate 1.x: --cpu --num_processes 2 runs one process (and
    gen warns); --multi_gpu --num_processes 2 on a machine without GPUs runs two over gloo."""
    args = tiny_overrides(tmp_path / "run", aligned_root, **{"train.max_steps": 2, "data.val": "null"})
    proc = subprocess.run([str(ACCELERATE), "launch", *flags, "--num_processes", "2", "--main_process_port",
                           str(free_port()), "train.py", *args], cwd=ROOT, env=node_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"{processes} process(es)" in out
    assert ("WARNING: `accelerate launch` started ONE process" in out) == (processes == 1)
